"""A shadow call costs what the record would charge for the deployment that served it (the gateway's PriceBook).

Before, the shadow mirror priced by the alias (``{alias.name: alias.price}``): with a deployment
that has its own price, the shadow run's cost said 1/100th of what that deployment charges.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from opsgate.evals.store import EvalStore
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "sk-admin-shadow-pricing-0123456789"


@pytest.fixture()
def candidate_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    server.script = Script(content="candidate answer")
    yield server
    server.stop()


@pytest.fixture()
def gateway(upstream: FakeUpstream, candidate_upstream: FakeUpstream) -> Iterator[Gateway]:
    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "releases": {"poll_seconds": 0.2, "auto_rollback": {"enabled": False}},
            "models": [
                {
                    "name": "up",
                    "price": {"input_per_million": 1.0, "output_per_million": 1.0},
                    "deployments": [
                        {"type": "openai", "base_url": upstream.base_url, "model": "stable"},
                        {
                            "type": "openai",
                            "base_url": candidate_upstream.base_url,
                            "model": "candidate",
                            "price": {"input_per_million": 100.0, "output_per_million": 300.0},
                        },
                    ],
                }
            ],
        }
    )
    yield started
    started.server.stop()


def call(gateway: Gateway, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(method, gateway.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30, **kwargs)


def test_shadow_cost_is_the_serving_deployments_price(gateway: Gateway, candidate_upstream: FakeUpstream) -> None:
    releases = []
    for deployments in ({"up#0": 1}, {"up#1": 1}):
        created = call(gateway, "POST", "/admin/releases", json={"alias": "up", "deployments": deployments})
        assert created.status_code == 201, created.text
        releases.append(created.json()["id"])
    assert call(gateway, "POST", "/admin/releases/up/activate", json={"release": releases[0]}).status_code == 200
    started = call(
        gateway,
        "POST",
        "/admin/experiments",
        json={
            "alias": "up",
            "arms": [
                {"arm": "control", "release": releases[0], "weight": 100},
                {"arm": "shadow", "release": releases[1], "weight": 100},
            ],
        },
    )
    assert started.status_code == 201, started.text
    held = gateway.app.state.gateway
    run_id = f"shadow:{started.json()['experiment']}:-"
    evals = EvalStore(held.record_log.store)

    def shadowed() -> bool:
        # The cache polls the store: chat until the experiment is live and a shadow item is stored.
        body = {"model": "up", "messages": [{"role": "user", "content": "price me"}], "user": "u1"}
        assert call(gateway, "POST", "/v1/chat/completions", json=body).status_code == 200
        return bool(evals.all_items(run_id))

    assert wait_until(shadowed, timeout=60)
    item = evals.all_items(run_id)[0]
    assert item["output"] == "candidate answer"
    usage = {"prompt_tokens": item["prompt_tokens"], "completion_tokens": item["completion_tokens"]}
    assert usage["prompt_tokens"] and usage["completion_tokens"]
    # What the record charges for a request up#1 served: the deployment's own price, not the alias's.
    expected = held.prices.cost("up", "up#1", usage)
    assert expected == pytest.approx((usage["prompt_tokens"] * 100.0 + usage["completion_tokens"] * 300.0) / 1e6)
    assert item["cost"] == pytest.approx(expected)  # before: priced at the alias's 1.0/1.0, 1/100th or less
    assert item["cost"] != pytest.approx(held.prices.cost("up", "up#0", usage))
