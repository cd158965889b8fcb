"""Shadow items keep the live prompt and the candidate's answer as the request log keeps text.

Before, ``ShadowMirror`` stored both in clear in ``eval_items`` whatever ``record.encryption`` or
``record.payloads: metadata_only`` said: the request row had no text, the shadow item had the passport
number (probe 9, F11). Real SQLite and PostgreSQL stores; the candidate is a stub terminal.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opsgate.domain.config import parse_config
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
from opsgate.domain.principal import Principal
from opsgate.domain.requests import ChatCompletionRequest
from opsgate.evals.store import EvalStore
from opsgate.releases.cache import Arm
from opsgate.releases.shadow import ItemPayloads, ShadowMirror
from opsgate.releases.store import Release
from opsgate.store.crypto import KeyError_, PayloadCipher, parse_keys
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway

KEY = "k1:" + base64.b64encode(bytes(range(32))).decode()
SECRET = "my passport number is X1234567"
ANSWER = "noted: X1234567"
RUN = "shadow:exp_1:tenA"
MODEL = {"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlRecordStore]:
    if request.param == "sqlite":
        opened = open_store(f"sqlite:///{tmp_path}/requests.db")
        yield opened
        opened.close()
        return
    with fresh_pg_schema() as url:
        opened = open_store(url)
        yield opened
        opened.close()


def live(request_id: str, content: str = SECRET, tenant: str = "tenA") -> RequestContext:
    body = ChatCompletionRequest.model_validate({"model": "up", "messages": [{"role": "user", "content": content}]})
    ctx = RequestContext(endpoint="chat", raw_body=b"", headers={}, request_id=request_id, body=body)
    ctx.alias = parse_config({"models": [MODEL]}).models[0]
    ctx.principal = Principal(key_id=f"key-{tenant}", tenant=tenant, role="service")
    return ctx


def arm() -> Arm:
    release = Release("rel_1", "up", 2, {"parameters": {"temperature": 0.3}}, None, time.time(), None)
    return Arm("shadow", release, None, 1.0)


async def candidate(ctx: RequestContext) -> GatewayResponse:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return JsonResult(body={"choices": [{"message": {"role": "assistant", "content": ANSWER}}], "usage": usage})


def mirror_once(store: SqlRecordStore, payloads: ItemPayloads, content: str = SECRET) -> dict[str, Any]:
    """One shadow call for a live request; the item as stored (raw columns) once it is there."""
    mirror = ShadowMirror(candidate, lambda: EvalStore(store), payloads=payloads)

    async def go() -> None:
        assert mirror.submit(live("req-1", content), arm(), "exp_1")
        await asyncio.wait(list(mirror._tasks), timeout=60)  # the shadow call and its store, off the loop

    asyncio.run(go())
    assert mirror.status()["failed"] == 0 and mirror.status()["sent"] == 1
    [item] = EvalStore(store).all_items(RUN)
    return item


def raw_row(store: SqlRecordStore) -> str:
    with store.connection() as conn:
        return str(store.execute(conn, "SELECT * FROM eval_items").fetchall())


def test_metadata_only_stores_no_text(store: SqlRecordStore) -> None:
    item = mirror_once(store, ItemPayloads(metadata_only=True))
    assert item["input"] is None and item["output"] is None
    # What the experiment reads besides text stays: status, request id, tokens, latency.
    assert item["status"] == "ok" and item["request_id"] == "req-1" and item["completion_tokens"] == 3
    assert "X1234567" not in raw_row(store)


def test_encryption_seals_both_fields_with_the_request_logs_cipher(store: SqlRecordStore) -> None:
    payloads = ItemPayloads(cipher=PayloadCipher(parse_keys(KEY)), clear_fields=frozenset())
    item = mirror_once(store, payloads)
    assert item["input"].startswith("enc:v1:k1:") and item["output"].startswith("enc:v1:k1:")
    assert "X1234567" not in raw_row(store)
    # The reader's side: the key opens them; without it they say which key they need.
    opened = payloads.open_item(dict(item))
    assert opened["input"] == SECRET and opened["output"] == ANSWER
    assert ItemPayloads().open_item(dict(item))["input"] == {"encrypted_with": "k1"}
    # Bound to run, item and field: a ciphertext moved to the other column does not open.
    with pytest.raises(KeyError_):
        payloads.open_item({**item, "output": item["input"]})


def test_index_in_clear_keeps_that_field_readable(store: SqlRecordStore) -> None:
    payloads = ItemPayloads(cipher=PayloadCipher(parse_keys(KEY)), clear_fields=frozenset({"input"}))
    item = mirror_once(store, payloads)
    assert item["input"] == SECRET and item["output"].startswith("enc:v1:k1:")


def test_clear_text_is_stored_as_the_request_log_stores_it(store: SqlRecordStore) -> None:
    # A NUL in the prompt: PostgreSQL refused the whole item before; now U+FFFD, as in the request row.
    item = mirror_once(store, ItemPayloads(), content="a\x00b")
    assert item["input"] == "a\ufffdb" and item["output"] == ANSWER


@pytest.mark.parametrize(
    ("record", "metadata_only", "sealed"),
    [
        ({}, False, False),
        ({"payloads": "metadata_only"}, True, False),
        ({"encryption": {"enabled": True, "keys": KEY}}, False, True),
    ],
)
def test_the_gateway_gives_the_mirror_its_request_logs_policy(
    record: dict[str, Any], metadata_only: bool, sealed: bool
) -> None:
    config = parse_config(
        {
            "record": record,
            "releases": {"enabled": True},
            "models": [MODEL],
        }
    )
    gateway = Gateway(config).app.state.gateway
    payloads = gateway.release_stage.shadow.payloads
    assert payloads.metadata_only is metadata_only
    assert (payloads.cipher is not None) is sealed
    stored = payloads.keep("input", SECRET, RUN, "req-1")
    if metadata_only:
        assert stored is None
    elif sealed:
        assert payloads.cipher is gateway.record_log.cipher and payloads.clear_fields == frozenset()
        assert stored is not None and stored.startswith("enc:v1:k1:")
    else:
        assert stored == SECRET
