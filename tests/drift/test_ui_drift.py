"""``/ui/drift`` over real HTTP on loopback through the real gateway app: the operator sees every series, a
tenant's key only its own; one alias's page; one check's full report; hostile text; the page in Chromium."""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from opsgate.drift.checker import DriftChecker
from opsgate.drift.engine import Span
from opsgate.drift.history import DriftHistory
from tests.drift.test_report import HOSTILE, make_result, make_test
from tests.drift.traffic import prompt
from tests.fake_upstream import FakeUpstream
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, start_gateway, wait_until
from tests.ui.conftest import ARTIFACTS, CHROMIUM, dashboard_config

ADMIN_KEY = "og-drift-ui-admin"
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
NOW = time.time()
GLOBEX_SECRET = "globex-only sentence: share of 'fr' prompts 1% → 60%"
ACME_SENTENCE = "acme sentence: mean answer length -40%"


def save(gateway: Gateway, result: dict[str, Any]) -> None:
    """Store a check result the way the drift monitor does (the real history, in the gateway's record store)."""
    DriftHistory(gateway.app.state.gateway.record_log.store).add(result)


def checks(alias: str, tenant: str | None, sentence: str, count: int = 5, **latest: Any) -> list[dict[str, Any]]:
    """``count`` hourly checks, the newest drifted with ``sentence`` as its moved feature's summary."""
    results = []
    for i in range(count):
        tests = [make_test("prompt_language", i == 0, 0.3, summary=sentence if i == 0 else "steady")]
        tests += [make_test("answer_length", False, 0.01, summary="answer length steady")]
        result = make_result(
            alias=alias, tenant=tenant, checked_at=NOW - 3600 * i, drifted=i == 0, score=0.3 if i == 0 else 0.0
        )
        results.append(result | {"tests": tests} | (latest if i == 0 else {}))
    return results


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    """A gateway with auth on, whose drift history holds four series: gateway-wide, acme, globex, team/chat."""
    upstream = FakeUpstream().start()
    gateway = start_gateway({**dashboard_config(upstream.base_url), "auth": {"enabled": True, "admin_key": ADMIN_KEY}})
    for result in (
        checks("smollm2", None, "gateway-wide sentence: share of 'de' prompts 2% → 31%")
        + checks("smollm2", "acme", ACME_SENTENCE)
        + checks("smollm2", "globex", GLOBEX_SECRET)
        + checks("team/chat", None, "unused", count=3, drifted=False, score=0.0, tests=[make_test("x", False, 0.0)])
        + [make_result(alias="old", checked_at=NOW - 40 * 86400)]  # outside the default 30 days
    ):
        save(gateway, result)
    yield gateway
    gateway.server.stop()
    upstream.stop()


def tenant_key(gateway: Gateway, tenant: str, role: str = "viewer") -> dict[str, str]:
    response = httpx.post(gateway.url + "/admin/keys", json={"tenant": tenant, "role": role}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}


def series_on(html: str) -> set[tuple[str, str]]:
    return set(re.findall(r'data-alias="([^"]*)" data-tenant="([^"]*)"', html))


def test_operator_sees_every_series(gateway: Gateway) -> None:
    page = httpx.get(gateway.url + "/ui/drift", headers=OPERATOR)
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert series_on(page.text) == {("smollm2", ""), ("smollm2", "acme"), ("smollm2", "globex"), ("team/chat", "")}
    assert "drift detected on smollm2: 1 of 2 features moved" in page.text
    assert "no drift on team/chat: 0 of 1 feature moved" in page.text
    assert "share of &#39;de&#39; prompts 2% → 31%" in page.text and "globex-only sentence" in page.text
    assert 'href="/ui/drift/team%2Fchat"' in page.text and 'href="/ui/drift/smollm2?tenant=acme"' in page.text
    assert '<script src="/ui/static/drift.js" defer></script>' in page.text
    # Drifting series come before quiet ones; the chart data holds 5 hourly scores, oldest first.
    assert page.text.index('data-alias="team/chat"') > page.text.index('data-alias="smollm2"')
    assert re.search(r'"score": \[0\.0, 0\.0, 0\.0, 0\.0, 0\.3\]', page.text)
    longer = httpx.get(gateway.url + "/ui/drift", params={"since": "90d"}, headers=OPERATOR)
    assert ("old", "") in series_on(longer.text)
    odd = httpx.get(gateway.url + "/ui/drift", params={"since": "1000y"}, headers=OPERATOR)
    assert odd.status_code == 200 and ("old", "") not in series_on(odd.text)  # an unknown window: the default
    nul = httpx.get(gateway.url + "/ui/drift", params={"since": "7d\x00"}, headers=OPERATOR)
    assert nul.status_code == 400  # the gateway's URL guard, before the page


