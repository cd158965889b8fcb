"""The response cache and releases: an answer is reused only for a request the release routes the same way.

A probe found the cache keyed by the alias's whole deployment list: after activating a release that
routes to another deployment, a repeated prompt got the old model's answer (tagged with the new
release), and during a canary both arms were served whichever arm filled the entry first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.releases.store import ReleaseStore
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-cache-routes-0123456789"


@pytest.fixture(scope="module")
def new_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture()
def gateway(upstream: FakeUpstream, new_upstream: FakeUpstream) -> Iterator[Gateway]:
    upstream.script = Script(content="old answer")
    new_upstream.script = Script(content="new answer")
    new_upstream.requests.clear()

    def deployment(base_url: str, model: str) -> dict[str, Any]:
        return {"type": "openai", "base_url": base_url, "model": model, "breaker": {"enabled": False}}

    started = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "releases": {"poll_seconds": 0.2, "auto_rollback": {"enabled": False}},
            "cache": {"enabled": True},
            "models": [
                {
                    "name": "up",
                    "routing": {"retries": 0},
                    "deployments": [
                        deployment(upstream.base_url, "model-old"),
                        deployment(new_upstream.base_url, "model-new"),
                    ],
                }
            ],
        }
    )
    yield started
    started.server.stop()


def _admin(gateway: Gateway, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(gateway.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, json=body, timeout=30)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def _synced(gateway: Gateway) -> None:
    """Wait until the gateway's release cache has the store's latest change."""
    state = gateway.app.state.gateway
    clock = ReleaseStore(state.record_log.store).clock()
    assert wait_until(lambda: state.releases.clock >= clock, timeout=30)


def _ask(gateway: Gateway, question: str, user: str = "u") -> tuple[str, str, dict[str, Any]]:
    """(answer, x-opsgate-cache, the record's tags)."""
    body = {"model": "up", "messages": [{"role": "user", "content": question}], "user": user}
    response = httpx.post(
        gateway.base_url + "/chat/completions", headers={"Authorization": f"Bearer {ADMIN}"}, json=body, timeout=30
    )
    assert response.status_code == 200, response.text
    (record,) = gateway.records_for(response.headers["x-request-id"], timeout=30)
    return response.json()["choices"][0]["message"]["content"], response.headers["x-opsgate-cache"], record["tags"]


def test_an_activated_release_never_gets_the_previous_releases_cached_answer(gateway: Gateway) -> None:
    old = _admin(gateway, "/admin/releases", {"alias": "up", "deployments": {"up#0": 1}, "activate": True})
    new = _admin(gateway, "/admin/releases", {"alias": "up", "deployments": {"up#1": 1}})
    _synced(gateway)
    assert _ask(gateway, "What is 2+2?")[:2] == ("old answer", "miss")
    assert _ask(gateway, "What is 2+2?")[:2] == ("old answer", "hit")  # the same route still shares

    _admin(gateway, "/admin/releases/up/activate", {"release": new["id"]})
    _synced(gateway)
    answer, cache, tags = _ask(gateway, "What is 2+2?")
    assert tags["release"] == new["id"] and (answer, cache) == ("new answer", "miss")
    assert _ask(gateway, "What is 2+2?")[:2] == ("new answer", "hit")

    # Rolling back finds the old release's entries again: its route is what it was.
    _admin(gateway, "/admin/releases/up/activate", {"release": old["id"]})
    _synced(gateway)
    assert _ask(gateway, "What is 2+2?")[:2] == ("old answer", "hit")


def test_canary_arms_are_each_served_their_own_deployments_answer(gateway: Gateway) -> None:
    _admin(gateway, "/admin/releases", {"alias": "up", "deployments": {"up#1": 1}, "activate": True})
    old = _admin(gateway, "/admin/releases", {"alias": "up", "deployments": {"up#0": 1}})
    _admin(gateway, "/admin/releases/up/canary", {"release": old["id"], "weight": 50})
    _synced(gateway)
    expected = {"control": "new answer", "canary": "old answer"}
    served: Counter[tuple[str, str, str]] = Counter()
    for i in range(40):
        answer, cache, tags = _ask(gateway, "Name a colour.", user=f"user{i}")
        served[(tags["arm"], answer, cache)] += 1
        assert answer == expected[tags["arm"]], (i, tags, answer, cache)
    # Each arm filled its own entry once and was answered from it afterwards.
    for arm in ("control", "canary"):
        assert served[(arm, expected[arm], "miss")] == 1, served
        assert served[(arm, expected[arm], "hit")] >= 1, served
