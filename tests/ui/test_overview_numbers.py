"""The overview's tiles in headless Chromium match the admin API at every window: one server-side
definition of an error (5xx among requests that were not the client's mistake), the window's real
p95, and the same error rate whichever window holds all the traffic."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from tests.support import Gateway
from tests.ui.conftest import ARTIFACTS, Traffic

pytestmark = pytest.mark.timeout(180)
WINDOWS = ["15m|20s", "1h|1m", "6h|5m", "24h|15m", "7d|1h"]


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that fails the test on any console error or script error."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    yield page
    context.close()
    assert problems == []


def fmt_pct(value: float | None) -> str:
    # As the page's toFixed(2): the exact binary value, a tie rounded up (Python's format rounds it to even).
    return "—" if value is None else f"{Decimal(value * 100).quantize(Decimal('0.01'), ROUND_HALF_UP)}%"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "—"
    # As the page's Math.round: halves up (Python's round() takes 182.5 to 182, the page shows 183).
    return f"{value / 1000:.1f} s" if value >= 10000 else f"{math.floor(value + 0.5)} ms"


def summary(gateway: Gateway, window: str) -> dict[str, Any]:
    since, step = window.split("|")
    response = httpx.get(f"{gateway.url}/admin/stats/timeseries", params={"since": since, "step": step}, timeout=30)
    assert response.status_code == 200, response.text  # every window's step is one the API accepts
    result: dict[str, Any] = response.json()["summary"]
    return result


def tiles(page: Any) -> dict[str, str]:
    names = ("requests", "error_rate", "p95")
    return {name: page.text_content(f"[data-tile={name}]").strip() for name in names}


def load(page: Any, window: str) -> None:
    """Blank the tiles, choose ``window`` and wait until the page filled them from the API again (a
    window whose request failed would leave them blank, not showing the previous window's numbers)."""
    page.evaluate(
        """(w) => {
            for (const node of document.querySelectorAll('[data-tile]')) node.textContent = '—';
            const select = document.getElementById('window');
            select.value = w;
            select.dispatchEvent(new Event('change'));
        }""",
        window,
    )
    page.wait_for_function("() => document.querySelector('[data-tile=requests]').textContent !== '—'")


def test_tiles_match_the_admin_api_at_every_window(page: Any, dashboard: Gateway, traffic: Traffic) -> None:
    # A client mistake (400) is in the log but is not an error of the gateway.
    bad = httpx.post(dashboard.base_url + "/chat/completions", json={"model": "up"}, timeout=30)
    assert bad.status_code == 400
    page.goto(dashboard.url + "/ui")
    page.uncheck("#live")  # no refresh between reading the tiles and asking the API
    rates = set()
    for window in WINDOWS:
        deadline, seen, expected = time.monotonic() + 60, {}, {}
        while time.monotonic() < deadline:
            load(page, window)
            numbers = summary(dashboard, window)
            expected = {
                "requests": f"{numbers['requests']:,}",
                "error_rate": fmt_pct(numbers["error_rate"]),
                "p95": fmt_ms(numbers["p95_ms"]),
            }
            seen = tiles(page)
            if seen == expected and numbers["client_errors"] >= 1:
                break  # the rollups the API reads may trail the log briefly: ask again until they settle
            time.sleep(0.5)
        assert seen == expected, window
        assert numbers["errors"] == 2 and numbers["error_rate"] == pytest.approx(2 / (numbers["requests"] - 1))
        rates.add(seen["error_rate"])
        page.screenshot(path=str(ARTIFACTS / f"overview-{window.split('|')[0]}.png"), full_page=True)
    assert len(rates) == 1  # all the traffic is in every window: one error rate
