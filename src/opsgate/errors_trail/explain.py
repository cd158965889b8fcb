"""Ask a model to explain an error group: opt-in, and an ordinary gateway call that the record shows.

The call goes through the gateway's public ``/v1/chat/completions`` (never a hidden in-process
model call), tagged with ``metadata.opsgate_purpose = "explain_error_group"`` and the group's
signature, so it is searchable in the request log like any other request.
"""

from __future__ import annotations

from typing import Any

import aiohttp

PURPOSE = "explain_error_group"

_SYSTEM = (
    "You are an SRE assistant for an LLM gateway. Given a group of failed requests, explain in at most "
    "four short sentences the most likely cause and the first thing an on-call engineer should check."
)


def explain_request(group: dict[str, Any], model: str, max_tokens: int = 200) -> dict[str, Any]:
    """The chat request that asks ``model`` about ``group`` (a ``GET /admin/errors`` entry)."""
    facts = (
        f"error type: {group.get('error_type')}\n"
        f"deployment: {group.get('deployment')}\n"
        f"normalised message: {group.get('message')}\n"
        f"count: {group.get('count')} (first seen {group.get('first_seen')}, last seen {group.get('last_seen')})\n"
        f"trend per bucket, oldest first: {group.get('trend')}"
    )
    return {
        "model": model,
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": facts}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "metadata": {"opsgate_purpose": PURPOSE, "signature": str(group.get("signature"))},
    }


async def explain_groups(
    url: str, api_key: str | None, model: str, groups: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], str, str | None]]:
    """(group, explanation or error text, request id) for each group, asked one by one through ``url`` (/v1)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    out: list[tuple[dict[str, Any], str, str | None]] = []
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=120)) as session:
        for group in groups:
            async with session.post(url.rstrip("/") + "/chat/completions", json=explain_request(group, model)) as r:
                body = await r.json(content_type=None)
                request_id = r.headers.get("x-request-id")
                if r.status != 200:
                    message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
                    out.append((group, f"error {r.status}: {message or body}", request_id))
                    continue
                out.append((group, str(body["choices"][0]["message"]["content"]).strip(), request_id))
    return out
