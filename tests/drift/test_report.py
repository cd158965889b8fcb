"""The drift report renderers on constructed results: drifted, quiet, not enough data, hostile text, NaN."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest

from opsgate.drift.report import render_html, render_markdown

NOW = 1_765_000_000.0
HOSTILE = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">'


def make_test(feature: str, drifted: bool, effect: float, **extra: Any) -> dict[str, Any]:
    return {
        "feature": feature,
        "label": feature.replace("_", " ").capitalize(),
        "side": "input",
        "kind": "categorical",
        "test": "chi2",
        "statistic": 10.0,
        "p_value": 1e-9 if drifted else 0.6,
        "p_adjusted": 1e-8 if drifted else 0.9,
        "effect": effect,
        "effect_name": "total variation distance",
        "drifted": drifted,
        "summary": f"{feature} moved by {effect}",
        "reference_distribution": {"a": 0.5, "b": 0.5},
        "current_distribution": {"a": 0.5 + effect / 2, "b": 0.5 - effect / 2},
        "reference_stats": None,
        "current_stats": None,
        **extra,
    }


def make_result(**overrides: Any) -> dict[str, Any]:
    tests = [make_test(f"moved_{i}", True, 0.3 - i / 100) for i in range(3)]
    tests += [make_test(f"still_{i}", False, 0.01) for i in range(11)]
    tests[-1] |= {  # as the engine writes an embedding test: sample counts, nothing to draw
        "kind": "embedding",
        "test": "mmd_permutation",
        "reference_distribution": None,
        "current_distribution": None,
        "reference_stats": {"samples": 512.0},
        "current_stats": {"samples": 500.0},
    }
    tests[1] |= {
        "kind": "numeric",
        "test": "ks",
        "summary": "mean answer length -40%",
        "reference_stats": {"mean": 512.0, "p50": 480.0, "p95": 1300.0},
        "current_stats": {"mean": 307.0, "p50": 290.0, "p95": 800.0},
        "reference_distribution": None,
        "current_distribution": None,
    }
    result: dict[str, Any] = {
        "alias": "smollm2",
        "tenant": None,
        "checked_at": NOW,
        "reference": {
            "kind": "trailing",
            "start": NOW - 8 * 86400,
            "end": NOW - 86400,
            "requests": 5120,
            "embedded": 512,
        },
        "current": {"start": NOW - 86400, "end": NOW, "requests": 4980, "embedded": 500},
        "alpha": 0.01,
        "drifted": True,
        "score": 0.3,
        "insufficient": None,
        "tests": tests,
    }
    return result | overrides


def images(html: str) -> list[bytes]:
    sources = re.findall(r'<img[^>]* src="([^"]*)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in sources), sources
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def test_drifted_result_as_markdown() -> None:
    text = render_markdown(make_result())
    assert "**drift detected on smollm2: 3 of 14 features moved**" in text
    assert "| reference | trailing | 2025-11-28 05:46 UTC | 2025-12-05 05:46 UTC | 5,120 | 512 |" in text
    moved_at, tests_at = text.index("## What moved"), text.index("## Tests")
    assert moved_at < tests_at
    assert text.index("mean answer length -40%") < tests_at  # the moved features' sentences come first
    rows = [line for line in text.splitlines() if line.startswith("| Moved") or line.startswith("| Still")]
    assert [r.split(" | ")[0] for r in rows] == ["| Moved 0", "| Moved 1", "| Moved 2"] + [
        f"| Still {i}" for i in range(11)
    ]  # in the order given
    assert "| Moved 0 | input | chi2 | 1.0e-08 | 0.3 (total variation distance) | yes |" in text
    assert "| Still 0 | input | chi2 | 0.900 | 0.01 (total variation distance) |  |" in text


def test_quiet_and_insufficient_results() -> None:
    quiet = make_result(drifted=False, score=0.0, tests=[make_test("a", False, 0.01), make_test("b", False, 0.02)])
    text = render_markdown(quiet)
    assert "**no drift on smollm2: 0 of 2 features moved**" in text and "What moved" not in text

    insufficient = {
        "alias": "smollm2",
        "tenant": "acme",
        "checked_at": NOW,
        "current": {"requests": 12},
        "drifted": False,
        "insufficient": "current window has 12 requests (needs 100)",
        "tests": [],
    }
    text = render_markdown(insufficient)
    assert "**not enough data on smollm2 (tenant acme): current window has 12 requests (needs 100)**" in text
    assert "No tests ran: not enough data." in text and "| current |  | ? | ? | 12 | — |" in text
    html = render_html(insufficient, [])
    assert "not enough data on smollm2 (tenant acme)" in html and "No check with enough data yet." in html
    assert images(html) == []  # nothing to draw, and nothing broken drawn


def test_html_is_self_contained_with_plots() -> None:
    history = [make_result(checked_at=NOW - 3600 * i, score=i / 40, drifted=i % 4 == 0) for i in range(1, 25)]
    history.append(make_result(alias="other-alias", checked_at=NOW - 60))  # not this alias: left out
    history.append(make_result(tenant="acme", checked_at=NOW - 60))  # another scope of it: left out
    history.append(make_result(tenant="", checked_at=NOW - 90000))  # "" is the all-tenant scope too
    html = render_html(make_result(), history)
    assert "drift detected on smollm2: 3 of 14 features moved" in html
    assert "(26 checks)" in html  # 25 from history + the check itself
    pngs = images(html)
    # history + 13 features (12 with shares, 1 with stats; the embedding test has no plot)
    assert len(pngs) == 14 and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    for external in ("http://", "https://", "//cdn", "<link", "<script", "@import", "url("):
        assert external not in html, external
    assert html.index('id="moved"') < html.index('id="tests"')


def test_hostile_strings_are_escaped() -> None:
    hostile_test = make_test(
        "evil",
        True,
        0.5,
        label=HOSTILE,
        summary=f"share of {HOSTILE} | 2% → 31%\x00\n# heading\ud800",
        effect_name="$\\frac{$",
        # Two "$": mathtext would parse this and raise on the bad \frac, if it ever reached the parser.
        reference_distribution={HOSTILE: 0.9, "$\\frac{$": 0.1, "a" * 5000: 0.0},
        current_distribution={HOSTILE: 0.1, "$\\frac{$": 0.9},
    )
    result = make_result(alias=HOSTILE, tenant="t<b>", tests=[hostile_test])
    html = render_html(result, [result])
    assert "<script" not in html and "<img src=x" not in html  # both as text only: "&lt;img src=x …"
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert "t&lt;b&gt;" in html
    assert "\x00" not in html and "\ud800" not in html.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    assert "a" * 400 not in html  # a prompt-sized label is cut
    assert len(images(html)) == 2

    text = render_markdown(result)
    assert "<script>" not in text and "\\<script\\>" in text
    [row] = [line for line in text.splitlines() if line.startswith("| ") and "\\| 2%" in line]
    assert len(re.findall(r"(?<!\\)\|", row)) == 8  # 7 cells: the hostile "|" did not open a new one
    assert "\n# heading" not in text and "\x00" not in text


def test_nan_none_and_missing_keys_render() -> None:
    odd = make_test(
        "odd",
        True,
        float("nan"),
        p_adjusted=float("inf"),
        statistic=None,
        summary=None,
        reference_distribution={"a": float("nan"), "b": "x"},
        current_distribution="not a mapping",
    )
    result: dict[str, Any] = {
        "alias": None,
        "checked_at": float("inf"),
        "score": float("nan"),
        "alpha": "x",
        "drifted": True,
        "reference": None,
        "tests": [odd, {"feature": "bare"}, "not a test", None],
    }
    text = render_markdown(result)
    assert "drift detected on ?: 1 of 2 features moved" in text
    assert "| Odd | input | chi2 | — | — (total variation distance) | yes |" in text
    assert "- **Odd** (input): effect —" in text  # no sentence: the effect stands in
    assert "nan" not in text.lower() and "inf" not in text.lower()
    html = render_html(result, [result, {"checked_at": "soon"}, {}])
    assert "drift detected on ?" in html
    assert images(html) == []  # nothing finite to plot: no empty figure either
    assert "drift" in render_html({}, []) and "no drift on ?: 0 of 0 features moved" in render_markdown({})


def test_the_page_does_not_run_a_hostile_script(tmp_path: Path) -> None:
    """A real browser: no script element, nothing executed, the hostile label shown as text."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not os.path.exists(chromium):
        pytest.skip(f"{chromium} is not installed")
    hostile = make_test("evil", True, 0.5, label=HOSTILE, summary=HOSTILE)
    page_file = tmp_path / "report.html"
    page_file.write_text(render_html(make_result(tests=[hostile]), []), encoding="utf-8")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("dialog", lambda dialog: errors.append("dialog: " + dialog.message))
            page.goto(page_file.as_uri())
            assert page.evaluate("() => document.querySelectorAll('script').length") == 0
            assert page.evaluate("() => window.__pwned === undefined")
            assert HOSTILE in page.text_content("#moved")
            assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
            assert errors == []
        finally:
            browser.close()
