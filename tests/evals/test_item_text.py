"""Sealed item text is read back in clear by those allowed to read it, and only by them.

Shadow items are stored under ``record.encryption`` as the request log's ciphertext (268a15c); before,
``GET /admin/evals/runs/{run}/items`` and ``/ui/evals/runs/{run}`` showed ``enc:v1:…`` to everyone
allowed to read the run. Now both open it with the request log's cipher; a value whose key is not
configured reads null with ``sealed`` naming it (the page: a marker), never a 500 or the ciphertext.
Real gateway over HTTP with tenant keys, SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.evals.item_text import open_items
from opsgate.evals.runner import run_pairwise
from opsgate.evals.scoring import Score
from opsgate.evals.store import ANY_TENANT, EvalStore, ItemResult
from opsgate.releases.shadow import ItemPayloads
from opsgate.store.crypto import PayloadCipher, parse_keys
from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway

ADMIN = "bootstrap-admin-key-for-item-text-0123456789"
KEY = "k1:" + base64.b64encode(bytes(range(32))).decode()
OLD_KEY = "k0:" + base64.b64encode(bytes(range(1, 33))).decode()  # rotated out: not in the config
SECRET = "my passport number is X1234567"
ANSWER = "noted, X1234567 is on file"
RUN = "shadow:exp_1:a"


@pytest.fixture()
def gateway(upstream: FakeUpstream, store_url: str) -> Iterator[tuple[Gateway, dict[str, str]]]:
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    gw = start_gateway(
        {
            "auth": {"enabled": True, "admin_key": ADMIN},
            "models": [{"name": "alpha", "deployments": [deployment]}],
            "record": {"store": store_url, "encryption": {"enabled": True, "keys": KEY}},
        }
    )
    keys = {}
    for name, tenant, role in [("a-admin", "a", "admin"), ("b-admin", "b", "admin")]:
        made = httpx.post(
            gw.url + "/admin/keys",
            headers={"Authorization": f"Bearer {ADMIN}"},
            json={"tenant": tenant, "role": role},
            timeout=30,
        )
        keys[name] = made.json()["secret"]
    yield gw, keys
    gw.server.stop()


def call(gw: Gateway, path: str, key: str) -> httpx.Response:
    return httpx.get(gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def shadow_item(payloads: ItemPayloads, key: str, prompt: str, answer: str) -> ItemResult:
    """A shadow item as ``ShadowMirror._store`` makes it (text through the same ``ItemPayloads.keep``)."""
    return ItemResult(
        item_key=key,
        idx=None,
        status="ok",
        input=payloads.keep("input", prompt, RUN, key),
        output=payloads.keep("output", answer, RUN, key),
        request_id=key,
    )


def store_items(gw: Gateway) -> EvalStore:
    record_log = gw.app.state.gateway.record_log
    evals = EvalStore(record_log.store)
    evals.create_run("a", "alpha", kind="shadow", run_id=RUN, arm="shadow")
    payloads = ItemPayloads.of(record_log)  # the gateway's own policy: its request log's cipher
    rotated = ItemPayloads(cipher=PayloadCipher(parse_keys(OLD_KEY)), clear_fields=frozenset())
    evals.write_results(
        RUN,
        "a",
        "alpha",
        [
            shadow_item(payloads, "req-1", SECRET, ANSWER),
            shadow_item(rotated, "req-2", "sealed under k0 " + SECRET, "old answer"),
        ],
    )
    return evals


def raw_items(evals: EvalStore) -> str:
    with evals.store.connection() as conn:
        return str(evals.store.execute(conn, "SELECT input, output FROM eval_items").fetchall())


def test_api_and_page_show_plaintext_to_the_tenant_and_nothing_to_another(
    gateway: tuple[Gateway, dict[str, str]],
) -> None:
    gw, keys = gateway
    evals = store_items(gw)
    # The database holds ciphertext only.
    raw = raw_items(evals)
    assert "X1234567" not in raw and raw.count("enc:v1:k1:") == 2 and raw.count("enc:v1:k0:") == 2

    page = call(gw, f"/admin/evals/runs/{RUN}/items", keys["a-admin"])
    assert page.status_code == 200, page.text
    by_key = {item["item_key"]: item for item in page.json()["data"]}
    assert by_key["req-1"]["input"] == SECRET and by_key["req-1"]["output"] == ANSWER
    assert by_key["req-1"]["sealed"] == {}
    # Its key rotated out: null and a marker naming the key, not a 500 and not the ciphertext.
    assert by_key["req-2"]["input"] is None and by_key["req-2"]["output"] is None
    assert by_key["req-2"]["sealed"] == {"input": "k0", "output": "k0"}
    assert "enc:v1:" not in page.text
    # The operator reads it too.
    assert call(gw, f"/admin/evals/runs/{RUN}/items", ADMIN).json()["data"][0]["input"] == SECRET

    ui = call(gw, f"/ui/evals/runs/{RUN}", keys["a-admin"])
    assert ui.status_code == 200, ui.text[:300]
    assert SECRET in ui.text and ANSWER in ui.text and "enc:v1:" not in ui.text
    assert "[sealed: key &#39;k0&#39; is not configured here]" in ui.text

    # Another tenant: the run does not exist for it, on either surface.
    other = call(gw, f"/admin/evals/runs/{RUN}/items", keys["b-admin"])
    assert other.status_code == 404 and "X1234567" not in other.text
    other_ui = call(gw, f"/ui/evals/runs/{RUN}", keys["b-admin"])
    assert other_ui.status_code == 404 and "X1234567" not in other_ui.text


def test_metadata_only_text_stays_absent(store: Any) -> None:
    evals = EvalStore(store)
    evals.create_run("a", "alpha", kind="shadow", run_id=RUN)
    policy = ItemPayloads(metadata_only=True, cipher=PayloadCipher(parse_keys(KEY)), clear_fields=frozenset())
    evals.write_results(RUN, "a", "alpha", [shadow_item(policy, "req-1", SECRET, ANSWER)])
    [item] = open_items(evals.all_items(RUN), policy)
    assert item["input"] is None and item["output"] is None and item["sealed"] == {}


class _Judge:
    """A pairwise judge that remembers what it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    async def compare(self, request: str, baseline: str, candidate: str) -> Score:
        self.seen.append((request, baseline, candidate))
        return Score(1.0, True, {})


def test_a_judge_reads_opened_text_and_never_ciphertext(store: Any) -> None:
    evals = EvalStore(store)
    payloads = ItemPayloads(cipher=PayloadCipher(parse_keys(KEY)), clear_fields=frozenset())
    rotated = ItemPayloads(cipher=PayloadCipher(parse_keys(OLD_KEY)), clear_fields=frozenset())
    for run in ("shadow:base:a", RUN):
        evals.create_run("a", "alpha", kind="shadow", run_id=run)
    evals.write_results("shadow:base:a", "a", "alpha", [ItemResult(k, None, "ok", "p", "base") for k in ("r1", "r2")])
    evals.write_results(
        RUN, "a", "alpha", [shadow_item(payloads, "r1", SECRET, ANSWER), shadow_item(rotated, "r2", "x", "y")]
    )
    judge = _Judge()
    judged = asyncio.run(run_pairwise(evals, judge, "a", "shadow:base:a", RUN, "alpha", payloads=payloads))
    assert judged == 1 and judge.seen == [(SECRET, "base", ANSWER)]
    assert evals.get_run(ANY_TENANT, RUN) is not None
