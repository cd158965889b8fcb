"""How evaluation talks to models: the gateway's own ``/v1``, in-process or over HTTP.

In-process, requests go to the ASGI app through ``httpx.ASGITransport`` (the app's lifespan is
started, so embedded models load); with ``base_url`` they go to a running gateway. Either way they
pass the whole pipeline — auth, limits, guard, routing — and are recorded like any request, with
``metadata.purpose = "eval"`` plus the run and role, so ``--tag purpose=eval`` finds them in the log.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from opsgate.domain.config import GatewayConfig, Price


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


def cost_of(price: Price | None, prompt: int | None, completion: int | None) -> float | None:
    """Cost at the alias's price (unknown price or usage: None, never 0)."""
    if price is None or prompt is None or completion is None:
        return None
    return (prompt * price.input_per_million + completion * price.output_per_million) / 1_000_000


class GatewayClient:
    """Chat and embedding calls through a gateway's ``/v1``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        prices: dict[str, Price] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.http = http
        self.prices = prices or {}
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
            response = await self.http.post(
                "chat/completions",
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json", "Cache-Control": "no-cache"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            elapsed = (time.perf_counter() - started) * 1000
            return CallResult(False, error=f"{type(error).__name__}: {error}"[:500], latency_ms=elapsed)
        elapsed = (time.perf_counter() - started) * 1000
        request_id = response.headers.get("x-request-id")
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            message = _error_message(data) or response.text[:300]
            return CallResult(
                False,
                status=response.status_code,
                error=f"HTTP {response.status_code}: {message}",
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
            cost=cost_of(self.prices.get(model), prompt, completion),
            logprobs=logprobs if isinstance(logprobs, list) else None,
            finish_reason=choice.get("finish_reason"),
            body=data,
        )

    async def embed(self, model: str, texts: list[str], metadata: dict[str, str]) -> list[list[float]]:
        """Embeddings of ``texts`` (raises ValueError with the gateway's message on failure)."""
        try:
            response = await self.http.post(
                "embeddings",
                content=orjson.dumps({"model": model, "input": texts}),
                headers={"Content-Type": "application/json"},
                timeout=self.timeout,
            )
        except httpx.HTTPError as error:
            raise ValueError(f"embedding call failed: {type(error).__name__}: {error}") from None
        data = orjson.loads(response.content) if response.content else None
        if response.status_code != 200 or not isinstance(data, dict):
            raise ValueError(f"embedding call failed: HTTP {response.status_code}: {_error_message(data)}")
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
) -> AsyncIterator[GatewayClient]:
    """A client for a running gateway (``base_url``, its ``/v1``) or for ``config`` served in-process."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    prices = {m.name: m.price for m in config.models if m.price is not None} if config is not None else {}
    if base_url is not None:
        async with httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=_headers(api_key), limits=limits
        ) as http:
            yield GatewayClient(http, prices, call_timeout)
        return
    if config is None:
        raise ValueError("give base_url or config")
    from opsgate.server.app import create_app

    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://opsgate.local/v1/", headers=_headers(api_key), limits=limits
        ) as http:
            yield GatewayClient(http, prices, call_timeout)