def test_a_tenant_sees_only_its_own_checks(gateway: Gateway) -> None:
    acme = tenant_key(gateway, "acme")
    page = httpx.get(gateway.url + "/ui/drift", headers=acme)
    assert page.status_code == 200
    assert series_on(page.text) == {("smollm2", "acme")}
    assert ACME_SENTENCE in page.text and "globex" not in page.text and "gateway-wide" not in page.text
    # Its alias page is its own series, whatever tenant the URL names.
    for params in ({}, {"tenant": "globex"}, {"tenant": ""}):
        own = httpx.get(gateway.url + "/ui/drift/smollm2", params=params, headers=acme)
        assert own.status_code == 200, params
        assert ACME_SENTENCE in own.text and "globex-only" not in own.text and "gateway-wide" not in own.text
    # Another tenant's report: not found, and nothing of it in the answer.
    other = httpx.get(gateway.url + "/ui/drift/smollm2", params={"tenant": "globex", "at": repr(NOW)}, headers=acme)
    assert other.status_code == 200 and "globex-only" not in other.text  # acme's own check at that time
    assert httpx.get(gateway.url + "/ui/drift/team%2Fchat", headers=acme).status_code == 404
    operator = httpx.get(
        gateway.url + "/ui/drift/smollm2", params={"tenant": "globex", "at": repr(NOW)}, headers=OPERATOR
    )
    assert operator.status_code == 200 and "globex-only sentence" in operator.text
    nobody = tenant_key(gateway, "initech")
    empty = httpx.get(gateway.url + "/ui/drift", headers=nobody)
    assert empty.status_code == 200 and "No drift checks in the last 30d" in empty.text and not series_on(empty.text)
    assert httpx.get(gateway.url + "/ui/drift", follow_redirects=False).status_code == 303  # no key: log in
    service = tenant_key(gateway, "acme", "service")  # a key for /v1 only
    for path in ("/ui/drift", "/ui/drift/smollm2", f"/ui/drift/smollm2?at={NOW!r}"):
        refused = httpx.get(gateway.url + path, headers=service)
        assert refused.status_code == 403 and ACME_SENTENCE not in refused.text, path


def test_alias_page_shows_the_latest_check_and_every_check(gateway: Gateway) -> None:
    page = httpx.get(gateway.url + "/ui/drift/smollm2", headers=OPERATOR)
    assert page.status_code == 200
    assert "gateway-wide sentence" in page.text and "acme sentence" not in page.text  # the gateway-wide series
    tests_table = page.text[page.text.index('id="tests"') :]
    assert tests_table.index("Prompt language") < tests_table.index("Answer length")  # in the order given
    checks_table = page.text[page.text.index('id="checks"') :]
    links = re.findall(r'href="(/ui/drift/smollm2\?at=[^"]+)"', checks_table)
    assert len(links) == 5
    report = httpx.get(gateway.url + links[0].replace("&amp;", "&"), headers=OPERATOR)
    assert report.status_code == 200 and report.text.startswith("<!doctype html>")
    assert report.headers["content-security-policy"].startswith("default-src 'none'")
    assert "drift detected on smollm2: 1 of 2 features moved" in report.text
    assert "(5 checks)" in report.text and report.text.count('src="data:image/png;base64,') == 3
    older = httpx.get(gateway.url + links[-1].replace("&amp;", "&"), headers=OPERATOR)
    assert "no drift on smollm2" in older.text and "(1 check)" in older.text  # history up to that check only
    slashed = httpx.get(gateway.url + "/ui/drift/team%2Fchat", headers=OPERATOR)
    assert slashed.status_code == 200 and "no drift on team/chat" in slashed.text


@pytest.mark.parametrize("at", ["nan", "inf", "abc", "", "1e400", "-1e300", "1" * 500])
def test_a_bad_report_time_is_a_400_page(gateway: Gateway, at: str) -> None:
    response = httpx.get(gateway.url + "/ui/drift/smollm2", params={"at": at}, headers=OPERATOR)
    assert response.status_code == 400 and "at must be" in response.text


def test_unknown_things_are_404_pages(gateway: Gateway) -> None:
    for path, params in [
        ("/ui/drift/nope", {}),
        ("/ui/drift/smollm2", {"at": repr(NOW - 17)}),
        ("/ui/drift/smollm2", {"tenant": "nobody"}),
        ("/ui/drift/smollm2", {"tenant": "a\x1fb"}),
        ("/ui/drift/%3Cscript%3E", {}),
        ("/ui/drift/" + "a" * 300, {}),
    ]:
        response = httpx.get(gateway.url + path, params=params, headers=OPERATOR)
        assert response.status_code == 404, (path, params)
        assert "<script>" not in response.text


