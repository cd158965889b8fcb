"""A request the server stops at shutdown is the server's doing: a 503 in the OpenAI shape, recorded so.

Before, once the graceful-shutdown time ran out, a client still waiting on a non-streamed answer got
HTTP 499 with an empty body, recorded as ``client_disconnected`` ("the client closed the connection"):
restarts were blamed on clients and fell outside availability SLOs (probe-f #8).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_upstream import FakeUpstream, Script
from tests.support import serve_process, wait_until


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_a_request_cut_by_shutdown_is_a_503_recorded_as_the_servers(
    tmp_path: Path, upstream: FakeUpstream, workers: list[str]
) -> None:
    # With --workers the processes run plain uvicorn servers (no DrainingServer, nothing sets draining): the
    # second version of this fix, which asked the Lifecycle, answered them 500 and recorded a 499 again.
    upstream.script = Script(delay=60.0)  # answers long after the shutdown's grace time
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "timeouts": {"total": 120}}
    config: dict[str, Any] = {
        "models": [{"name": "m", "routing": {"retries": 0}, "deployments": [deployment]}],
        "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"},
    }
    (tmp_path / "gw.yaml").write_text(json.dumps(config))
    answers: list[httpx.Response] = []
    args = ["--drain-timeout", "2", *workers]
    with serve_process(tmp_path / "gw.yaml", log=tmp_path / "log.txt", args=args, timeout=60) as (_, url):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        def call() -> None:
            answers.append(httpx.post(url + "/v1/chat/completions", json=body, timeout=90))

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert wait_until(lambda: len(upstream.requests) == 1, 30), "the call never reached the upstream"
        time.sleep(0.5)
    caller.join(60)  # serve_process sent SIGTERM and waited for the exit
    assert answers, "no answer before the process exited"
    answer = answers[0]
    assert answer.status_code == 503, (answer.status_code, answer.text)
    assert answer.json()["error"]["code"] == "server_stopping" and answer.headers.get("x-request-id")
    with sqlite3.connect(tmp_path / "requests.db") as db:
        rows = list(db.execute("select status, error_type from requests where endpoint = 'chat'"))
    assert rows == [(503, "server_stopping")], rows


async def test_an_in_process_callers_own_timeout_is_not_a_shutdown(upstream: FakeUpstream) -> None:
    # In-process evals and judges call the app under their own asyncio.timeout: that cancellation is theirs,
    # so it must end as their TimeoutError (TransportFailure), not as a 503 "server_stopping" the server
    # answered (the first version of the shutdown fix took any cancellation for a shutdown).
    from opsgate.domain.config import parse_config
    from opsgate.evals.client import AsgiPoster, TransportFailure
    from opsgate.server.app import create_app

    upstream.script = Script(mode="hang")
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m"}
    app = create_app(parse_config({"models": [{"name": "m", "deployments": [deployment]}]}))
    async with app.router.lifespan_context(app):
        poster = AsgiPoster(app, {})
        body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
        with pytest.raises(TransportFailure, match="no answer within"):
            await poster.post("chat/completions", body, {}, 1.0)


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_a_stream_cut_by_shutdown_ends_with_a_server_stopping_event_recorded_as_the_servers(
    tmp_path: Path, upstream: FakeUpstream, workers: list[str]
) -> None:
    # A stream still going when the graceful-shutdown time ran out was recorded 499 client_disconnected, and
    # the client saw its stream simply stop: a restart blamed on clients, outside availability SLOs.
    upstream.script = Script(words=200_000)  # ~1 ms a word: streams long past the 2 s grace time
    deployment = {"type": "openai", "base_url": upstream.base_url, "model": "m", "timeouts": {"total": 600}}
    config: dict[str, Any] = {
        "models": [{"name": "m", "routing": {"retries": 0}, "deployments": [deployment]}],
        "record": {"store": f"sqlite:///{tmp_path}/requests.db", "journal_dir": f"{tmp_path}/journal"},
    }
    (tmp_path / "gw.yaml").write_text(json.dumps(config))
    events: list[str] = []
    first = threading.Event()
    args = ["--drain-timeout", "2", *workers]
    with serve_process(tmp_path / "gw.yaml", log=tmp_path / "log.txt", args=args, timeout=60) as (_, url):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}

        def call() -> None:
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=90) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[len("data: ") :])
                        first.set()

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert first.wait(30), "the stream never started"
    caller.join(60)  # serve_process sent SIGTERM and waited for the exit
    assert not caller.is_alive(), "the stream did not end with the server"
    assert len(events) > 2 and events[-1] != "[DONE]", events[-3:]
    last = json.loads(events[-1])
    assert last["error"]["code"] == "server_stopping", last
    with sqlite3.connect(tmp_path / "requests.db") as db:
        rows = list(db.execute("select status, error_type from requests where endpoint = 'chat'"))
    assert rows == [(503, "server_stopping")], rows


async def test_a_stream_cut_before_its_headers_went_out_keeps_the_asgi_order() -> None:
    # Review: cut while the response start was still being sent (uvicorn waits on a paused connection), the
    # error event went out with no start before it, an ASGI violation (uvicorn: a 500 to the client).
    import asyncio

    from opsgate.domain.context import StreamResult
    from opsgate.server.http_io import SseResponse

    async def source() -> Any:
        yield {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}
        await asyncio.sleep(3600)

    result = StreamResult(source=source())
    recorded: list[str | None] = []
    result.on_finish.append(lambda o: recorded.append(o.error.code if o.error else None))
    sent: list[dict[str, Any]] = []
    starting = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not any(m["type"] == "http.response.start" for m in sent):
            raise RuntimeError("Expected ASGI message 'http.response.start'")  # as uvicorn does
        if message["type"] == "http.response.start" and not starting.is_set():
            starting.set()
            await asyncio.sleep(3600)  # the connection's writes are paused
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    task = asyncio.ensure_future(SseResponse(result)({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
    await starting.wait()
    task.cancel()  # uvicorn: the graceful-shutdown time ran out
    await asyncio.wait_for(task, 10)  # answered, not raised
    assert recorded == ["server_stopping"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    assert sent[0]["status"] == 503 and b"server_stopping" in sent[1]["body"]
