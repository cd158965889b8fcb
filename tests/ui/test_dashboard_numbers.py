"""Every number the overview, its usage table and the SLO board display equals the admin API's JSON, at
every window the overview offers, on seeded traffic (two models, 4xx and 5xx, slow answers, guard events).
The page is Debian's Chromium driven by Playwright; any console or script error fails the test."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.ui.conftest import ARTIFACTS, Seeded, watch_console
from tests.ui.readout import number, shows

pytestmark = pytest.mark.timeout(240)


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    problems = watch_console(page)
    yield page
    context.close()
    assert problems == []


def admin(seeded: Seeded, path: str, **params: str) -> dict[str, Any]:
    response = httpx.get(seeded.gateway.url + path, params=params, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def settle(check: Callable[[], list[str]], what: str) -> None:
    """Run ``check`` until it finds no mismatch: the rollups the API reads may trail the log briefly."""
    deadline, mismatches = time.monotonic() + 60, ["not checked"]
    while time.monotonic() < deadline:
        mismatches = check()
        if not mismatches:
            return
        time.sleep(0.5)
    raise AssertionError(f"{what}: {mismatches}")


def tile(page: Any, name: str) -> str:
    return str(page.text_content(f"[data-tile={name}]")).strip()


def choose(page: Any, window: str) -> None:
    """Blank the tiles, pick ``window`` and wait until the page filled them from the API again."""
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


CHART_COLUMNS = {
    "chart-traffic": ["requests", "errors"],
    "chart-latency": ["p50_ms", "p95_ms", "p99_ms"],
    "chart-cost": ["cost"],
    "chart-tokens": ["prompt_tokens", "completion_tokens"],
}


def chart_mismatches(page: Any, rows: list[dict[str, Any]]) -> list[str]:
    """Whether each overview chart draws exactly the API's buckets: its times and its columns, untouched."""
    out = []
    for chart, columns in CHART_COLUMNS.items():
        drawn = page.evaluate(f"() => document.getElementById('{chart}').uplot.data.map((a) => Array.from(a))")
        expected = [[row["ts"] for row in rows], *[[row[c] for row in rows] for c in columns]]
        if drawn != expected:
            out.append(f"{chart} draws other data than the API's {columns}")
    return out


def overview_mismatches(page: Any, seeded: Seeded, window: str) -> list[str]:
    since, step = window.split("|")
    choose(page, window)
    answer = admin(seeded, "/admin/stats/timeseries", since=since, step=step)
    summary = answer["summary"]
    drawn = chart_mismatches(page, answer["data"])
    if drawn:
        return drawn
    requests, cost = summary["requests"], summary["cost"]
    split = tile(page, "tokens_split").split("·")
    errors = tile(page, "errors").split("·")
    rate, per = tile(page, "rate"), tile(page, "cost_per")
    latency = tile(page, "p50").split("·")
    expected: list[tuple[str, str, float | None]] = [
        ("requests", tile(page, "requests"), requests),
        ("rate", rate, summary["requests_per_minute"]),
        ("error_rate", tile(page, "error_rate"), summary["error_rate"]),
        ("errors", errors[0], summary["errors"]),
        ("client_errors", errors[1], summary["client_errors"]),
        ("p95", tile(page, "p95"), summary["p95_ms"]),
        ("p50", latency[0].removeprefix("p50"), summary["p50_ms"]),
        ("p99", latency[1].strip().removeprefix("p99"), summary["p99_ms"]),
        ("cost", tile(page, "cost"), cost),
        ("cost_per", per, summary["cost_per_request"]),
        ("tokens", tile(page, "tokens"), summary["tokens"]),
        ("prompt", split[0], summary["prompt_tokens"]),
        ("completion", split[1], summary["completion_tokens"]),
    ]
    return [f"{name}: shows {text!r}, API {value!r}" for name, text, value in expected if not shows(text, value)]


def test_overview_tiles_equal_the_admin_api_at_every_window(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.gateway.url + "/ui")
    page.uncheck("#live")  # no refresh between reading the tiles and asking the API
    windows = page.eval_on_selector_all("#window option", "options => options.map(o => o.value)")
    assert len(windows) == 5
    rates = set()
    for window in windows:
        settle(lambda window=window: overview_mismatches(page, seeded, window), window)
        summary = admin(seeded, "/admin/stats/timeseries", since=window.split("|")[0], step=window.split("|")[1])
        # The seeded traffic: 3 upstream 500s; 3 client mistakes (no model, unknown model, a blocked input).
        assert summary["summary"]["errors"] == 3 and summary["summary"]["client_errors"] == 3
        assert summary["summary"]["p99_ms"] >= 1000  # the slow answers
        rates.add(tile(page, "error_rate"))
        page.screenshot(path=str(ARTIFACTS / f"seeded-overview-{window.split('|')[0]}.png"), full_page=True)
    assert len(rates) == 1  # all the traffic is in every window: one error rate