def test_hostile_text_is_escaped_on_the_pages(gateway: Gateway) -> None:
    hostile = make_result(
        alias="hostile",
        tenant=None,
        checked_at=NOW - 10,
        tests=[make_test("evil", True, 0.5, label=HOSTILE, summary=HOSTILE + "</script>")],
    )
    save(gateway, hostile)
    save(gateway, make_result(alias=HOSTILE, checked_at=NOW - 10))  # not a valid alias name: shown, escaped
    for path in ("/ui/drift", "/ui/drift/hostile", f"/ui/drift/hostile?at={NOW - 10!r}"):
        page = httpx.get(gateway.url + path, headers=OPERATOR)
        assert page.status_code == 200, path
        assert "window.__pwned" in page.text and "<script>window" not in page.text and "<img src=x" not in page.text
        # The only scripts are ours: uPlot, app.js, drift.js and the JSON data island.
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert all(s.startswith(('<script src="/ui/static/', '<script type="application/json"')) for s in scripts)
    page = httpx.get(gateway.url + "/ui/drift", headers=OPERATOR)
    assert 'href="/ui/drift/hostile"' in page.text and 'href="/ui/drift/%3Cscript' not in page.text  # no dead link
    data = page.text.split('<script type="application/json" id="drift-data">')[1].split("</script>")[0]
    assert "<" not in data


def test_insufficient_latest_check(gateway: Gateway) -> None:
    save(gateway, make_result(alias="quiet", checked_at=NOW - 7200, drifted=False, score=0.0))
    save(
        gateway,
        {
            "alias": "quiet",
            "tenant": None,
            "checked_at": NOW - 5,
            "drifted": False,
            "score": 0.0,
            "insufficient": "current window has 12 requests (needs 100)",
        },
    )
    page = httpx.get(gateway.url + "/ui/drift/quiet", headers=OPERATOR)
    assert page.status_code == 200
    assert "not enough data on quiet: current window has 12 requests (needs 100)" in page.text
    assert re.search(r'"score": \[0\.0, null\]', page.text)  # an insufficient check is a gap, not a zero


@pytest.fixture()
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = chromium.new_context(viewport={"width": 1440, "height": 1000})
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if "/ui/static/" in r.url and r.status >= 400 else None,
        )
        yield page, problems
        context.close()
        chromium.close()


@pytest.mark.timeout(120)
def test_the_page_draws_in_chromium(gateway: Gateway, browser_page: tuple[Any, list[str]]) -> None:
    page, problems = browser_page
    login = httpx.post(
        gateway.url + "/ui/login", data={"key": ADMIN_KEY}, headers={"Origin": gateway.url}, follow_redirects=False
    )
    session = login.cookies["opsgate_session"]
    page.context.add_cookies([{"name": "opsgate_session", "value": session, "url": gateway.url}])
    page.goto(gateway.url + "/ui/drift")
    page.wait_for_function("() => document.querySelectorAll('.drift-series .chart canvas').length >= 4")
    assert int(page.get_attribute("[data-alias='smollm2'][data-tenant=''] .chart", "data-points") or 0) == 5
    assert page.evaluate("() => window.__pwned === undefined")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "drift.png"), full_page=True)
    page.click("[data-alias='smollm2'][data-tenant=''] .drift-title a")
    page.wait_for_url("**/ui/drift/smollm2")
    page.wait_for_selector(".chart canvas")
    page.screenshot(path=str(ARTIFACTS / "drift-alias.png"), full_page=True)
    page.click("#verdict a")  # the latest check's full report
    page.wait_for_url("**/ui/drift/smollm2?at=*")
    assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.evaluate("() => document.images.length") == 3
    page.screenshot(path=str(ARTIFACTS / "drift-report.png"), full_page=True)
    assert problems == []


