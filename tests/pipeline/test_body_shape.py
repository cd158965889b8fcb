"""Structural caps on inference bodies, checked before pydantic builds the request model.

Before: one 4 MB chat body of ~140k tiny content parts (or 62k tools, 127k messages) cost ~0.5 s of
``model_validate_json`` on the event loop, and six at once stalled another client's chat for seconds;
``metadata`` with 269k keys was accepted (outside probe 2026-12-06, finding 8). Real HTTP on loopback
through a gateway in front of the fake upstream.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from opsgate.domain.body_shape_config import BodyShapeConfig
from opsgate.domain.config import parse_config
from opsgate.domain.errors import InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest
from opsgate.pipeline.body_shape import BodyShape, _scan, value_bound, value_bound_outside_strings
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream, Script
from tests.support import Gateway, start_gateway

CAPS = BodyShapeConfig()
MB4 = 4 * 1024 * 1024
USER = {"role": "user", "content": "hi"}


def _config(base_url: str, **body_shape: int) -> dict[str, Any]:
    config = upstream_config(base_url)
    # A breaker that opens on the first failure it counts: none of these refusals may count.
    config["models"][0]["deployments"][0]["breaker"] = {"consecutive_failures": 1, "open_seconds": 600}
    if body_shape:
        config["server"] = {"body_shape": body_shape}
    return config


@pytest.fixture(scope="module")
def gateway(upstream_server: FakeUpstream) -> Iterator[Gateway]:
    started = start_gateway(_config(upstream_server.base_url))
    yield started
    started.server.stop()


def post(gateway: Gateway, body: dict[str, Any] | bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(gateway.url + path, content=raw, headers={"content-type": "application/json"}, timeout=60)


def assert_refused(gateway: Gateway, response: httpx.Response, param: str | None, code: str) -> None:
    """A 400 in the OpenAI shape naming ``param``, recorded like any validation error."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code), error
    [record] = gateway.records_for(response.headers["x-request-id"])
    assert record["status"] == 400 and record["error_type"] == "invalid_request_error"
    assert record["error_message"] == error["message"]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "up", "messages": [USER], **fields}


def n_messages(n: int) -> dict[str, Any]:
    return {"model": "up", "messages": [USER] * n}


def parts(n: int) -> dict[str, Any]:
    return chat(messages=[USER, {"role": "user", "content": [{"type": "text", "text": "a"}] * n}])


def tool_calls(n: int) -> dict[str, Any]:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    return chat(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [call] * n}])


def tools(n: int, field: str = "tools") -> dict[str, Any]:
    tool = {"type": "function", "function": {"name": "f"}} if field == "tools" else {"name": "f"}
    return chat(**{field: [tool] * n})


def values(n: int) -> dict[str, Any]:
    """A chat body of exactly ``n`` JSON values, with a comma in its text so the scan must run."""
    body = chat(messages=[{"role": "user", "content": "a,b"}])
    body["x"] = [""] * (n - 7)  # root, model, messages, the message, role, content, x: 7
    return body


