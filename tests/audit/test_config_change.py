"""``config_loaded`` entries: written when the effective config changes, never holding a secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from opsgate.audit import list_entries, verify_chain
from opsgate.audit.config_change import changed_paths, record_config_loaded, redact
from opsgate.domain.config import parse_config
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore


def config(weight: float = 1.0, **extra: Any) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": "up",
                "deployments": [
                    {
                        "type": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "model": "m",
                        "api_key": "sk-live-SECRET-1",
                        "headers": {"X-Api-Token": "hdr-SECRET-2"},
                        "weight": weight,
                    }
                ],
            }
        ],
        "record": {"store": "postgresql://ops:pw-SECRET-3@db:5432/ops?password=qp-SECRET-4"},
        **extra,
    }


def test_logged_once_per_distinct_config_with_what_changed(store: SqlRecordStore) -> None:
    first = record_config_loaded(store, parse_config(config()), "opsgate@host")
    assert first is not None and first.details is not None
    assert first.details["before_sha256"] is None and first.details["changed_count"] > 10  # all new
    assert record_config_loaded(store, parse_config(config()), "opsgate@host") is None  # same config: nothing

    second = record_config_loaded(store, parse_config(config(weight=3.0)), "opsgate@other")
    assert second is not None and second.details is not None
    assert second.details["before_sha256"] == first.details["after_sha256"] != second.details["after_sha256"]
    assert second.details["changed"] == ["models[0].deployments[0].weight"]
    assert [e.action for e in list_entries(store, 10)] == ["config_loaded", "config_loaded"]
    assert verify_chain(store).ok


def test_secrets_are_redacted_before_hashing_and_storing(store: SqlRecordStore) -> None:
    entry = record_config_loaded(store, parse_config(config()), "opsgate@host")
    assert entry is not None
    stored = orjson.dumps(list_entries(store, 1)[0].to_dict()).decode()
    assert "SECRET" not in stored
    tree = entry.details["config"] if entry.details else {}
    deployment = tree["models"][0]["deployments"][0]
    assert deployment["api_key"] == "<redacted>" and deployment["headers"] == {"X-Api-Token": "<redacted>"}
    assert tree["record"]["store"] == "postgresql://ops:<redacted>@db:5432/ops?password=<redacted>"
    assert tree["limits"]["default_max_tokens"] == 1024  # "tokens" in a name does not make it a secret


def test_redact_and_diff_helpers() -> None:
    assert redact({"hf_token": "t", "max_tokens": 5, "keys": "k", "key_prefix": "p"}) == {
        "hf_token": "<redacted>",
        "max_tokens": 5,
        "keys": "<redacted>",
        "key_prefix": "p",
    }
    assert changed_paths({"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1, "c": [1, 3], "d": True}}) == ["a.c[1]", "a.d"]


_STARTER = """
import sys
from opsgate.audit.config_change import record_config_loaded
from opsgate.domain.config import parse_config
from opsgate.store.record_log import open_store
from opsgate.store.record_log import open_store
store = open_store(sys.argv[1])
config = parse_config({"models": [{"name": "m", "deployments": [{"type": "llama_cpp"}]}]})
print(record_config_loaded(store, config, "worker") is not None)
store.close()
"""


def test_workers_starting_together_log_the_config_once(store_url: str, tmp_path: Path) -> None:
    open_store(store_url).close()
    script = tmp_path / "start.py"
    script.write_text(_STARTER)
    workers = [
        subprocess.Popen([sys.executable, str(script), store_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err.decode()
        results.append(out.decode().strip())
    assert sorted(results) == ["False", "False", "False", "True"]
    store = open_store(store_url)
    try:
        assert [e.action for e in list_entries(store, 10)] == ["config_loaded"]
    finally:
        store.close()
