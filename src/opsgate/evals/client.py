"""How evaluation talks to models: the gateway's own ``/v1``, in-process or over HTTP.

In-process, requests go to the ASGI app through ``httpx.ASGITransport`` (the app's lifespan is
started, so embedded models load); with ``base_url`` they go to a running gateway. Either way they
pass the whole pipeline — auth, limits, guard, routing — and are recorded like any request, with
``metadata.purpose = "eval"`` plus the run and role, so ``--tag purpose=eval`` finds them in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import orjson

from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import IN_PROCESS_SCOPE_KEY
from opsgate.domain.pricing import PriceBook, cost_of


@dataclass
class CallResult:
    """One call's outcome: the answer or the error, with what the report needs."""

    ok: bool
    text: str = ""
    status: int = 0
    error: str | None = None
    request_id: str | None = None
    latency_ms: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


_META_HEADERS = ("x-request-id", "x-opsgate-deployment")
Meta = dict[str, str]  # the answer's x-request-id and x-opsgate-deployment (which deployment served)


class TransportFailure(Exception):
    """The call did not get an HTTP answer (connection refused, reset, timed out)."""


class Poster(Protocol):
    """POSTs a JSON body to a path under the gateway's ``/v1``; returns status, ``Meta`` and body."""

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit_s: float) -> tuple[int, Meta, bytes]:
        """One request (TransportFailure when there is no answer)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpxPoster:
    """Through an ``httpx.AsyncClient`` (in-process: its ASGITransport reaches the app without a socket)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit_s: float) -> tuple[int, Meta, bytes]:
        """One request."""
        try:
            response = await self.http.post(path, content=body, headers=headers, timeout=limit_s)
        except httpx.HTTPError as error:
            raise TransportFailure(f"{type(error).__name__}: {error}") from None
        meta = {k: response.headers[k] for k in _META_HEADERS if k in response.headers}
        return response.status_code, meta, response.content

    async def close(self) -> None:
        """Close the client."""
        await self.http.aclose()


class AsgiPoster:
    """Straight into the ASGI app (in-process): the whole app — middleware, access control, pipeline —
    without a socket or an HTTP client. A hand-built scope costs a fraction of httpx's ASGITransport,
    and the harness shares its process with the gateway, so the client's cost is the gateway's loss."""

    def __init__(self, app: Any, headers: dict[str, str], client: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        self.app = app
        self.base_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.client = client

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit_s: float) -> tuple[int, Meta, bytes]:
        """One request through the app."""
        raw_path = ("/v1/" + path).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": raw_path.decode(),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"opsgate.local"),
                (b"content-length", str(len(body)).encode()),
                *self.base_headers,
                *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            ],
            "client": self.client,
            "server": ("opsgate.local", 80),
            "state": {},
            IN_PROCESS_SCOPE_KEY: True,  # its cancellation is the caller's (a timeout), never a server stopping
        }
        finished = asyncio.Event()
        delivered = False
        status = 0
        meta: Meta = {}
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()  # the client stays connected until the answer is complete
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for key, value in message.get("headers") or []:
                    name = key.decode("latin-1").lower()
                    if name in _META_HEADERS:
                        meta[name] = value.decode("latin-1")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    finished.set()

        try:
            async with asyncio.timeout(limit_s):
                await self.app(scope, receive, send)
        except TimeoutError:
            raise TransportFailure(f"no answer within {limit_s:.0f} s") from None
        finally:
            finished.set()
        if not status:
            raise TransportFailure("the app sent no response")
        return status, meta, b"".join(chunks)

    async def close(self) -> None:
        """Nothing to release."""


class AiohttpPoster:
    """Over HTTP with aiohttp (a running gateway): its per-request cost is several times httpx's, which
    decides the harness's speed at hundreds of items a second (as for the gateway's own upstream calls)."""

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self.base_url = base_url.rstrip("/") + "/"
        self.session = aiohttp.ClientSession(
            headers=headers, connector=aiohttp.TCPConnector(limit=connections), raise_for_status=False
        )

    async def post(self, path: str, body: bytes, headers: dict[str, str], limit_s: float) -> tuple[int, Meta, bytes]:
        """One request."""
        aiohttp = self._aiohttp
        try:
            async with self.session.post(
                self.base_url + path, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=limit_s)
            ) as response:
                content = await response.read()
                meta = {k: response.headers[k] for k in _META_HEADERS if k in response.headers}
                return response.status, meta, content
        except (aiohttp.ClientError, TimeoutError) as error:
            raise TransportFailure(f"{type(error).__name__}: {error}") from None

    async def close(self) -> None:
        """Close the session."""
        await self.session.close()