CASES: list[tuple[str, Any, int, str, str, str]] = [
    # (name, make(n), cap, param, code, path)
    ("messages", n_messages, CAPS.max_messages, "messages", "array_above_max_length", "chat"),
    ("content parts", parts, CAPS.max_content_parts, "messages[1].content", "array_above_max_length", "chat"),
    ("tool_calls", tool_calls, CAPS.max_tool_calls, "messages[1].tool_calls", "array_above_max_length", "chat"),
    ("tools", tools, CAPS.max_tools, "tools", "array_above_max_length", "chat"),
    ("functions", lambda n: tools(n, "functions"), CAPS.max_tools, "functions", "array_above_max_length", "chat"),
    (
        "metadata keys",
        lambda n: chat(metadata={f"k{i}": "v" for i in range(n)}),
        CAPS.max_metadata_keys,
        "metadata",
        "object_above_max_properties",
        "chat",
    ),
    (
        "metadata key length",
        lambda n: chat(metadata={"k" * n: "v"}),
        CAPS.max_metadata_key_chars,
        "metadata",
        "string_above_max_length",
        "chat",
    ),
    (
        "metadata value length",
        lambda n: chat(metadata={"team": "é" * n}),
        CAPS.max_metadata_value_chars,
        "metadata.team",
        "string_above_max_length",
        "chat",
    ),
    (
        "logit_bias",
        lambda n: chat(logit_bias={str(i): 1 for i in range(n)}),
        CAPS.max_logit_bias,
        "logit_bias",
        "object_above_max_properties",
        "chat",
    ),
    ("values", values, CAPS.max_values, "x", "too_many_values", "chat"),
    (
        "completion metadata",
        lambda n: {"model": "up", "prompt": "hi", "metadata": {f"k{i}": "v" for i in range(n)}},
        CAPS.max_metadata_keys,
        "metadata",
        "object_above_max_properties",
        "completion",
    ),
    (
        "embedding inputs",
        lambda n: {"model": "up-embed", "input": ["a"] * n},
        2048,
        "input",
        "array_above_max_length",
        "embedding",
    ),
    (
        "embedding tokens",
        lambda n: {"model": "up-embed", "input": [[7] * 150] * (n // 150 - 1) + [[7] * (150 + n % 150)]},
        CAPS.max_embedding_tokens,
        "input",
        "too_many_tokens",
        "embedding",
    ),
]
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings"}


@pytest.mark.parametrize(("name", "make", "cap", "param", "code", "kind"), CASES, ids=[c[0] for c in CASES])
def test_each_cap_passes_at_the_cap_and_is_a_400_one_past_it(
    gateway: Gateway, upstream: FakeUpstream, name: str, make: Any, cap: int, param: str, code: str, kind: str
) -> None:
    at_cap = post(gateway, make(cap), PATHS[kind])
    assert at_cap.status_code == 200, at_cap.text
    assert len(upstream.requests) == 1
    past = post(gateway, make(cap + 1), PATHS[kind])
    assert_refused(gateway, past, param, code)
    assert len(upstream.requests) == 1  # refused before any backend was called


def test_the_official_sdk_sees_an_openai_error(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="up",
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)],
        )
    assert caught.value.status_code == 400 and caught.value.param == "tools"
    assert caught.value.code == "array_above_max_length"


def _fill(prefix: bytes, item: bytes, suffix: bytes) -> bytes:
    count = (MB4 - 1024 - len(prefix) - len(suffix)) // (len(item) + 1)
    return prefix + b",".join([item] * count) + suffix


PROBE: dict[str, tuple[bytes, str]] = {
    "content parts": (
        _fill(b'{"model":"up","messages":[{"role":"user","content":[', b'{"type":"text","text":"a"}', b"]}]}"),
        "messages[0].content",
    ),
    "tools": (
        _fill(
            b'{"model":"up","messages":[{"role":"user","content":"x"}],"tools":[',
            b'{"type":"function","function":{"name":"f"}}',
            b"]}",
        ),
        "tools",
    ),
    "messages": (_fill(b'{"model":"up","messages":[', b'{"role":"user","content":"a"}', b"]}"), "messages"),
    "metadata": (
        b'{"model":"up","messages":[{"role":"user","content":"x"}],"metadata":{'
        + b",".join(b'"%x":""' % i for i in range(380_000))
        + b"}}",
        "metadata",
    ),
}


def _cpu(action: Any) -> float:
    start = time.thread_time()
    action()
    return time.thread_time() - start


