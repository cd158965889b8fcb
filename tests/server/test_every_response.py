"""Every ``/v1`` response says which deployment served it (``none`` when none did), and every
recorded request is counted in ``opsgate_requests_total`` — refused ones (401) included."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

ADMIN_KEY = "sk-admin-" + "e" * 32
CHAT = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture()
def guarded(upstream: FakeUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream.base_url)
    config["auth"] = {"enabled": True, "admin_key": ADMIN_KEY}
    gateway = start_gateway(config)
    yield gateway
    gateway.server.stop()


def post(gateway: Gateway, body: object, key: str | None = ADMIN_KEY) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(gateway.base_url + "/chat/completions", json=body, headers=headers, timeout=30)


def requests_total(gateway: Gateway, status: str) -> float:
    text = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "opsgate_requests_total" and sample.labels.get("status") == status
    )


def test_the_deployment_header_is_on_every_answer(guarded: Gateway, upstream: FakeUpstream) -> None:
    served = post(guarded, CHAT)
    assert served.status_code == 200 and served.headers["x-opsgate-deployment"] == "up#0"
    unknown = post(guarded, {**CHAT, "model": "nope"})
    assert unknown.status_code == 404 and unknown.headers["x-opsgate-deployment"] == "none"
    refused = post(guarded, CHAT, key=None)
    assert refused.status_code == 401 and refused.headers["x-opsgate-deployment"] == "none"
    invalid = post(guarded, {"model": "up"})
    assert invalid.status_code == 400 and invalid.headers["x-opsgate-deployment"] == "none"
    too_large = httpx.post(
        guarded.base_url + "/chat/completions",
        content=b"x" * (5 << 20),
        headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        timeout=30,
    )
    assert too_large.status_code == 413 and too_large.headers["x-opsgate-deployment"] == "none"
    upstream.script = Script(mode="status", status=500)
    failed = post(guarded, CHAT)
    # A failure names the deployment whose failure is answered.
    assert failed.status_code == 502 and failed.headers["x-opsgate-deployment"] == "up#0"


def test_refused_requests_are_counted_in_the_metrics(guarded: Gateway) -> None:
    before = requests_total(guarded, "401")
    for key in (None, "sk-wrong-" + "0" * 32):
        refused = post(guarded, CHAT, key=key)
        assert refused.status_code == 401
        (record,) = guarded.records_for(refused.headers["x-request-id"])
        assert record["status"] == 401
    models = httpx.get(guarded.base_url + "/models", timeout=30)
    assert models.status_code == 401
    (record,) = guarded.records_for(models.headers["x-request-id"])  # refused before any route: endpoint http
    assert (record["endpoint"], record["status"]) == ("http", 401)
    assert wait_until(lambda: requests_total(guarded, "401") == before + 3, timeout=30)