def test_on_postgresql_a_tenant_sees_only_its_own_checks() -> None:
    """The same boundary with the history in PostgreSQL (the real server, a schema of its own)."""
    upstream = FakeUpstream().start()
    try:
        with fresh_pg_schema("opsgate_drift_ui") as url:
            config = {**dashboard_config(upstream.base_url), "auth": {"enabled": True, "admin_key": ADMIN_KEY}}
            config["record"] = {**config["record"], "store": url}
            gateway = start_gateway(config)
            try:
                for result in checks("pg-model", "acme", ACME_SENTENCE) + checks("pg-model", "globex", GLOBEX_SECRET):
                    save(gateway, result)
                save(gateway, make_result(alias="pg-model", tenant=None, checked_at=NOW - 30))
                acme = tenant_key(gateway, "acme")
                page = httpx.get(gateway.url + "/ui/drift", headers=acme)
                assert series_on(page.text) == {("pg-model", "acme")} and "globex" not in page.text
                own = httpx.get(gateway.url + "/ui/drift/pg-model", params={"tenant": "globex"}, headers=acme)
                assert ACME_SENTENCE in own.text and "globex" not in own.text
                assert (
                    len(re.findall(r'href="/ui/drift/pg-model\?tenant=acme&amp;at=', own.text)) == 6
                )  # 5 checks + the latest's
                report = httpx.get(gateway.url + "/ui/drift/pg-model", params={"at": repr(NOW)}, headers=acme)
                assert report.status_code == 200 and "drift detected on pg-model (tenant acme)" in report.text
                everything = httpx.get(gateway.url + "/ui/drift", headers=OPERATOR)
                assert series_on(everything.text) == {("pg-model", ""), ("pg-model", "acme"), ("pg-model", "globex")}
                wide = httpx.get(gateway.url + "/ui/drift/pg-model", headers=OPERATOR)  # the all-tenant series only
                assert wide.status_code == 200 and ACME_SENTENCE not in wide.text
                assert len(re.findall(r'href="/ui/drift/pg-model\?at=', wide.text)) == 2  # 1 check + the latest's
            finally:
                gateway.server.stop()
    finally:
        upstream.stop()


@pytest.mark.timeout(180)
def test_a_check_of_real_traffic_shows_on_the_page() -> None:
    """End to end: English then German prompts through /v1 (the openai SDK), the drift collector's summaries,
    the engine's check stored in the history, and the page and report naming the language that moved."""
    upstream = FakeUpstream().start()
    drift = {
        "enabled": True,
        "embeddings": False,
        "bucket": "1s",
        "flush_interval": 0.1,
        "interval": "7d",
        "language_sample_rate": 1.0,  # every prompt's language (the default samples 20%)
        "min_samples": {"requests": 20, "answers": 10},
    }
    gateway = start_gateway({**dashboard_config(upstream.base_url), "drift": drift})
    try:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        rng = random.Random(7)

        def send(language: str, n: int) -> None:
            for _ in range(n):
                client.chat.completions.create(
                    model="up", messages=[{"role": "user", "content": prompt(rng, language=language)}]
                )

        start = math.floor(time.time())
        send("en", 30)
        middle = math.floor(time.time()) + 1
        time.sleep(max(0.0, middle - time.time()))  # the windows are whole 1 s buckets
        send("de", 30)
        end = math.floor(time.time()) + 1
        checker = DriftChecker(gateway.config, gateway.app.state.gateway.record_log.store)
        spans = {"reference": Span(start, middle), "current": Span(middle, end)}

        def summarised() -> bool:  # the collector flushes in the background
            result = checker.check("up", now=end + 1, store=False, **spans)
            return not result["insufficient"] and result["current"]["requests"] >= 30

        assert wait_until(summarised, timeout=60)
        result = checker.check("up", now=end + 1, **spans)
        assert result["drifted"], result.get("headline")

        page = httpx.get(gateway.url + "/ui/drift")
        assert page.status_code == 200 and ("up", "") in series_on(page.text)
        assert re.search(r"drift detected on up: \d+ of \d+ features? moved", page.text)
        assert "share of &#39;de&#39; prompts" in page.text  # the moved feature's sentence
        report = httpx.get(gateway.url + "/ui/drift/up", params={"at": repr(end + 1.0)})
        assert report.status_code == 200 and "Prompt language" in report.text
        assert report.text.count('src="data:image/png;base64,') >= 2  # the score over time and the languages
    finally:
        gateway.server.stop()
        upstream.stop()


def test_the_chart_holds_every_check_in_the_window_the_table_the_newest(gateway: Gateway) -> None:
    now = time.time() - 60  # the page's 24 h window holds i = 0..95 (NOW is from collection time, maybe long ago)
    for i in range(250):  # 250 checks every 15 minutes, newest first; every 50th drifted
        save(gateway, make_result(alias="busy", checked_at=now - 900 * i, drifted=i % 50 == 0, score=0.01 * (i % 50)))
    page = httpx.get(gateway.url + "/ui/drift/busy", headers=OPERATOR)
    assert page.status_code == 200 and "(newest 200 of 250)" in page.text
    data = orjson.loads(page.text.split('id="drift-data">')[1].split("</script>")[0])
    [chart] = data
    assert len(chart["x"]) == 250 and chart["x"] == sorted(chart["x"])
    assert sum(1 for v in chart["drifted"] if v is not None) == 5
    overview = httpx.get(gateway.url + "/ui/drift", params={"since": "24h"}, headers=OPERATOR)
    assert "96 checks, 2 with drift" in overview.text  # the last 24 h of them: i = 0..95