def _refusal(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        BodyShape(CAPS).check(raw, "chat")


def _old_validation(raw: bytes) -> None:
    ChatCompletionRequest.model_validate_json(raw)


@pytest.mark.parametrize("shape", list(PROBE))
def test_the_probe_bodies_are_refused_at_a_fraction_of_the_old_cost(gateway: Gateway, shape: str) -> None:
    raw, param = PROBE[shape]
    assert len(raw) <= MB4
    assert_refused(gateway, post(gateway, raw), param, "too_many_values")
    # CPU time of this thread, old and new interleaved, best of three each. Quiet: 0.05-0.20 of the old
    # cost; at half it still proves the refusal is not the old validation (the tools shape, the
    # cheapest to validate, measured 0.40 in a whole-suite run with a CPU burner).
    new_runs, old_runs = [], []
    for _ in range(3):
        new_runs.append(_cpu(lambda: _refusal(raw)))
        old_runs.append(_cpu(lambda: _old_validation(raw)))
    new, old = min(new_runs), min(old_runs)
    assert new < 0.5 * old, f"refusal {new * 1000:.1f} ms vs model_validate_json {old * 1000:.1f} ms"


def test_refusals_never_count_against_the_breaker(gateway: Gateway, upstream: FakeUpstream) -> None:
    for raw, _ in PROBE.values():
        assert post(gateway, raw).status_code == 400
    assert post(gateway, tools(129)).status_code == 400
    handle = gateway.app.state.gateway.router.handles["up"][0]
    assert handle.breaker.status()["state"] == "closed" and handle.failures == 0
    assert not upstream.requests
    assert post(gateway, chat()).status_code == 200


def test_a_small_chat_is_not_stalled_while_six_heavy_bodies_arrive(gateway: Gateway, upstream: FakeUpstream) -> None:
    upstream.script = Script()
    heavy = PROBE["content parts"][0]
    rounds = 3
    started = threading.Barrier(7)
    refused: list[int] = []

    def send_heavy() -> None:
        with httpx.Client(timeout=120) as client:
            started.wait(timeout=60)
            for _ in range(rounds):
                response = client.post(
                    gateway.url + "/v1/chat/completions", content=heavy, headers={"content-type": "application/json"}
                )
                refused.append(response.status_code)

    threads = [threading.Thread(target=send_heavy, daemon=True) for _ in range(6)]
    for thread in threads:
        thread.start()
    latencies: list[float] = []
    with httpx.Client(timeout=120) as client:
        client.post(gateway.url + "/v1/chat/completions", json=chat())  # connection and first-call costs
        started.wait(timeout=60)
        # Small chats, one after another, for as long as heavy bodies are still being sent.
        while len(refused) < 6 * rounds or not latencies:
            begin = time.monotonic()
            response = client.post(gateway.url + "/v1/chat/completions", json=chat())
            latencies.append(time.monotonic() - begin)
            assert response.status_code == 200, response.text
            if len(latencies) > 2000:
                break
    for thread in threads:
        thread.join(timeout=120)
    # Before: 18 bodies of ~0.5 s of validation each held the loop; a small chat waited 15 s (loaded 2-core
    # machine, breaker off). After: ~0.05 s median, ~1 s at worst on the same machine.
    assert max(latencies) < 3.0, f"slowest small chat {max(latencies):.2f} s over {len(latencies)} requests"
    assert refused == [400] * (6 * rounds)


def test_caps_come_from_the_config(upstream_server: FakeUpstream) -> None:
    gw = start_gateway(
        _config(upstream_server.base_url, max_messages=3, max_values=1000, max_tools=1, max_embedding_tokens=10)
    )
    try:
        assert post(gw, n_messages(3)).status_code == 200
        assert_refused(gw, post(gw, n_messages(4)), "messages", "array_above_max_length")
        assert_refused(gw, post(gw, tools(2)), "tools", "array_above_max_length")
        assert_refused(gw, post(gw, values(1001)), "x", "too_many_values")
        embed = {"model": "up-embed", "input": [[1] * 5, [2] * 6]}
        assert_refused(gw, post(gw, embed, "/v1/embeddings"), "input", "too_many_tokens")
    finally:
        gw.server.stop()


def test_the_config_refuses_a_values_cap_too_low_to_serve() -> None:
    with pytest.raises(Exception, match="max_values"):
        parse_config({"server": {"body_shape": {"max_values": 10}}})


# -- the scan itself ------------------------------------------------------------------------------


def _count(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_count(item) for item in value.values())
    if isinstance(value, list):
        return 1 + sum(_count(item) for item in value)
    return 1


_TRICKY = ["", "a,b", "[{", '"', '\\"', "\\", "é", "]}", ", : ,", "\u2028", "\\u0022"]


def _random_body(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 5 and roll < 0.25:
        return {rng.choice(_TRICKY) + str(i): _random_body(rng, depth + 1) for i in range(rng.randint(0, 6))}
    if depth < 5 and roll < 0.5:
        return [_random_body(rng, depth + 1) for _ in range(rng.randint(0, 8))]
    return rng.choice([rng.choice(_TRICKY), rng.randint(-(10**6), 10**6), 1.5e-7, True, False, None])


def test_the_scan_counts_exactly_what_a_parser_counts() -> None:
    rng = random.Random(11)
    for _ in range(1500):
        body = _random_body(rng)
        raw = json.dumps(body, indent=rng.choice([None, 1]), ensure_ascii=rng.random() < 0.5).encode()
        exact = _count(body)
        assert value_bound(raw) >= exact
        outside = value_bound_outside_strings(raw, 10**6)
        assert outside is not None and value_bound(raw) >= outside >= exact
        _scan(raw, exact, None)  # at the cap: passes
        if exact > 1:
            with pytest.raises(InvalidRequestError):
                _scan(raw, exact - 1, None)


def test_text_full_of_commas_and_brackets_is_not_scanned() -> None:
    # A pasted document or code: past the cap by the plain byte counts, far below it outside strings.
    text = "f(a, [b]) {c}, C:\\dir\\ " * 20_000 + "\\"  # ends in a backslash: the quote after it closes
    raw = json.dumps(chat(messages=[{"role": "user", "content": text}])).encode()
    assert value_bound(raw) > CAPS.max_values
    assert value_bound_outside_strings(raw, 100) == 6
    BodyShape(CAPS).check(raw, "chat")


def test_the_scan_names_the_container_that_grew() -> None:
    raw = json.dumps({"a": [1, 2], "b": {"c": [{"d": ["x"] * 50}]}}).encode()
    with pytest.raises(InvalidRequestError) as caught:
        _scan(raw, 40, None)
    assert caught.value.param == "b.c[0].d"
    with pytest.raises(InvalidRequestError) as caught:
        _scan(json.dumps(list(range(100))).encode(), 50, None)
    assert caught.value.param is None  # the body itself


def test_values_json_cannot_carry_do_not_smuggle_an_oversized_field() -> None:
    # orjson refuses NaN and integers past 64 bits; the shape is still measured (pydantic's parser).
    for extra in (b"NaN", b"123456789012345678901234567890"):
        raw = (
            b'{"model":"up","messages":[],"x":'
            + extra
            + b',"metadata":{'
            + b",".join(b'"%d":""' % i for i in range(17))
            + b"}}"
        )
        with pytest.raises(InvalidRequestError) as caught:
            BodyShape(CAPS).check(raw, "chat")
        assert caught.value.param == "metadata"


def test_bodies_that_are_not_json_are_left_to_the_validator(gateway: Gateway) -> None:
    shape = BodyShape(CAPS)
    for raw in (b"", b"[]", b"]]]", b"{", b'{"model": "up", "messages": [', b'"' + b"a,[" * 1000):
        shape.check(raw, "chat")
    for raw in (b'{"model": "up", "messages": [' + b"[" * 60_000, b'"' + b"a,[" * 30_000, b"]" * 60_000):
        response = post(gateway, raw)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
