"""``opsgate chat`` and ``opsgate models``: against a running gateway, or a gateway built in-process."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, TextIO

import aiohttp
import orjson
from rich.console import Console

from opsgate.domain.config import GatewayConfig
from opsgate.domain.context import JsonResult, RequestContext


def _usage_line(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    return f"[{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens]"


async def chat_in_process(config: GatewayConfig, body: dict[str, Any], out: TextIO, console: Console) -> int:
    """Run ``body`` through a gateway built in this process (no HTTP), streaming text to ``out``."""
    from opsgate.server.app import Gateway

    gateway = Gateway(config)
    await gateway.start()
    try:
        with console.status("loading model…"):
            await gateway.registry.wait_loaded()
        ctx = RequestContext(endpoint="chat", raw_body=orjson.dumps(body), headers={})
        result = await gateway.pipeline.handle(ctx)
        if isinstance(result, JsonResult):
            console.print(f"[red]error {result.status}[/red]: {result.body.get('error', {}).get('message')}")
            return 1
        usage = None
        try:
            # Closed here even on Ctrl-C, so the stream's record and slot release run before the gateway stops.
            async with aclosing(result.chunks()) as chunks:
                async for chunk in chunks:
                    for choice in chunk.get("choices") or ():
                        out.write(choice.get("delta", {}).get("content") or "")
                        out.flush()
                    usage = chunk.get("usage") or usage
        except Exception as error:
            console.print(f"\n[red]stream failed[/red]: {error}")
            return 1
        out.write("\n")
        console.print(_usage_line(usage), style="dim")
        return 0
    finally:
        await gateway.stop()


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def chat_over_http(url: str, api_key: str | None, body: dict[str, Any], out: TextIO, console: Console) -> int:
    """Stream ``body`` from a running gateway at ``url`` (its ``/v1`` base)."""
    usage = None
    async with aiohttp.ClientSession(headers=_headers(api_key)) as session:
        try:
            response = await session.post(url.rstrip("/") + "/chat/completions", json=body)
        except aiohttp.ClientError as error:
            console.print(f"[red]cannot reach {url}[/red]: {error}")
            return 1
        async with response:
            if response.status != 200:
                data = await response.read()
                console.print(f"[red]error {response.status}[/red]: {data.decode(errors='replace')}")
                return 1
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line == b"data: [DONE]":
                    continue
                chunk = orjson.loads(line[5:])
                if "error" in chunk:
                    console.print(f"\n[red]stream failed[/red]: {chunk['error'].get('message')}")
                    return 1
                for choice in chunk.get("choices") or ():
                    out.write(choice.get("delta", {}).get("content") or "")
                    out.flush()
                usage = chunk.get("usage") or usage
    out.write("\n")
    console.print(_usage_line(usage), style="dim")
    return 0


async def fetch_models(url: str, api_key: str | None) -> list[dict[str, Any]]:
    """``GET /v1/models`` from a running gateway."""
    async with (
        aiohttp.ClientSession(headers=_headers(api_key)) as session,
        session.get(url.rstrip("/") + "/models") as response,
    ):
        response.raise_for_status()
        data = await response.json()
        return list(data["data"])
