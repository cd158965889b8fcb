"""Online evaluation stores what the request log stores, and one tenant's sample never loses another's:
a NUL prompt is kept with U+FFFD (PostgreSQL refuses NUL), and a (tenant, model) group the store refuses
costs only its own items, counted. Real gateway over HTTP with tenant keys, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.evals.online import OnlineEvaluator
from opsgate.evals.online_sample import sample_of
from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult
from tests.evals.test_online import online_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway, wait_until

ADMIN = "bootstrap-admin-key-for-online-storage-0123456789"


@pytest.fixture()
def gateway(upstream: FakeUpstream, store_url: str) -> Iterator[tuple[Gateway, dict[str, str]]]:
    config = online_config(upstream.base_url)
    config["auth"] = {"enabled": True, "admin_key": ADMIN}
    config["record"] = {"store": store_url}  # a SQLite URL is replaced by a fresh file; PostgreSQL kept
    gw = start_gateway(config)
    keys = {}
    for tenant in ("a", "b"):
        made = httpx.post(
            gw.url + "/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"tenant": tenant, "role": "service"},
            timeout=30,
        )
        keys[tenant] = made.json()["secret"]
    yield gw, keys
    gw.server.stop()


def chat(gw: Gateway, key: str, text: str) -> int:
    body = {"model": "chat", "messages": [{"role": "user", "content": text}]}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=30).status_code


def items(store: EvalStore, run_id: str) -> list[dict[str, Any]]:
    return store.all_items(run_id) if store.get_run(ANY_TENANT, run_id) is not None else []


def test_a_nul_prompt_is_stored_as_the_request_log_stores_it(
    gateway: tuple[Gateway, dict[str, str]], upstream: FakeUpstream
) -> None:
    gw, keys = gateway
    evaluator = gw.app.state.gateway.online_eval
    store = EvalStore(gw.app.state.gateway.record_log.store)
    upstream.script = Script(content="The answer is 4.")
    assert chat(gw, keys["a"], "evil \x00 prompt") == 200
    assert chat(gw, keys["b"], "benign prompt") == 200
    assert wait_until(lambda: len(items(store, "online:b:chat")) == 1, timeout=60)
    assert wait_until(lambda: len(items(store, "online:a:chat")) == 1, timeout=60), evaluator.status()
    assert items(store, "online:a:chat")[0]["input"] == "evil \ufffd prompt"
    assert evaluator.counts["store_failed"] == 0 and evaluator.last_error is None


class _RefusesTenant:
    """The real EvalStore, except that writes of tenant ``refused`` fail (a store refusing one group)."""

    def __init__(self, store: EvalStore, refused: str) -> None:
        self._store, self._refused = store, refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def write_results(self, run_id: str, tenant: str | None, model: str, results: list[ItemResult]) -> None:
        if tenant == self._refused:
            raise RuntimeError("refused by the store")
        self._store.write_results(run_id, tenant, model, results)


def test_one_groups_failure_never_loses_the_other_groups(
    gateway: tuple[Gateway, dict[str, str]], upstream: FakeUpstream
) -> None:
    gw, keys = gateway
    evaluator: OnlineEvaluator = gw.app.state.gateway.online_eval
    real = EvalStore(gw.app.state.gateway.record_log.store)
    upstream.script = Script(content="The answer is 4.")
    # Real records of both tenants, taken as the sink got them (the gateway's own fan-out).
    for key, text in ((keys["a"], "first"), (keys["b"], "second"), (keys["b"], "third"), (keys["a"], "fourth")):
        assert chat(gw, key, text) == 200
    assert wait_until(lambda: len(items(real, "online:b:chat")) == 2, timeout=60)
    assert wait_until(lambda: len(items(real, "online:a:chat")) == 2, timeout=60)
    records = [r for r in gw.sink.records if r.get("endpoint") == "chat"][-4:]
    assert [r["tenant"] for r in records] == ["a", "b", "b", "a"]
    # One batch mixing the tenants, tenant a's group first: the store refuses it.
    evaluator._store = lambda: _RefusesTenant(real, "a")  # type: ignore[assignment, return-value]
    replayed = [sample_of({**r, "id": f"{r['id']}-again", "ts": time.time()}) for r in records]
    before = evaluator.counts["store_failed"]
    asyncio.run(evaluator.score_batch(replayed))  # the batch the task would take (scoring and storing in threads)
    assert {i["item_key"] for i in items(real, "online:b:chat")} >= {r.id for r in replayed[1:3]}
    assert evaluator.counts["store_failed"] - before == 2  # tenant a's two samples: lost, and counted
    assert evaluator.last_error is not None and "a:chat" in evaluator.last_error
