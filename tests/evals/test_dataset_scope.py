"""A dataset name resolves in the caller's own scope: a tenant's dataset named like the operator's shared
one never replaces it — not in the operator's API view, not in ``opsgate eval dataset export``, not in
``opsgate eval run`` (whose runs the release gate compares). Real HTTP with keys, both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from opsgate.cli.main import cli
from opsgate.domain.config import parse_config
from opsgate.evals.store import ANY_TENANT, EvalStore
from tests.evals.echo_upstream import EchoBehaviour, start_echo
from tests.support import Gateway, ServerThread

ADMIN = "bootstrap-admin-key-for-dataset-scope-0123456789"


@pytest.fixture()
def echo() -> Iterator[ServerThread]:
    server = start_echo(EchoBehaviour())
    yield server
    server.stop()


def call(gw: Gateway, method: str, path: str, key: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=60, **kwargs)


def test_a_tenants_dataset_never_replaces_the_shared_one_of_the_same_name(
    store_url: str, tmp_path: Path, echo: ServerThread
) -> None:
    deployment = {"type": "openai", "base_url": echo.url + "/v1", "model": "m", "breaker": {"enabled": False}}
    config: dict[str, Any] = {
        "auth": {"enabled": True, "admin_key": ADMIN},
        "models": [{"name": "good", "routing": {"retries": 0}, "deployments": [deployment]}],
        "record": {"store": store_url, "journal_dir": str(tmp_path / "journal")},
    }
    gw = Gateway(parse_config(config), keep_record_config=True)
    gw.server.start("/readyz")
    try:
        made = call(gw, "POST", "/admin/keys", ADMIN, json={"tenant": "a", "role": "admin"})
        tenant_key = made.json()["secret"]
        shared = call(
            gw, "POST", "/admin/evals/datasets", ADMIN, json={"name": "golden", "items": [{"prompt": "say: shared"}]}
        )
        assert shared.status_code == 201 and shared.json()["tenant"] is None
        for i in range(2):  # v1 and v2 of the tenant's own "golden": a higher version than the shared one
            body = {"name": "golden", "items": [{"prompt": f"say: TENANT ITEM {i}"}]}
            mine = call(gw, "POST", "/admin/evals/datasets", tenant_key, json=body)
            assert mine.status_code == 201 and mine.json()["tenant"] == "a"
        tenant_id = mine.json()["id"]

        # The operator's name is the shared dataset; the tenant's is its own; ids reach any (operator).
        for path in ("/admin/evals/datasets/golden", "/admin/evals/datasets/golden@1"):
            got = call(gw, "GET", path, ADMIN).json()
            assert (got["tenant"], got["version"], got["data"][0]["prompt"]) == (None, 1, "say: shared"), path
        assert "say: shared" in call(gw, "GET", "/admin/evals/datasets/golden/export", ADMIN).text
        assert call(gw, "GET", "/admin/evals/datasets/golden@2", ADMIN).status_code == 404
        got = call(gw, "GET", "/admin/evals/datasets/golden", tenant_key).json()
        assert (got["tenant"], got["version"]) == ("a", 2)
        assert call(gw, "GET", f"/admin/evals/datasets/{tenant_id}", ADMIN).json()["tenant"] == "a"
        assert call(gw, "GET", f"/admin/evals/datasets/{shared.json()['id']}", tenant_key).status_code == 404
    finally:
        gw.server.stop()

    # The CLI over the same store: export and run resolve the shared dataset unless --tenant says whose.
    cli_config = tmp_path / "config.yaml"
    cli_config.write_text(yaml.safe_dump({k: v for k, v in config.items() if k != "auth"}))
    runner = CliRunner()
    exported = runner.invoke(cli, ["eval", "dataset", "export", "golden", "--config", str(cli_config)])
    assert exported.exit_code == 0, exported.output
    assert "say: shared" in exported.stdout and "TENANT" not in exported.stdout
    exported = runner.invoke(cli, ["eval", "dataset", "export", "golden", "--tenant", "a", "--config", str(cli_config)])
    assert exported.exit_code == 0 and "TENANT ITEM 1" in exported.stdout
    ran = runner.invoke(cli, ["eval", "run", "golden", "-m", "good", "-s", "exact", "--config", str(cli_config)])
    assert ran.exit_code == 0, ran.output
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    try:
        store = EvalStore(opened)
        run = store.get_run(ANY_TENANT, ran.stdout.split()[0])
        assert run is not None and run["dataset_id"] == shared.json()["id"] and run["tenant"] is None
        assert [i["input"] for i in store.all_items(run["id"])] == ["say: shared"]
    finally:
        opened.close()