class GatewayClient:
    """Chat and embedding calls through a gateway's ``/v1``."""

    def __init__(
        self,
        http: Poster,
        prices: PriceBook | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.http = http
        self.prices = prices
        self.timeout = timeout

    async def chat(
        self,
        model: str,
        messages: list[dict[str, str]],
        metadata: dict[str, str],
        **params: Any,
    ) -> CallResult:
        """One chat completion; never raises for an HTTP or transport failure (``ok`` False instead)."""
        body = {"model": model, "messages": messages, "metadata": metadata, **params}
        started = time.perf_counter()
        try:
            status, meta, content = await self.http.post(
                "chat/completions",
                orjson.dumps(body),
                {"Content-Type": "application/json", "Cache-Control": "no-cache"},
                self.timeout,
            )
        except TransportFailure as error:
            elapsed = (time.perf_counter() - started) * 1000
            return CallResult(False, error=str(error)[:500], latency_ms=elapsed)
        elapsed = (time.perf_counter() - started) * 1000
        request_id = meta.get("x-request-id")
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict):
            message = _error_message(data) or content[:300].decode("utf-8", "replace")
            return CallResult(
                False,
                status=status,
                error=f"HTTP {status}: {message}",
                request_id=request_id,
                latency_ms=elapsed,
            )
        choice = (data.get("choices") or [{}])[0] or {}
        text = ((choice.get("message") or {}).get("content")) or ""
        usage = data.get("usage") or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        logprobs = (choice.get("logprobs") or {}).get("content") if isinstance(choice.get("logprobs"), dict) else None
        return CallResult(
            True,
            text=text if isinstance(text, str) else "",
            status=200,
            request_id=request_id,
            latency_ms=elapsed,
            prompt_tokens=prompt,
            completion_tokens=completion,
            # Priced as the record prices it: by the deployment that served (PriceBook).
            cost=cost_of(self.prices.price(model, meta.get("x-opsgate-deployment")), usage) if self.prices else None,
            logprobs=logprobs if isinstance(logprobs, list) else None,
            finish_reason=choice.get("finish_reason"),
            body=data,
        )

    async def embed(self, model: str, texts: list[str], metadata: dict[str, str]) -> list[list[float]]:
        """Embeddings of ``texts`` (raises ValueError with the gateway's message on failure)."""
        try:
            status, _, content = await self.http.post(
                "embeddings",
                # Embeddings have no metadata field upstream: the record shows these by their user.
                orjson.dumps({"model": model, "input": texts, "user": metadata.get("eval_user", "opsgate-eval")}),
                {"Content-Type": "application/json"},
                self.timeout,
            )
        except TransportFailure as error:
            raise ValueError(f"embedding call failed: {error}") from None
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict):
            raise ValueError(f"embedding call failed: HTTP {status}: {_error_message(data)}")
        rows = sorted(data.get("data") or [], key=lambda d: d.get("index", 0))
        return [list(map(float, row["embedding"])) for row in rows]


def _error_message(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message"))[:300]
    return None


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@asynccontextmanager
async def gateway_client(
    *,
    base_url: str | None = None,
    config: GatewayConfig | None = None,
    api_key: str | None = None,
    call_timeout: float = 120.0,
    connections: int = 64,
    ready_timeout: float = 300.0,
) -> AsyncIterator[GatewayClient]:
    """A client for a running gateway (``base_url``, its ``/v1``) or for ``config`` served in-process."""
    prices = PriceBook(config) if config is not None else None
    if base_url is not None:
        poster = AiohttpPoster(base_url, _headers(api_key), connections)
        try:
            yield GatewayClient(poster, prices, call_timeout)
        finally:
            await poster.close()
        return
    if config is None:
        raise ValueError("give base_url or config")
    from opsgate.server.app import create_app

    app = create_app(config)
    async with app.router.lifespan_context(app):
        await _until_ready(app.state.gateway, ready_timeout)
        yield GatewayClient(AsgiPoster(app, _headers(api_key)), prices, call_timeout)


async def _until_ready(gateway: Any, timeout_s: float) -> None:
    """Wait until every alias can serve (embedded models load in the background at start): calls made
    before would be refused as unavailable and open the breakers."""
    deadline = time.monotonic() + timeout_s
    while not gateway.registry.is_ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the in-process gateway was not ready after {timeout_s:.0f} s (see the log)")
        await asyncio.sleep(0.1)
