"""The gateway builds the integrity monitor and gives it its audit sink (server/app.py, server/audit_sink.py).

Before, the model registry built the monitor, which opened a store of its own for every audit entry
and wrote the gateway's config_loaded entries too.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from opsgate.backends.registry import ModelRegistry
from opsgate.domain.config import parse_config
from opsgate.integrity.monitor import IntegrityMonitor
from opsgate.store import record_log as record_log_module
from tests.integrity.test_manifest import flip_byte
from tests.support import start_gateway, wait_until


class ListSink:
    """An audit sink that keeps what it is given."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, str | None, dict[str, Any]]] = []

    def append(self, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
        self.entries.append((actor, action, target, details))


def _minilm_config(model_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "models": [{"name": "emb", "deployments": [{"type": "sentence_embedding", "model_path": str(model_dir)}]}],
        "integrity": {"check_interval_seconds": 3600},
        **extra,
    }


def _copy_minilm(tmp_path: Path) -> Path:
    from opsgate.backends.minilm import default_minilm_dir

    model_dir = tmp_path / "minilm"
    shutil.copytree(default_minilm_dir(), model_dir)
    return model_dir


def test_a_refusal_goes_to_the_given_sink_and_no_store_is_opened(tmp_path: Path, monkeypatch: Any) -> None:
    model_dir = _copy_minilm(tmp_path)
    # A record store that cannot be opened: the monitor must not try (it has the sink).
    config = parse_config(_minilm_config(model_dir, record={"store": f"sqlite:///{tmp_path}/no/such/dir/x.db"}))
    opened: list[str] = []
    monkeypatch.setattr(record_log_module, "open_store", lambda url: opened.append(url))
    sink = ListSink()
    monitor = IntegrityMonitor(config, sink)
    registry = ModelRegistry(config, monitor)
    assert registry.integrity is monitor

    async def scenario() -> dict[str, list[dict[str, object]]]:
        await registry.start()
        try:
            await registry.wait_loaded()
            state = monitor.status("emb#0")
            assert state is not None and state["ok"] is True and state["reference"] == "first_load"
            flip_byte(model_dir / "model.safetensors", offset=100)
            return await monitor.check_now()
        finally:
            await registry.close()

    found = asyncio.run(scenario())
    assert list(found) == ["emb#0"]
    [(actor, action, target, details)] = sink.entries
    assert (actor, action, target) == ("opsgate-integrity", "model_integrity_failed", "emb#0")
    assert details["phase"] == "periodic" and "model.safetensors" in str(details["files"])
    assert opened == []  # before: one store opened per entry (and one for the config audit)


def test_the_gateway_gives_its_sink_to_every_generation_and_audits_its_config_once(tmp_path: Path) -> None:
    model_dir = _copy_minilm(tmp_path)
    config_path = tmp_path / "gateway.yaml"
    gateway = start_gateway(_minilm_config(model_dir))
    try:
        held = gateway.app.state.gateway
        assert held.audit is not None and held.registry.integrity.audit is held.audit

        def actions() -> list[str]:
            return [e["action"] for e in httpx.get(gateway.url + "/admin/audit").json()["data"]]

        # The start's config_loaded entry may land just after ready on a loaded machine (2 s wait).
        assert wait_until(lambda: actions() == ["config_loaded"], 60), actions()
        # A reload builds a new registry: its monitor is the gateway's, with the same sink.
        reloaded = _minilm_config(model_dir)
        reloaded["integrity"]["check_interval_seconds"] = 1800
        reloaded["record"] = held.config.record.model_dump(mode="json", exclude_none=True)
        config_path.write_text(yaml.safe_dump(reloaded))
        held_reloader = gateway.app.state.reloader
        held_reloader.path = str(config_path)
        answer = httpx.post(gateway.url + "/admin/config/reload", timeout=120)
        assert answer.status_code == 200, answer.text
        assert held.registry.integrity.audit is held.audit
        assert held.registry.integrity.settings.check_interval_seconds == 1800
        assert sorted(actions()) == ["config_loaded", "config_loaded", "config_reload"]
    finally:
        gateway.server.stop()
