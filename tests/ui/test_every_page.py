"""Every dashboard page loads in Chromium without a console error, a script error or a failed request,
evaluation, release, experiment and prompt pages included (seeded with real runs, a canary and a prompt)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import ARTIFACTS, Seeded, watch_console

pytestmark = pytest.mark.timeout(240)


def pages(seeded: Seeded) -> list[str]:
    first = seeded.guard_ids[1]
    baseline, candidate = seeded.runs
    return [
        "/ui",
        "/ui/slo",
        "/ui/requests",
        f"/ui/requests/{first}",
        "/ui/errors",
        "/ui/feedback",
        "/ui/guard",
        "/ui/evals",
        f"/ui/evals/runs/{baseline}",
        f"/ui/evals/compare?baseline={baseline}&candidate={candidate}",
        "/ui/releases",
        "/ui/prompts/greeting",
        "/ui/drift",
        "/ui/login",
    ]


def test_every_page_loads_without_console_errors(browser: Any, seeded: Seeded) -> None:
    url = seeded.gateway.url
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    problems = watch_console(page)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    checked = []
    for path in pages(seeded):
        response = page.goto(url + path)
        assert response is not None
        if path == "/ui/drift" and response.status in (404, 501):
            # The drift page (issue 15) says "not available" until the drift history exists: the page's
            # own status is the only console message allowed; no script may fail.
            assert all("Failed to load resource" in p for p in problems), problems
            problems.clear()
            failed.clear()
            continue
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")
        page.wait_for_function("() => !document.body.textContent.includes('Loading…')")
        assert "[object Object]" not in page.text_content("body"), path
        assert "undefined" not in page.text_content("main"), path
        assert "NaN" not in page.text_content("main"), path
        assert problems == [] and failed == [], path
        # One file per kind of page (ids replaced), so reruns overwrite instead of piling up.
        name = "-".join(part if i < 2 else "detail" for i, part in enumerate(path.split("?")[0].strip("/").split("/")))
        page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)
        checked.append(path)
    context.close()
    assert len(checked) >= len(pages(seeded)) - 1


def test_experiment_page_loads_without_console_errors(browser: Any, seeded: Seeded) -> None:
    # On PostgreSQL this page answered 500 until releases/metrics.py stopped putting a literal '%' in its
    # SQL (psycopg read it as a placeholder); fixed in ad71f8f.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
    page = context.new_page()
    problems = watch_console(page)
    response = page.goto(f"{seeded.gateway.url}/ui/experiments/{seeded.experiment}")
    assert response is not None and response.status == 200
    page.wait_for_load_state("networkidle")
    assert "Verdict" in page.text_content("main") and "canary" in page.text_content("main")
    page.screenshot(path=str(ARTIFACTS / "page-ui-experiments-detail.png"), full_page=True)
    context.close()
    assert problems == []