def utc_today() -> str:
    return datetime.now(UTC).date().isoformat()


def usage_mismatches(page: Any, seeded: Seeded) -> list[str]:
    rows = admin(seeded, "/admin/usage", by="model", since=utc_today())["data"]
    page.evaluate("() => document.getElementById('window').dispatchEvent(new Event('change'))")
    shown = page.eval_on_selector_all(
        "#usage tbody tr", "rows => rows.map(r => [...r.querySelectorAll('td')].map(td => td.textContent))"
    )
    if len(shown) != len(rows):
        return [f"{len(shown)} rows shown, API has {len(rows)}"]
    out = []
    for cells, row in zip(shown, rows, strict=True):
        name = row["model"] or "(none)"
        if cells[0] != name:
            out.append(f"model cell {cells[0]!r} for {row['model']!r}")
        for text, value in zip(
            cells[1:],
            [row["requests"], row["errors"], row["prompt_tokens"] + row["completion_tokens"], row["cost"]],
            strict=True,
        ):
            if not shows(text, value):
                out.append(f"{name}: shows {text!r}, API {value!r}")
    return out


def test_usage_by_model_equals_the_admin_api_and_names_every_row(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.gateway.url + "/ui")
    page.wait_for_function("() => !document.querySelector('#usage').textContent.includes('Loading')")
    settle(lambda: usage_mismatches(page, seeded), "usage by model")
    models = [row["model"] for row in admin(seeded, "/admin/usage", by="model", since=utc_today())["data"]]
    assert "" in models and {"up", "cheap"} <= set(models)  # the request without a model has a row too
    names = page.eval_on_selector_all("#usage tbody tr td:first-child", "cells => cells.map(c => c.textContent)")
    assert all(name.strip() for name in names), names  # no blank model name


def test_slo_cards_equal_the_admin_api(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.gateway.url + "/ui/slo")
    page.wait_for_selector("#slos [data-slo]")
    slos = admin(seeded, "/admin/slo")["data"]
    assert any(slo["sla"] for slo in slos)
    for slo in slos:
        card = page.locator(f'[data-slo="{slo["name"]}"]')
        meta = card.locator(".slo-meta").text_content()
        assert "[object Object]" not in meta
        if slo["sla"]:
            shown = re.search(r"SLA (\S+) \((met|missed)\)", meta)
            assert shown, meta
            assert shows(shown.group(1), slo["sla"]["threshold"]), meta
            assert shown.group(2) == ("met" if slo["sla"]["met"] else "missed"), meta
        assert card.locator(".badge").first.text_content() == slo["state"]
        for label, key in (("target", "target"), ("current", "current"), ("budget", "budget_remaining")):
            text = card.locator(f"[data-value={label}]").text_content()
            assert shows(text, slo[key]), (slo["name"], label, text, slo[key])
    assert "[object Object]" not in page.text_content("body")
    page.screenshot(path=str(ARTIFACTS / "seeded-slo.png"), full_page=True)


def test_feedback_tiles_equal_the_admin_api(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.gateway.url + "/ui/feedback")
    page.wait_for_selector("#feedback-tiles .tile")
    overall = admin(seeded, "/admin/feedback/summary", by="day", since="30d")["overall"]
    assert overall["feedback"] == 3
    for name, key in (("responses", "feedback"), ("csat", "csat"), ("nps", "nps")):
        text = page.text_content(f"#feedback-tiles [data-value={name}]")
        assert shows(text, overall[key]), (name, text, overall[key])
    assert number(page.text_content("#feedback-tiles [data-value=responses]")) == 3


def test_error_groups_equal_the_admin_api(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.gateway.url + "/ui/errors")
    page.wait_for_selector("#error-groups table")
    groups = admin(seeded, "/admin/errors", since="24h")["data"]
    assert sum(group["count"] for group in groups) >= 3  # the upstream 500s
    rows = page.eval_on_selector_all(
        "#error-groups tbody tr", "rows => rows.map(r => [r.dataset.signature, r.querySelector('td.num').textContent])"
    )
    assert rows == [[group["signature"], f"{group['count']:,}"] for group in groups]
