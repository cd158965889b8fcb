"""Per-key limits with ``opsgate serve --workers 2`` and no shared counter store (auth/key_limits.py).

Each worker would count a key's limits in its own memory, silently admitting up to twice each limit.
So creating a key with limits is refused (400 naming ``limits``, pointing at ``limits.redis``), and a
start with keys that already carry limits warns, naming them. Tested against 2 real worker processes.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from opsgate.auth.key_limits import per_process_key_limits
from opsgate.auth.key_store import KeySpec, KeyStore
from opsgate.domain.config import parse_config
from opsgate.store.sqlite import SqliteRecordStore
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream
from tests.limits.support import REDIS_URL
from tests.support import serve_process

ADMIN = "sk-admin-key-limits-workers-0123456789"
START_SECONDS = 300.0  # two workers import and start on a (very) loaded machine


def test_the_rule_names_what_to_set() -> None:
    config = parse_config({"server": {"workers": 2}})
    problem = per_process_key_limits(config)
    assert problem is not None and "limits.redis" in problem and "2 workers" in problem
    assert per_process_key_limits(config, workers=1) is None
    shared = parse_config({"server": {"workers": 2}, "limits": {"redis": REDIS_URL}})
    assert per_process_key_limits(shared) is None


def test_two_workers_without_redis_refuse_keys_with_limits_and_warn_about_old_ones(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    store_url = f"sqlite:///{tmp_path}/requests.db"
    store = SqliteRecordStore(tmp_path / "requests.db")
    try:
        old = KeyStore(store).create(
            KeySpec(tenant="a", role="service", name="old", models=None, limits={"requests_per_minute": 5}), "test"
        )
    finally:
        store.close()
    config = upstream_config(upstream.base_url)
    config["auth"] = {"enabled": True, "admin_key": ADMIN}
    config["record"] = {"store": store_url, "journal_dir": str(tmp_path / "journal")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve.log"
    with serve_process(path, log, ["--workers", "2"], START_SECONDS) as (_, url):
        # Every worker says which keys are counted per process (each worker warns at its start).
        deadline = time.monotonic() + 60
        while log.read_text().count("carry their own limits") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert old.info.key_id in log.read_text() and "limits.redis" in log.read_text()

        headers = {"Authorization": f"Bearer {ADMIN}", "connection": "close"}
        for _ in range(6):  # fresh connections: both workers answer
            with httpx.Client(timeout=30) as client:
                refused = client.post(
                    url + "/admin/keys",
                    json={"tenant": "b", "role": "service", "limits": {"requests_per_minute": 10}},
                    headers=headers,
                )
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["param"] == "limits" and "limits.redis" in error["message"]
            assert "2 workers" in error["message"]
        with httpx.Client(timeout=30) as client:
            plain = client.post(url + "/admin/keys", json={"tenant": "b", "role": "service"}, headers=headers)
            empty = client.post(url + "/admin/keys", json={"tenant": "b", "limits": None}, headers=headers)
        assert plain.status_code == 201, plain.text
        assert empty.status_code == 201, empty.text


@pytest.mark.parametrize("redis", [True, False])
def test_one_worker_or_shared_counters_take_keys_with_limits(
    tmp_path: Path, upstream: FakeUpstream, redis: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support import start_gateway

    config = upstream_config(upstream.base_url)
    config["auth"] = {"enabled": True, "admin_key": ADMIN}
    if redis:  # what a worker of ``serve --workers 2`` with limits.redis sees
        config["limits"] = {"redis": REDIS_URL}
        monkeypatch.setenv("OPSGATE_WORKERS", "2")
    gateway = start_gateway(config)
    try:
        created = httpx.post(
            gateway.url + "/admin/keys",
            json={"tenant": "b", "limits": {"requests_per_minute": 10}},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        assert created.json()["limits"] == {"requests_per_minute": 10}
    finally:
        gateway.server.stop()
