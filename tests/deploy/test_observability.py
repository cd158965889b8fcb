"""The shipped Prometheus rules and Grafana dashboard against a running gateway, and a real Prometheus.

promtool checks and unit-tests the rules; every metric the dashboard and the rules query must be in
the gateway's ``/metrics`` after ordinary traffic; a real Prometheus (Debian's package) scrapes the
gateway, evaluates the rules, and fires the availability burn-rate alert on a burst of 5xx.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from opsgate.domain.config import parse_config
from opsgate.server.app import create_app
from tests.deploy.upstream import PacedUpstream
from tests.support import ServerThread, free_port, isolated, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/opsgate-rules.yaml"
RULE_TESTS = ROOT / "deploy/prometheus/opsgate-rules.test.yaml"
DASHBOARD = ROOT / "deploy/grafana/opsgate-dashboard.json"
_METRIC = re.compile(r"\b((?:opsgate|process)_[a-z0-9_]+)\b")
_RECORDED = re.compile(r"\b(opsgate:[a-z0-9_:]+)\b")
_MISSING = "Debian's prometheus package is not installed (apt-get install prometheus; .ci/run installs it)"


def needs(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary}: {_MISSING}")
    return path


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def rule_exprs() -> list[str]:
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]]


def exported_names(metrics_text: str) -> set[str]:
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in metrics_text.splitlines() if line and line[0] != "#"}


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServerThread]:
    """A gateway with chat, embeddings, a local model, cache, a blocking guard and a dead alias, after traffic."""
    upstream = PacedUpstream(free_port(), tag="obs").start()
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    dead = {"type": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m"}
    config = parse_config(
        {
            "models": [
                {"name": "up", "deployments": [deployment]},
                {"name": "emb", "kind": "embedding", "deployments": [deployment]},
                {"name": "dead", "deployments": [{**dead, "breaker": {"consecutive_failures": 1000}}]},
                # A local model (the bundled MiniLM): its files have digests, so the integrity gauge is there.
                {"name": "local", "deployments": [{"type": "sentence_embedding"}]},
            ],
            "cache": {"enabled": True},
            "guard": {
                "enabled": True,
                "policies": [
                    {"name": "p", "input": [{"scanner": "banned_terms", "terms": ["forbidden"], "action": "block"}]}
                ],
            },
        }
    )
    server = ServerThread(create_app(isolated(config))).start("/readyz", timeout=120)
    chat = server.url + "/v1/chat/completions"
    with httpx.Client(timeout=30) as client:
        body = {"model": "up", "messages": [{"role": "user", "content": "hello"}], "temperature": 0}
        assert client.post(chat, json=body).status_code == 200
        assert client.post(chat, json=body).headers["x-opsgate-cache"] == "hit"
        streamed = {**body, "stream": True, "messages": [{"role": "user", "content": "chunks=5"}]}
        assert client.post(chat, json=streamed).status_code == 200
        blocked = {**body, "messages": [{"role": "user", "content": "say forbidden"}]}
        assert client.post(chat, json=blocked).status_code == 400
        embedding = client.post(server.url + "/v1/embeddings", json={"model": "emb", "input": "x"})
        assert embedding.status_code == 200
        assert client.post(chat, json={**body, "model": "dead"}).status_code >= 500
    yield server
    server.stop()
    upstream.stop()


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = needs("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120)
    assert tests.returncode == 0, tests.stdout + tests.stderr


def test_every_metric_the_dashboard_and_rules_query_is_exported(gateway: ServerThread) -> None:
    exported = exported_names(httpx.get(gateway.url + "/metrics").text)
    exprs = dashboard_exprs() + rule_exprs()
    queried = {name for expr in exprs for name in _METRIC.findall(expr)}
    assert len(queried) > 20
    assert sorted(queried - exported) == []
    recorded = {str(rule["record"]) for group in rule_groups() for rule in group["rules"] if "record" in rule}
    assert {name for expr in exprs for name in _RECORDED.findall(expr)} <= recorded


def test_a_real_prometheus_scrapes_the_gateway_and_fires_the_burn_rate_alert(
    gateway: ServerThread, tmp_path: Path
) -> None:
    prometheus = needs("prometheus")
    target = gateway.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [{"job_name": "opsgate", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def query(expr: str) -> list[dict[str, Any]]:
        try:
            answer = httpx.get(api + "/query", params={"query": expr}, timeout=5).json()
        except (httpx.TransportError, ValueError):  # not up yet, or not ready to answer JSON
            return []
        result: list[dict[str, Any]] = answer.get("data", {}).get("result", [])
        return result

    def firing(name: str) -> bool:
        try:
            alerts = httpx.get(api + "/alerts", timeout=5).json()["data"]["alerts"]
        except (httpx.TransportError, ValueError, KeyError):
            return False
        return any(a["labels"]["alertname"] == name and a["state"] == "firing" for a in alerts)

    try:
        assert wait_until(lambda: [r["value"][1] for r in query('up{job="opsgate"}')] == ["1"], 60)
        # A burst of failures on the dead alias: 5xx well past 14.4x the 0.5% budget over 5m and 1h.
        body = {"model": "dead", "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 90
            while not firing("OpsgateAvailabilityBurnRateFast"):
                assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert client.post(gateway.url + "/v1/chat/completions", json=body).status_code >= 500
                time.sleep(0.2)
        ratio = query('opsgate:request_errors:ratio_rate5m{job="opsgate"}')
        assert ratio and float(ratio[0]["value"][1]) > 0.072
        rules = httpx.get(api + "/rules", timeout=5).json()["data"]["groups"]
        health = {rule["name"]: rule["health"] for group in rules for rule in group["rules"]}
        assert set(health.values()) == {"ok"}, health
        in_flight = query("opsgate:inference_in_flight:avg")
        assert in_flight and in_flight[0]["metric"]["job"] == "opsgate"
    finally:
        process.terminate()
        process.wait(30)
        log.close()
