"""The dashboard defects of issue 17, each checked in Chromium on seeded traffic: axis labels that fit,
guard badges coloured by verdict, whole request ids, paged guard events, a nav that fits at 820 px."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.ui.views import GUARD_EVENTS_PER_PAGE
from tests.ui.conftest import ARTIFACTS, Seeded, watch_console

pytestmark = pytest.mark.timeout(240)

# Every y axis of every uPlot chart on the page: is its widest tick label narrower than the room uPlot
# gave the axis (its size less the tick and the gap)? A label wider than that is clipped at the edge.
CLIPPED_AXIS_LABELS = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.chart')) {
    const u = el.uplot;
    if (!u) continue;
    u.axes.forEach((axis, i) => {
      if (!axis.show || axis.side % 2 === 0) return;
      const labels = (axis._values || []).filter((v) => v != null).map(String);
      u.ctx.font = axis.font[0];
      const widest = Math.max(0, ...labels.map((l) => u.ctx.measureText(l).width)) / devicePixelRatio;
      const room = axis._size - axis.ticks.size - axis.gap;
      if (widest > room + 0.5) {
        out.push(`${el.id} axis ${i}: [${labels.join(', ')}] need ${widest.toFixed(1)} px, have ${room}`);
      }
    });
  }
  return out;
}"""


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="en-US")
    page = context.new_page()
    problems = watch_console(page)
    yield page
    context.close()
    assert problems == []


def test_axis_labels_are_never_clipped(page: Any, seeded: Seeded) -> None:
    url = seeded.gateway.url
    page.goto(url + "/ui")
    page.uncheck("#live")
    windows = page.eval_on_selector_all("#window option", "options => options.map(o => o.value)")
    for window in windows:
        page.select_option("#window", window)
        page.wait_for_function("() => document.querySelectorAll('.chart canvas').length >= 4")
        page.wait_for_function("() => Number(document.getElementById('chart-latency').dataset.points) > 0")
        labels = page.evaluate("() => document.getElementById('chart-latency').uplot.axes[1]._values")
        assert any(re.fullmatch(r"\d{4} ms|\d+(\.\d)? s", str(v)) for v in labels if v), labels  # a second or more
        assert page.evaluate(CLIPPED_AXIS_LABELS) == [], window
    page.screenshot(path=str(ARTIFACTS / "axes-overview.png"), full_page=True)
    for path, ready in (
        ("/ui/slo", "#slos .chart canvas"),
        ("/ui/feedback", "#chart-csat canvas"),
        ("/ui/guard?since=1h", "#chart-guard-scanner canvas"),
        ("/ui/errors", "#chart-errors canvas"),
    ):
        page.goto(url + path)
        page.wait_for_selector(ready)
        assert page.evaluate(CLIPPED_AXIS_LABELS) == [], path


def test_guard_badges_follow_the_verdict(page: Any, seeded: Seeded) -> None:
    url = seeded.gateway.url
    page.goto(url + "/ui/guard?since=1h")
    rows = page.locator("#guard-events tbody tr")
    assert rows.count() > 0
    for i in range(rows.count()):
        badge = rows.nth(i).locator("[data-verdict]")
        assert badge.text_content() == "fail"
        assert "bad" in str(badge.get_attribute("class")), rows.nth(i).text_content()  # a redaction found PII too
    # A request the guard let through: the blocking scanner passed, so its badge is not red.
    plain = httpx.get(url + "/admin/requests", params={"model": "up", "status": "200", "limit": "1"}).json()["data"]
    page.goto(f"{url}/ui/requests/{plain[0]['id']}")
    verdicts = page.locator("#guard [data-verdict]")
    assert verdicts.count() == 2
    for i in range(verdicts.count()):
        badge = verdicts.nth(i)
        assert badge.text_content() == "pass" and "ok" in str(badge.get_attribute("class"))


def guard_event_ids(page: Any) -> tuple[list[str], str | None]:
    """The request ids the events table shows and links to, and the link to the next page."""
    links = page.locator("#guard-events tbody tr td.request a")
    shown = [links.nth(i).text_content().strip() for i in range(links.count())]
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [f"/ui/requests/{rid}" for rid in shown]  # the whole id, as linked
    older = page.locator("a[rel=next]")
    return shown, older.get_attribute("href") if older.count() else None


def test_guard_events_show_whole_ids_and_page_through_every_event(page: Any, seeded: Seeded) -> None:
    url = seeded.gateway.url
    page.goto(url + "/ui/guard?since=1h")
    assert page.text_content("[data-value=events]").strip() == str(len(seeded.guard_ids))
    seen: list[str] = []
    pages = 0
    nxt: str | None = "first"
    while nxt:
        ids, nxt = guard_event_ids(page)
        assert 0 < len(ids) <= GUARD_EVENTS_PER_PAGE
        seen.extend(ids)
        pages += 1
        if nxt:
            page.goto(url + nxt)
    assert pages == 2 and len(seen) == len(set(seen))
    assert set(seen) == set(seeded.guard_ids)  # every event once, newest first
    assert seen == sorted(seen, key=seeded.guard_ids.index, reverse=True)
    page.screenshot(path=str(ARTIFACTS / "guard-page-2.png"), full_page=True)


@pytest.mark.parametrize("width", [820, 1024, 1250, 1440])
def test_nav_fits_at_820_px_and_wider(browser: Any, seeded: Seeded, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    problems = watch_console(page)
    for path in ("/ui", "/ui/requests", "/ui/guard"):
        page.goto(seeded.gateway.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
        hidden = page.evaluate(
            """() => [...document.querySelectorAll('.topbar .tabs a, .topbar .who > *')].filter((a) => {
                const r = a.getBoundingClientRect();
                const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                return r.left < 0 || r.right > window.innerWidth || !(hit && (hit === a || a.contains(hit)));
            }).map((a) => a.textContent.trim())"""
        )
        assert hidden == [], path
    labels = page.eval_on_selector_all(
        ".tabs a", "links => links.map(a => [a.textContent.trim(), a.getAttribute('href')])"
    )
    assert ["Drift", "/ui/drift"] in labels
    page.screenshot(path=str(ARTIFACTS / f"nav-{width}.png"))
    context.close()
    assert problems == []
