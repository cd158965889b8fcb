"""The dashboard's pages over real HTTP: login, tenant scoping, errors as pages, security headers."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.fake_upstream import FakeUpstream
from tests.support import Gateway, start_gateway
from tests.ui.conftest import Traffic, dashboard_config


def test_pages_render(dashboard: Gateway, traffic: Traffic) -> None:
    for path, marker in [
        ("/ui", 'id="chart-traffic"'),
        ("/ui/slo", 'id="slos"'),
        ("/ui/requests", "Request log"),
        ("/ui/errors", 'id="error-groups"'),
        ("/ui/feedback", 'id="chart-csat"'),
        ("/ui/guard", "Guard events"),
        ("/ui/login", 'name="key"'),
    ]:
        response = httpx.get(dashboard.url + path)
        assert response.status_code == 200, path
        assert marker in response.text, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "<script>" not in httpx.get(dashboard.url + "/ui").text  # no inline script: the CSP forbids it


def test_static_files_are_served(dashboard: Gateway) -> None:
    script = httpx.get(dashboard.url + "/ui/static/vendor/uPlot.iife.min.js")
    assert script.status_code == 200 and "uPlot" in script.text
    assert httpx.get(dashboard.url + "/ui/static/app.js").status_code == 200
    assert httpx.get(dashboard.url + "/ui/static/nope.js").status_code == 404


def test_search_finds_the_request_and_detail_shows_it(dashboard: Gateway, traffic: Traffic) -> None:
    page = httpx.get(dashboard.url + "/ui/requests", params={"q": traffic.word})
    assert page.status_code == 200
    assert f"/ui/requests/{traffic.request_id}" in page.text
    assert page.text.count('class="clickable"') == 1
    detail = httpx.get(f"{dashboard.url}/ui/requests/{traffic.request_id}")
    assert detail.status_code == 200
    assert f"Tell me about the {traffic.word} please" in detail.text
    assert f"The answer about {traffic.word} is forty-two." in detail.text
    assert "You are a terse assistant." in detail.text
    assert "dana" in detail.text


def test_guard_verdicts_show_on_the_request_and_the_guard_page(dashboard: Gateway, traffic: Traffic) -> None:
    detail = httpx.get(f"{dashboard.url}/ui/requests/{traffic.redacted_id}")
    assert detail.status_code == 200 and 'id="guard"' in detail.text
    assert "pii" in detail.text and "redact" in detail.text
    assert "Mail the invoice to" in detail.text
    guard = httpx.get(dashboard.url + "/ui/guard", params={"since": "1h"})
    assert f"/ui/requests/{traffic.redacted_id}" in guard.text
    assert '"input:pii", 1' in guard.text.replace("[", "").replace("]", "")  # the by-scanner chart's data


def test_filters_and_errors(dashboard: Gateway, traffic: Traffic) -> None:
    failed = httpx.get(dashboard.url + "/ui/requests", params={"status": "5xx"})
    assert failed.text.count('class="clickable"') == 2
    bad = httpx.get(dashboard.url + "/ui/requests", params={"status": "teapot"})
    assert bad.status_code == 400 and "status must be" in bad.text  # a page with the message, not a 500
    missing = httpx.get(dashboard.url + "/ui/requests/no-such-id")
    assert missing.status_code == 404 and "No request record" in missing.text


def test_user_text_is_escaped(dashboard: Gateway) -> None:
    page = httpx.get(dashboard.url + "/ui/requests", params={"q": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_login_with_auth_off_keeps_nothing(dashboard: Gateway) -> None:
    response = httpx.post(
        dashboard.url + "/ui/login", data={"key": "sk-test-123", "next": "/ui/requests?q=x"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/ui/requests?q=x"
    # Everyone is the operator: no session; only the cookie of old releases (which held a key) is deleted.
    assert "opsgate_session" not in response.headers.get("set-cookie", "")
    assert "sk-test-123" not in response.headers.get("set-cookie", "")
    # The form may only send people back into the dashboard.
    elsewhere = httpx.post(
        dashboard.url + "/ui/login", data={"key": "k", "next": "https://evil.example/"}, follow_redirects=False
    )
    assert elsewhere.headers["location"] == "/ui"
    empty = httpx.post(dashboard.url + "/ui/login", data={"key": " "}, follow_redirects=False)
    assert empty.status_code == 400 and "Enter an API key" in empty.text
    logout = httpx.post(dashboard.url + "/ui/logout", follow_redirects=False)
    assert logout.status_code == 303 and 'opsgate_session=""' in logout.headers["set-cookie"]


ADMIN_KEY = "og-pages-test-admin"


def _record(record_id: str, tenant: str, text: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "ts": time.time(),
        "tenant": tenant,
        "endpoint": "chat",
        "model": "up",
        "status": 200,
        "latency_ms": 12.0,
        "input_text": text,
        "output_text": "ok",
        "request": orjson.dumps({"model": "up", "messages": [{"role": "user", "content": text}]}).decode(),
        "response": '{"content":"ok"}',
    }


@pytest.fixture(scope="module")
def tenants(ui_upstream: FakeUpstream) -> Iterator[Gateway]:
    """A gateway with auth on whose request log holds records of two tenants."""
    gateway = start_gateway(
        {**dashboard_config(ui_upstream.base_url), "auth": {"enabled": True, "admin_key": ADMIN_KEY}}
    )
    record_log = gateway.app.state.gateway.record_log
    record_log.store.write_batch(
        [_record("rec-acme", "acme", "acme secret plan"), _record("rec-globex", "globex", "globex plan")]
    )
    yield gateway
    gateway.server.stop()


def _key(gateway: Gateway, tenant: str | None, role: str) -> dict[str, str]:
    response = httpx.post(
        gateway.url + "/admin/keys",
        json={"tenant": tenant, "role": role},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['secret']}"}


def test_a_tenant_sees_only_its_own_records(tenants: Gateway) -> None:
    acme = _key(tenants, "acme", "viewer")
    page = httpx.get(tenants.url + "/ui/requests", params={"q": "plan"}, headers=acme)
    assert "/ui/requests/rec-acme" in page.text and "rec-globex" not in page.text
    assert httpx.get(tenants.url + "/ui/requests/rec-acme", headers=acme).status_code == 200
    other = httpx.get(tenants.url + "/ui/requests/rec-globex", headers=acme)
    assert other.status_code == 404 and "globex plan" not in other.text
    operator = httpx.get(
        tenants.url + "/ui/requests", params={"q": "plan"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert "rec-acme" in operator.text and "rec-globex" in operator.text
    assert "acme" in page.text and "viewer" in page.text  # who is logged in shows in the header


def test_with_auth_on_a_browser_without_a_key_goes_to_the_login_page(tenants: Gateway) -> None:
    response = httpx.get(tenants.url + "/ui/requests", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")
    assert httpx.get(tenants.url + "/ui/login").status_code == 200
    assert httpx.get(tenants.url + "/ui/static/app.js").status_code == 200
    # The key is checked at the form: a wrong one is said there, a right one gets the cookie.
    same_site = {"Origin": tenants.url}  # browsers send it with every form post
    wrong = httpx.post(tenants.url + "/ui/login", data={"key": "og-wrong"}, headers=same_site, follow_redirects=False)
    assert wrong.status_code == 401 and "Invalid API key" in wrong.text and "set-cookie" not in wrong.headers
    right = httpx.post(tenants.url + "/ui/login", data={"key": ADMIN_KEY}, headers=same_site, follow_redirects=False)
    assert right.status_code == 303 and "opsgate_session=" in right.headers["set-cookie"]
    with_cookie = httpx.get(tenants.url + "/ui", cookies={"opsgate_session": right.cookies["opsgate_session"]})
    assert with_cookie.status_code == 200 and "bootstrap admin" in with_cookie.text


def test_a_service_key_cannot_use_the_dashboard(tenants: Gateway) -> None:
    service = _key(tenants, "acme", "service")
    assert httpx.get(tenants.url + "/ui", headers=service).status_code == 403
    login = httpx.post(
        tenants.url + "/ui/login",
        data={"key": service["Authorization"][7:]},
        headers={"Origin": tenants.url},
        follow_redirects=False,
    )
    assert login.status_code == 403 and "cannot use the dashboard" in login.text


def test_guard_page_refuses_hostile_cursors_with_a_page_not_a_500(dashboard: Gateway, traffic: Traffic) -> None:
    # NUL never reaches the page: the gateway's URL guard answers 400 first.
    assert httpx.get(dashboard.url + "/ui/guard", params={"cursor": "\x00"}).status_code == 400
    for cursor in ("garbage", "bmFufG54", "MWU0MDB8eA==", "x" * 5000):  # nan|nx, 1e400|x, long
        page = httpx.get(dashboard.url + "/ui/guard", params={"since": "1h", "cursor": cursor})
        assert page.status_code == 400, (cursor, page.status_code)
        assert 'role="alert"' in page.text and "cursor" in page.text
    # A cursor this page made goes on where it stopped; the window is kept in the link.
    first = httpx.get(dashboard.url + "/ui/guard", params={"since": "1h"})
    assert first.status_code == 200 and 'rel="next"' not in first.text  # one event: a single page


def test_a_tenant_pages_only_through_its_own_guard_events(tenants: Gateway) -> None:
    hit = {"guard": {"input": [{"scanner": "pii", "verdict": "fail", "score": 1.0, "action": "redact", "ms": 0.1}]}}
    records = []
    for i in range(60):
        for tenant in ("acme", "globex"):
            record = _record(f"guard-{tenant}-{i:03d}", tenant, "mail me")
            records.append({**record, "ts": record["ts"] - i, "tags": orjson.dumps(hit).decode()})
    tenants.app.state.gateway.record_log.store.write_batch(records)
    acme = _key(tenants, "acme", "viewer")
    seen: list[str] = []
    link: str | None = "/ui/guard?since=1h"
    while link:
        page = httpx.get(tenants.url + link, headers=acme)
        assert page.status_code == 200
        seen += re.findall(r'href="/ui/requests/(guard-[a-z]+-\d+)"', page.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        link = html.unescape(found.group(1)) if found else None
    assert sorted(seen) == [f"guard-acme-{i:03d}" for i in range(60)]  # every one of acme's, none of globex's
