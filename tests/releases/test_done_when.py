"""Issue 14's "done when": a prompt version change rolled out as a 10% canary on the embedded model,
measured, promoted and rolled back from the CLI, every step audited (and the chain intact)."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from opsgate.audit.chain import verify_chain
from opsgate.domain.config import parse_config
from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import open_store
from tests.support import Gateway, wait_until

OPSGATE = [sys.executable, "-m", "opsgate.cli.main"]


def _cli(config: Path, *args: str) -> str:
    result = subprocess.run(
        [*OPSGATE, *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
        cwd=config.parent,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def test_prompt_change_as_a_10_percent_canary_on_the_embedded_model(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "models": [{"name": "smollm2", "deployments": [{"type": "llama_cpp", "n_ctx": 1024}]}],
        "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"},
        "releases": {"poll_seconds": 0.2, "auto_rollback": {"enabled": False}},
    }
    config = tmp_path / "opsgate.yaml"
    config.write_text(yaml.safe_dump(data))
    gateway = Gateway(parse_config(data), keep_record_config=True)
    gateway.server.start("/readyz", timeout=180)
    inner = gateway.app.state.gateway
    try:
        _cli(config, "prompts", "create", "greeter", "--system", "You answer in one word.", "--label", "production")
        _cli(config, "prompts", "create", "greeter", "--system", "You answer in one short sentence.")
        diff = _cli(config, "prompts", "diff", "greeter", "1", "2")
        assert "-You answer in one word." in diff and "+You answer in one short sentence." in diff
        _cli(config, "release", "create", "smollm2", "--prompt", "greeter@1", "--param", "max_tokens=4", "--activate")
        _cli(config, "release", "create", "smollm2", "--prompt", "greeter@2", "--param", "max_tokens=4")
        _cli(config, "release", "canary", "smollm2", "--weight", "10")  # the newest release that is not active

        def in_cache(arms: int) -> bool:
            resolved = inner.releases.aliases.get("smollm2")
            return resolved is not None and len(resolved.arms) == arms

        assert wait_until(lambda: in_cache(2), timeout=20)
        versions: dict[str, int] = {}
        for n in range(60):
            body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "user": f"user-{n}"}
            response = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            tags = gateway.records_for(response.headers["x-request-id"])[0]["tags"]
            versions[f"user-{n}"] = tags["prompt_version"]
            assert (tags["arm"] == "canary") == (tags["prompt_version"] == 2)
        canary_users = [u for u, v in versions.items() if v == 2]
        assert 1 <= len(canary_users) <= 15, versions  # ~10% of 60, sticky per user
        assert inner.record_log.writer.flush()
        experiment = ReleaseStore(inner.record_log.store).state("smollm2")
        assert experiment is not None and experiment.experiment is not None
        status = orjson.loads(_cli(config, "experiment", "status", experiment.experiment, "--json"))
        assert status["arms"]["canary"]["requests"] == len(canary_users)
        assert status["arms"]["control"]["requests"] == 60 - len(canary_users)
        assert status["arms"]["control"]["latency_ms"]["p50"] > 0 and status["verdict"]
        table = _cli(config, "experiment", "status", experiment.experiment)
        assert "canary" in table and "control" in table

        _cli(config, "release", "promote", "smollm2")
        assert wait_until(lambda: in_cache(1), timeout=20)
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "user": "user-0"}
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=120)
        assert gateway.records_for(response.headers["x-request-id"])[0]["tags"]["prompt_version"] == 2

        clock = ReleaseStore(inner.record_log.store).clock()
        _cli(config, "release", "rollback", "smollm2", "--reason", "longer answers cost more")
        assert wait_until(lambda: inner.releases.clock > clock, timeout=20)
        response = httpx.post(gateway.base_url + "/chat/completions", json=body, timeout=120)
        assert gateway.records_for(response.headers["x-request-id"])[0]["tags"]["prompt_version"] == 1

        history = orjson.loads(_cli(config, "release", "history", "smollm2", "--json"))["history"]
        assert [h["action"] for h in history] == ["rolled_back", "promoted", "canary_started", "created", "activated",
                                                  "created"]  # fmt: skip
        store = open_store(data["record"]["store"])
        try:
            with store.connection() as conn:
                rows = store.execute(conn, "SELECT actor, action FROM audit_log ORDER BY seq").fetchall()
            actor = f"cli:{getpass.getuser()}"
            audited = [action for who, action in rows if who == actor]
            for action in (
                "prompt_created",
                "prompt_label_moved",
                "release_created",
                "release_activated",
                "release_canary_started",
                "release_promoted",
                "release_rolled_back",
            ):
                assert action in audited, (action, audited)
            assert verify_chain(store).ok
        finally:
            store.close()
    finally:
        gateway.server.stop()
