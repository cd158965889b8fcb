"""Alert notifications: generic JSON or Slack-compatible bodies, POSTed with retries.

Each call carries ``X-Opsgate-Event-Id`` (alert id and transition), so a receiver can drop the
duplicates that retries may cause.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from opsgate.domain.slo_config import WebhookConfig

log = logging.getLogger("opsgate.slo.alerts")


class WebhookFailed(Exception):
    """The receiver answered with a status that is worth retrying (5xx, 429) or did not answer."""


def summary_line(event: dict[str, Any]) -> str:
    """One human line for an alert transition."""
    details = event.get("details") or {}
    burns = ", ".join(f"{w} {v:g}x" for w, v in (details.get("burn_rates") or {}).items() if v is not None)
    scope = f" (tenant {event['tenant']})" if event.get("tenant") else ""
    if event["status"] == "resolved":
        return f"RESOLVED [{event['severity'].upper()}] SLO {event['slo']}{scope}: burn rate back under threshold"
    current = details.get("current")
    return (
        f"FIRING [{event['severity'].upper()}] SLO {event['slo']}{scope}: "
        f"{'; '.join(details.get('firing') or [])}; current {current if current is not None else 'n/a'} "
        f"(target {details.get('target')}), budget left {details.get('budget_remaining')}; burn {burns}"
    )


def render(event: dict[str, Any], style: str) -> dict[str, Any]:
    """The body for a webhook of ``style`` (``generic`` or ``slack``)."""
    text = summary_line(event)
    if style == "slack":
        emoji = ":white_check_mark:" if event["status"] == "resolved" else ":rotating_light:"
        return {"text": f"{emoji} {text}"}
    return {"type": "slo_alert", **event, "summary": text}


async def send(session: aiohttp.ClientSession, hook: WebhookConfig, event: dict[str, Any], retries: int) -> bool:
    """POST one event to one webhook, retrying 5xx/429/connection errors with backoff; True if accepted."""
    headers = {name: value.get_secret_value() for name, value in hook.headers.items()}
    headers["X-Opsgate-Event-Id"] = f"{event['alert_id']}-{event['status']}"
    body = render(event, hook.format)
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(retries + 1),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception_type((WebhookFailed, aiohttp.ClientError, TimeoutError)),
            reraise=True,
        ):
            with attempt:
                timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
                async with session.post(hook.url, json=body, headers=headers, timeout=timeout) as response:
                    if response.status >= 500 or response.status == 429:
                        raise WebhookFailed(f"HTTP {response.status}")
                    if response.status >= 400:
                        log.error("alert webhook %s refused the event: HTTP %d", _where(hook), response.status)
                        return False
        return True
    except (WebhookFailed, aiohttp.ClientError, TimeoutError) as error:
        log.error("alert webhook %s failed after %d attempts: %s", _where(hook), retries + 1, error)
        return False


def _where(hook: WebhookConfig) -> str:
    # Scheme and host only: webhook paths often carry a secret token (Slack's do).
    return "/".join(hook.url.split("/")[:3])
