"""A hostile or broken upstream's answer is still recorded, and cannot fail a sink or the request.

The upstream (a real HTTP server on loopback) answers with values nested deeper than orjson writes
(254 levels) or usage counts that are not numbers. The gateway must record every such request (the
deep part cut and kept as text), count only real numbers in its metrics, and never let one record
sink's failure stop the others or fail the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from opsgate.domain.config import RecordConfig, parse_config
from opsgate.domain.context import StreamOutcome, StreamResult
from opsgate.domain.pricing import MAX_COUNT, is_count, stored_count
from opsgate.pipeline.limits import used_tokens
from opsgate.pipeline.record import FanoutSink, MemorySink
from opsgate.store.nesting import CUT_MARK, MAX_DEPTH, bounded_record_json, cut_nesting
from opsgate.store.query import RecordQuery
from opsgate.store.record_log import RecordLog
from opsgate.telemetry.metrics import amount
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway

DEEP = json.loads("[" * 300 + "]" * 300)  # past orjson's 254 levels, within what it reads (1024)


def answer(content: Any = "ok", finish: Any = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "up-x",
        "object": "chat.completion",
        "created": 1,
        "model": "real-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


@pytest.fixture()
def gateway(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway on loopback in front of the fake upstream, recording to a SQLite request log."""
    data = upstream_config(upstream.base_url)
    data["models"][0]["price"] = {"input_per_million": 1.0, "output_per_million": 2.0}  # cost from the usage
    data["record"] = {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": str(tmp_path / "journal")}
    # Budgets settle from the same usage: counts that are not numbers must keep the estimate, not fail.
    data["limits"] = {
        "enabled": True,
        "rules": [{"per": "global", "tokens_per_minute": 10_000_000, "spend_per_day": 1_000.0}],
    }
    gateway = Gateway(parse_config(data), keep_record_config=True)
    gateway.server.start("/readyz", timeout=120)
    yield gateway
    gateway.server.stop()


def ask(gateway: Gateway, upstream: FakeUpstream, body: dict[str, Any], client_id: str) -> httpx.Response:
    upstream.script = Script(mode="status", status=200, body=body)
    request = {"model": "up", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        gateway.base_url + "/chat/completions", json=request, headers={"x-request-id": client_id}, timeout=60
    )


def stored(gateway: Gateway, client_id: str) -> dict[str, Any]:
    """The one stored record sent with ``client_id``, payloads opened."""
    record_log: RecordLog = gateway.app.state.gateway.record_log
    assert record_log.writer is not None and record_log.writer.flush(timeout=60), record_log.status()
    found, _ = record_log.search(RecordQuery(client_request_id=client_id))
    assert len(found) == 1, found
    record = record_log.get(found[0]["id"])
    assert record is not None
    return record


def depth(value: Any) -> int:
    level = 0
    while isinstance(value, list) and value:
        value, level = value[0], level + 1
    return level + 1 if isinstance(value, list) else level


@pytest.mark.timeout(180)
@pytest.mark.parametrize("field", ["content", "finish_reason"])
def test_an_answer_nested_too_deep_is_recorded_with_the_depth_cut(
    gateway: Gateway, upstream: FakeUpstream, field: str
) -> None:
    body = answer(content=DEEP) if field == "content" else answer(finish=DEEP)
    response = ask(gateway, upstream, body, f"deep-{field}")
    assert "internal error in record" not in response.text
    record = stored(gateway, f"deep-{field}")
    assert "record_error" not in (record.get("tags") or {})  # the full record, not its essentials
    if record["status"] == 502:  # refused as a bad upstream answer before it reached the record
        assert record["error_type"] == "upstream_error"
    else:
        assert record["status"] == 200
        assert_cut(record["response"][field], 300)
    assert gateway.app.state.gateway.sink.failures == {}


def assert_cut(kept: Any, sent_depth: int) -> None:
    """The first levels as sent (the payload dict is one), the rest as its JSON text below them."""
    assert depth(kept) == MAX_DEPTH - 1
    inner = kept
    while isinstance(inner, list):
        inner = inner[0]
    assert isinstance(inner, str) and depth(json.loads(inner)) == sent_depth - depth(kept)


def test_a_response_payload_nested_too_deep_is_stored_cut(tmp_path: Path) -> None:
    record_log = RecordLog(
        RecordConfig.model_validate({"store": f"sqlite:///{tmp_path}/r.db", "journal_dir": str(tmp_path / "j")})
    )
    record_log.start()
    try:
        payload = {"content": DEEP, "finish_reason": "stop"}
        record_log.write({"id": "deep-1", "ts": 1.0, "endpoint": "chat", "status": 200, "response": payload})
        record_log.write({"id": "deep-2", "ts": 1.0, "endpoint": "chat", "status": 200, "finish_reason": DEEP})
        assert record_log.writer is not None and record_log.writer.flush(timeout=60), record_log.status()
        first, second = record_log.get("deep-1"), record_log.get("deep-2")
        assert record_log.status()["essentials_only"] == 0
    finally:
        record_log.stop()
    assert first is not None and second is not None
    assert_cut(first["response"]["content"], 300)
    assert first["response"]["finish_reason"] == "stop"
    assert second["status"] == 200 and second["finish_reason"] is not None  # a column: kept as text


@pytest.mark.timeout(180)
def test_an_answer_nested_too_deep_is_a_502_in_the_openai_shape(gateway: Gateway, upstream: FakeUpstream) -> None:
    response = ask(gateway, upstream, answer(content=DEEP), "deep-client")
    assert response.status_code == 502  # the upstream's fault, in the OpenAI error shape, never a bare 500
    assert response.json()["error"]["type"]
    record = stored(gateway, "deep-client")
    assert record["status"] == 502  # what the client got, recorded


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("usage", "counted"),
    [
        (
            {"prompt_tokens": {"a": [1]}, "completion_tokens": [1, 2], "prompt_tokens_details": {"cached_tokens": {}}},
            (0, 0),
        ),
        ({"prompt_tokens": "12abc", "completion_tokens": "\u0000"}, (0, 0)),
        ({"prompt_tokens": -5, "completion_tokens": 1e308}, (0, 0)),
        ({"prompt_tokens": True, "completion_tokens": 2**64 - 1}, (0, 0)),
        ({"prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": "cached"}, (3, 4)),
    ],
    ids=["objects", "strings", "negative-huge", "bool-u64", "details-string"],
)
def test_usage_that_is_not_a_count_is_answered_recorded_and_not_counted(
    gateway: Gateway, upstream: FakeUpstream, usage: dict[str, Any], counted: tuple[int, int]
) -> None:
    client_id = f"usage-{len(str(usage))}"
    response = ask(gateway, upstream, answer(usage=usage), client_id)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "ok"
    record = stored(gateway, client_id)
    assert record["status"] == 200 and "record_error" not in (record.get("tags") or {})
    if counted == (0, 0):  # not counts: unknown (NULL; PostgreSQL's INTEGER columns refuse them), tagged
        assert record["prompt_tokens"] is None or record["completion_tokens"] is None
        assert record["tags"]["usage_not_counts"] is True
    else:
        assert (record["prompt_tokens"], record["completion_tokens"]) == counted
    assert record["cost"] is None  # unknown from such counts, not an error and not 0
    scrape = httpx.get(gateway.url + "/metrics", timeout=30)
    assert scrape.status_code == 200
    tokens = {
        line.split('type="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in scrape.text.splitlines()
        if line.startswith('opsgate_tokens_total{model="up"')
    }
    assert (tokens["input"], tokens["output"]) == counted
    assert 'opsgate_requests_total{deployment="' in scrape.text
    assert gateway.app.state.gateway.sink.failures == {}


class Broken:
    """A sink that fails on every record."""

    def write(self, record: dict[str, Any]) -> None:
        raise RuntimeError("broken sink")


def test_one_failing_sink_stops_neither_the_others_nor_the_request(caplog: pytest.LogCaptureFixture) -> None:
    before, after = MemorySink(), MemorySink()
    fanout = FanoutSink(before, Broken(), after)
    with caplog.at_level(logging.ERROR, logger="opsgate.pipeline.record"):
        fanout.write({"id": "r1"})
        fanout.write({"id": "r2"})
    assert [r["id"] for r in before.records] == [r["id"] for r in after.records] == ["r1", "r2"]
    assert fanout.failures == {"Broken": 2}
    assert "record sink Broken failed on request r1" in caplog.text


class Unprintable:
    """A value no encoder can take: even ``str`` fails on it."""

    def __str__(self) -> str:
        raise ValueError("no text for this value")


def test_a_record_that_cannot_be_serialised_is_stored_as_its_essentials(tmp_path: Path) -> None:
    config = RecordConfig.model_validate(
        {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": str(tmp_path / "journal")}
    )
    record_log = RecordLog(config)
    record_log.start()
    try:
        record_log.write(
            {"id": "odd-1", "ts": 1.0, "endpoint": "chat", "model": "up", "status": 200, "metadata": Unprintable()}
        )
        assert record_log.writer is not None and record_log.writer.flush(timeout=60), record_log.status()
        kept = record_log.get("odd-1")
        assert record_log.status()["essentials_only"] == 1
    finally:
        record_log.stop()
    assert kept is not None and (kept["status"], kept["model"], kept["endpoint"]) == (200, "up", "chat")
    assert "no text for this value" in kept["tags"]["record_error"]


def test_cut_nesting_keeps_the_first_levels_and_the_rest_as_text() -> None:
    value = {"a": json.loads("[" * 10 + "1" + "]" * 10), "b": "x"}
    cut = cut_nesting(value, depth=4)
    assert cut["b"] == "x" and cut["a"][0][0][0] == json.dumps(json.loads("[" * 7 + "1" + "]" * 7))
    assert cut_nesting(value) == value  # within the limit: unchanged
    too_deep = orjson.loads(b"[" * 1000 + b"]" * 1000)  # beyond Python's recursion limit as well
    written = orjson.loads(bounded_record_json({"v": too_deep}))
    inner = written["v"]
    while isinstance(inner, list):
        inner = inner[0]
    assert inner == CUT_MARK


@pytest.mark.parametrize(
    ("value", "counted"),
    [
        *[(3, 3), (2.5, 2.5), (0, 0), (None, 0), (True, 0), (-1, 0), (float("nan"), 0), (float("inf"), 0)],
        *[("12", 0), ({"a": 1}, 0), ([1], 0), (1 << 64, 0), (1e300, 0)],
    ],
)
def test_only_real_counts_are_added(value: Any, counted: float) -> None:
    assert amount(value) == counted


@pytest.mark.parametrize("usage", ["12", [1], 5, {"prompt_tokens": "12abc", "completion_tokens": 1e308}])
def test_a_stream_whose_usage_is_not_counts_still_runs_every_finish_callback(usage: Any) -> None:
    """A stream's usage chunk may hold anything; the limits callback must not fail, and one callback that
    does fail must not skip the record's (the record callback runs after the limits one)."""

    async def source() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        yield {"choices": [], "usage": usage}

    seen: list[Any] = []

    def limits_like(outcome: StreamOutcome) -> None:
        seen.append(used_tokens(outcome.usage) if outcome.usage else 0)

    def failing(outcome: StreamOutcome) -> None:
        raise RuntimeError("a broken callback")

    result = StreamResult(source(), on_finish=[limits_like, failing, lambda outcome: seen.append("recorded")])

    async def drain() -> list[dict[str, Any]]:
        return [chunk async for chunk in result.chunks()]

    assert len(asyncio.run(drain())) == 2
    assert seen[-1] == "recorded"
    assert seen[0] in (0, None)  # unknown counts: the reservation's estimate stands
    assert result.outcome.usage is None or isinstance(result.outcome.usage, dict)


def test_counts_past_any_real_request_are_unknown_not_infinite() -> None:
    assert not is_count(1e308) and not is_count(2**64 - 1) and not is_count(-1) and not is_count(True)
    assert is_count(0) and is_count(MAX_COUNT) and not is_count(MAX_COUNT + 1)
    assert used_tokens({"prompt_tokens": 1, "completion_tokens": 1e308}) is None
    assert used_tokens({"total_tokens": 2**64, "prompt_tokens": 3, "completion_tokens": 4}) == 7
    assert stored_count(3.0) == 3 and stored_count(1.5) is None and stored_count("3") is None


@pytest.mark.timeout(180)
def test_a_failing_sink_is_visible_in_readyz_and_metrics(gateway: Gateway, upstream: FakeUpstream) -> None:
    fanout = gateway.app.state.gateway.sink
    fanout.sinks = (*fanout.sinks, Broken())
    response = ask(gateway, upstream, answer(), "broken-sink-client")
    assert response.status_code == 200  # the answer stands
    assert stored(gateway, "broken-sink-client")["status"] == 200  # the request log still got it
    ready = httpx.get(gateway.url + "/readyz", timeout=30).json()
    assert ready["record_sinks"] == {"failures": 1, "failures_Broken": 1}
    scrape = httpx.get(gateway.url + "/metrics", timeout=30).text
    assert 'opsgate_stage_status{field="failures",stage="record_sinks"} 1.0' in scrape
