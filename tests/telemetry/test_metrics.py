"""``/metrics`` scraped over real HTTP after real requests, parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opsgate.domain.telemetry_config import MetricsConfig
from opsgate.telemetry.metrics import LATENCY_BUCKETS, RequestMetrics, build_registry, exposition, request_families
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(gateway: Gateway) -> Samples:
    response = httpx.get(gateway.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and wanted <= ls]
    assert found, f"no {name} with {labels}"
    return sum(found)


@pytest.fixture(scope="module")
def metered(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    config = upstream_config(upstream_server.base_url, timeouts={"first_byte": 2, "total": 5})
    config["models"][0]["price"] = {"input_per_million": 1000.0, "output_per_million": 2000.0}
    gateway = start_gateway(config)
    yield gateway
    gateway.server.stop()


def test_requests_latency_tokens_cost_and_state(metered: Gateway, upstream: FakeUpstream) -> None:
    before = scrape(metered)
    assert value(before, "opsgate_deployment_breaker_state", alias="up", state="closed") == 1.0
    client = openai.OpenAI(base_url=metered.base_url, api_key="sk-test", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": "hi"}])
    stream = client.chat.completions.create(model="up", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert len([c for c in stream if c.choices]) == 6
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="up", messages=[])
    upstream.script = Script(mode="status", status=500, body={"error": {"message": "down"}})
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": "hi"}])

    after = scrape(metered)
    ok = {"endpoint": "chat", "model": "up", "status": "200", "tenant": "none"}
    assert value(after, "opsgate_requests_total", **ok) == 4
    # A client's made-up model name never becomes a label of its own.
    assert value(after, "opsgate_requests_total", model="unknown", status="404", deployment="none") == 1
    assert value(after, "opsgate_requests_total", status="400") == 1  # unparsed body: model unknown
    assert value(after, "opsgate_requests_total", model="up", status="502") == 1
    assert not [k for k in after if ("model", "no-such-model") in k[1]]

    assert value(after, "opsgate_request_duration_seconds_count", model="up", status_class="2xx") == 4
    assert value(after, "opsgate_request_duration_seconds_count", model="up", status_class="5xx") == 1
    assert value(after, "opsgate_request_duration_seconds_bucket", model="up", status_class="2xx", le="+Inf") == 4
    assert value(after, "opsgate_request_duration_seconds_sum", model="up", status_class="2xx") > 0
    buckets = {ls for (n, ls) in after if n == "opsgate_request_duration_seconds_bucket"}
    assert len({dict(ls)["le"] for ls in buckets}) == len(LATENCY_BUCKETS) + 1
    assert value(after, "opsgate_time_to_first_token_seconds_count", model="up") == 1
    assert value(after, "opsgate_time_per_output_token_seconds_count", model="up") == 1

    assert value(after, "opsgate_tokens_total", model="up", type="input") == 4 * 7
    assert value(after, "opsgate_tokens_total", model="up", type="output") == 4 * 5
    expected_cost = 4 * (7 * 1000.0 + 5 * 2000.0) / 1_000_000
    assert value(after, "opsgate_cost_total", model="up") == pytest.approx(expected_cost)
    assert value(after, "opsgate_cache_hits_total", model="up") == 0

    # Read from the live state at scrape time.
    assert value(after, "opsgate_deployment_in_flight", alias="up") == 0
    assert value(after, "opsgate_deployment_queue_waiting", alias="up") == 0
    assert value(after, "opsgate_deployment_calls_total", alias="up") >= 5
    assert value(after, "opsgate_deployment_failures_total", alias="up") >= 1
    assert value(after, "opsgate_record_writer_healthy") == 1
    assert ("opsgate_record_journal_pending_bytes", frozenset()) in after
    assert value(after, "process_cpu_seconds_total") > 0


def test_openmetrics_when_asked(metered: Gateway) -> None:
    response = httpx.get(metered.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_tenant_label_is_capped() -> None:
    metrics = RequestMetrics(MetricsConfig(max_tenants=2), ["m"])
    for tenant in ["a", "b", "c", "d", "a", None]:
        metrics.write(record(tenant=tenant))
    samples = parse(
        exposition(build_registry(lambda: request_families(metrics.series, metrics.guard)), None)[0].decode()
    )
    tenants = {dict(ls)["tenant"]: v for (n, ls), v in samples.items() if n == "opsgate_requests_total"}
    assert tenants == {"a": 2, "b": 1, "other": 2, "none": 1}


def test_guard_verdicts_and_odd_statuses() -> None:
    metrics = RequestMetrics(MetricsConfig(), ["m"])
    guard = [
        {"scanner": "pii", "verdict": "flagged", "action": "redact"},
        {"scanner": "injection", "verdict": "pass", "action": "none"},
    ]
    metrics.write(record(tags={"guard": {"policy": "default", "input": guard[:1], "output": guard[1:]}}))
    metrics.write(record(status=418, tags={"guard": {"input": guard[:1]}, "saved_cost": 0.5}, cached=True))
    samples = parse(
        exposition(build_registry(lambda: request_families(metrics.series, metrics.guard)), None)[0].decode()
    )
    assert value(samples, "opsgate_guard_verdicts_total", scanner="pii", verdict="flagged", action="redact") == 2
    assert value(samples, "opsgate_guard_verdicts_total", scanner="injection") == 1
    assert value(samples, "opsgate_requests_total", status="4xx") == 1  # 418 is not in the known set
    assert value(samples, "opsgate_cache_hits_total", model="m") == 1
    assert value(samples, "opsgate_cache_saved_cost_total", model="m") == 0.5


def record(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "endpoint": "chat",
        "model": "m",
        "deployment": "d",
        "status": 200,
        "tenant": None,
        "latency_ms": 12.0,
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "cost": None,
        "cached": False,
        "tags": None,
    }
    return base | overrides


def test_workers_share_counts_through_snapshots(upstream_server: FakeUpstream) -> None:
    upstream_server.script = Script()
    directory = tempfile.mkdtemp(prefix="opsgate-metrics-")
    other = RequestMetrics(MetricsConfig(), ["up"])
    for _ in range(5):
        other.write(record(model="up", deployment="up[0]", prompt_tokens=10))
    # A worker that is not this process left its snapshot (as it does every second).
    with open(os.path.join(directory, "999999.json"), "w") as handle:
        json.dump(other.snapshot(), handle)
    config = upstream_config(upstream_server.base_url)
    config["telemetry"] = {"metrics": {"multiprocess_dir": directory}}
    gateway = start_gateway(config)
    try:
        response = httpx.post(
            gateway.base_url + "/chat/completions", json={"model": "up", "messages": [{"role": "user", "content": "x"}]}
        )
        assert response.status_code == 200
        samples = scrape(gateway)
        assert value(samples, "opsgate_requests_total", model="up", status="200") == 6
        assert value(samples, "opsgate_tokens_total", model="up", type="input") == 5 * 10 + 7
    finally:
        gateway.server.stop()
    # On stop the worker leaves its own last snapshot for the others; 999999 is no live process, so its
    # snapshot was marked dead at start (still counted above).
    (own,) = [name for name in os.listdir(directory) if "999999" not in name]
    assert own == f"{os.getpid()}.json"


def test_metrics_off(upstream_server: FakeUpstream) -> None:
    config = upstream_config(upstream_server.base_url)
    config["telemetry"] = {"metrics": {"enabled": False}}
    gateway = start_gateway(config)
    try:
        response = httpx.get(gateway.url + "/metrics")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    finally:
        gateway.server.stop()
