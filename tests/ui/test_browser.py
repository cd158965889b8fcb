"""End to end in headless Chromium: the overview draws charts from live traffic, search finds a request
and its detail shows the conversation. Screenshots land in tests/ui/artifacts/ for a person to look at."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway, wait_until
from tests.ui.conftest import ARTIFACTS, Traffic, dashboard_config, wait_for_records

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; fails the test on any script error or failed static file."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            # HTTP statuses are the tests' business (a route not built yet answers 404; a bad key 401).
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.on(
        "response",
        lambda response: (
            problems.append(f"{response.status} {response.url}")
            if "/ui/static/" in response.url and response.status >= 400
            else None
        ),
    )
    yield page
    context.close()
    assert problems == []


def points(page: Any, selector: str) -> int:
    return int(page.get_attribute(selector, "data-points") or 0)


def test_overview_draws_live_charts(page: Any, dashboard: Gateway, traffic: Traffic) -> None:
    page.goto(dashboard.url + "/ui")
    page.wait_for_selector("#chart-traffic canvas")
    page.wait_for_function("() => document.querySelectorAll('.chart canvas').length >= 4")
    for chart in ("traffic", "latency", "cost", "tokens"):
        assert points(page, f"#chart-{chart}") > 0, chart
    page.wait_for_function("() => document.querySelector('[data-tile=requests]').textContent !== '—'")
    before = int(page.text_content("[data-tile=requests]").replace(",", ""))
    assert before >= 10
    assert "up/" in page.text_content("#deployments") or "up" in page.text_content("#deployments")
    page.wait_for_function("() => !document.querySelector('#usage').textContent.includes('Loading')")
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)

    # Live: new traffic shows up without a reload (the page polls every few seconds).
    client = openai.OpenAI(base_url=dashboard.base_url, api_key="unused", max_retries=0)
    for i in range(3):
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": f"live {i}"}])
    wait_for_records(dashboard, "limit=50", count=before + 3)
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-tile=requests]').textContent.replace(/,/g, '')) >= {before + 3}",
        timeout=15_000,
    )


def test_search_and_open_a_request(page: Any, dashboard: Gateway, traffic: Traffic) -> None:
    page.goto(dashboard.url + "/ui/requests")
    page.fill("input[name=q]", traffic.word)
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**/ui/requests?q=*")
    rows = page.locator("table.requests tbody tr")
    assert rows.count() == 1
    page.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)
    rows.first.locator("td.snippet").click()  # the whole row opens the request
    page.wait_for_url(f"**/ui/requests/{traffic.request_id}")
    assert page.text_content("#request-id") == traffic.request_id
    messages = page.text_content("#messages")
    assert f"Tell me about the {traffic.word} please" in messages and "You are a terse assistant." in messages
    assert f"The answer about {traffic.word} is forty-two." in page.text_content("#output")
    assert "16" in page.text_content(".tiles")  # 7 prompt + 9 completion tokens
    page.screenshot(path=str(ARTIFACTS / "request.png"), full_page=True)


def test_other_pages_degrade_gracefully(page: Any, dashboard: Gateway, traffic: Traffic) -> None:
    for name, ready in [
        ("slo", "#slos [data-slo] .chart[data-points]"),
        ("errors", "#error-groups :is(table, [data-unavailable], .empty)"),
        ("feedback", "#feedback-model :is(table, [data-unavailable], p)"),
        ("guard", ".card"),
    ]:
        page.goto(f"{dashboard.url}/ui/{name}")
        page.wait_for_selector(ready)
        page.wait_for_function("() => !document.body.textContent.includes('Loading…')")
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


ADMIN_KEY = "og-ui-test-admin-key"


@pytest.fixture(scope="module")
def secured(ui_upstream: FakeUpstream) -> Iterator[Gateway]:
    """The same gateway with auth on: a bootstrap admin key, tenant keys created through the admin API."""
    gateway = start_gateway(
        {**dashboard_config(ui_upstream.base_url), "auth": {"enabled": True, "admin_key": ADMIN_KEY}}
    )
    yield gateway
    gateway.server.stop()


def test_login_with_a_tenant_key_sees_only_its_tenant(page: Any, secured: Gateway) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def new_key(role: str) -> str:
        body = {"tenant": "acme", "role": role, "name": f"acme {role}"}
        response = httpx.post(secured.url + "/admin/keys", json=body, headers=admin)
        assert response.status_code == 201, response.text
        return str(response.json()["secret"])

    viewer, service = new_key("viewer"), new_key("service")
    word = "quokka" + uuid.uuid4().hex[:8]
    for api_key, who in ((service, "acme"), (ADMIN_KEY, "operator")):
        client = openai.OpenAI(base_url=secured.base_url, api_key=api_key, max_retries=0)
        client.chat.completions.create(model="up", messages=[{"role": "user", "content": f"{who} asks about {word}"}])
    assert wait_until(
        lambda: len(httpx.get(f"{secured.url}/admin/requests?q={word}", headers=admin).json()["data"]) == 2
    )

    page.goto(secured.url + "/ui/requests")
    page.wait_for_url("**/ui/login*")  # no cookie yet: to the login page
    for key, expected in (("og-not-a-key", "Invalid API key"), (service, "cannot use the dashboard")):
        page.fill("#key", key)
        page.click("button[type=submit]")
        assert expected in page.text_content(".error")
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    page.fill("#key", viewer)
    page.click("button[type=submit]")
    page.wait_for_selector("#chart-traffic canvas")
    assert "acme" in page.text_content(".who") and "viewer" in page.text_content(".who")
    [cookie] = [c for c in page.context.cookies() if c["name"] == "opsgate_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert viewer not in cookie["value"] and viewer.split("_")[-1] not in cookie["value"]  # a session id, not the key

    page.goto(f"{secured.url}/ui/requests?q={word}")
    rows = page.locator("table.requests tbody tr")
    assert rows.count() == 1 and "acme asks" in rows.first.text_content()
    page.screenshot(path=str(ARTIFACTS / "tenant-search.png"), full_page=True)

    page.click("text=Log out")
    page.wait_for_url("**/ui/login")
    page.goto(secured.url + "/ui")
    page.wait_for_url("**/ui/login*")
    # Logout ended the session on the server: a copy of the cookie is refused too.
    replay = httpx.get(secured.url + "/ui", cookies={"opsgate_session": cookie["value"]}, follow_redirects=False)
    assert replay.status_code == 303 and replay.headers["location"] == "/ui/login"
