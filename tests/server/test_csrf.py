"""CSRF: a state change carried by the dashboard cookie must come from the gateway's own pages.

The attack that worked: a cookie-only ``POST /admin/erasure`` with a foreign ``Origin`` and no
content type erased a user, and a ``DELETE /admin/keys/{id}`` revoked a key; a foreign page could
also log a browser in with the attacker's key (login CSRF). Header keys are not affected: a foreign
page cannot attach one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Gateway, start_gateway

ADMIN_KEY = "bootstrap-admin-key-for-csrf-tests-0123456789"
EVIL = "https://evil.example"
MODELS = [{"name": "up", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}]}]


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    started = start_gateway({"auth": {"enabled": True, "admin_key": ADMIN_KEY}, "models": MODELS})
    yield started
    started.server.stop()


def _new_key(gateway: Gateway) -> dict[str, Any]:
    created = httpx.post(
        gateway.url + "/admin/keys",
        json={"role": "viewer", "tenant": "t"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


def _session(gateway: Gateway) -> str:
    """A dashboard session of the bootstrap admin, logged in from the gateway's own page."""
    login = httpx.post(
        gateway.url + "/ui/login", data={"key": ADMIN_KEY}, headers={"Origin": gateway.url}, follow_redirects=False
    )
    assert login.status_code == 303, login.text
    return login.cookies["opsgate_session"]


def _cookie_call(gateway: Gateway, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, cookies={"opsgate_session": _session(gateway)}) as client:
        return client.request(method, path, headers=headers, **kwargs)


def _key_works(gateway: Gateway, secret: str) -> bool:
    return httpx.get(gateway.url + "/admin/requests", headers={"Authorization": f"Bearer {secret}"}).status_code == 200


def _refused(response: httpx.Response) -> bool:
    return response.status_code == 403 and response.json()["error"]["code"] == "cross_site_request"


def test_a_foreign_cookie_request_cannot_revoke_a_key_or_erase(gateway: Gateway) -> None:
    key = _new_key(gateway)
    revoke = _cookie_call(gateway, "DELETE", f"/admin/keys/{key['id']}", {"Origin": EVIL})
    assert _refused(revoke) and _key_works(gateway, key["secret"])
    erase = _cookie_call(gateway, "POST", "/admin/erasure", {"Origin": EVIL}, content=b'{"user": "victim"}')
    assert _refused(erase)
    by_referer = _cookie_call(gateway, "POST", f"/admin/keys/{key['id']}/revoke", {"Referer": EVIL + "/page"})
    assert _refused(by_referer) and _key_works(gateway, key["secret"])


def test_a_cookie_request_needs_an_origin_and_the_json_content_type(gateway: Gateway) -> None:
    key = _new_key(gateway)
    no_origin = _cookie_call(gateway, "POST", f"/admin/keys/{key['id']}/revoke", {"Content-Type": "application/json"})
    assert _refused(no_origin)
    null_origin = _cookie_call(gateway, "POST", f"/admin/keys/{key['id']}/revoke", {"Origin": "null"})
    assert _refused(null_origin)
    no_type = _cookie_call(gateway, "POST", f"/admin/keys/{key['id']}/revoke", {"Origin": gateway.url})
    assert _refused(no_type) and _key_works(gateway, key["secret"])
    form = _cookie_call(
        gateway,
        "POST",
        f"/admin/keys/{key['id']}/revoke",
        {"Origin": gateway.url, "Content-Type": "text/plain"},  # what a cross-site form can send
        content=b"{}",
    )
    assert _refused(form) and _key_works(gateway, key["secret"])
    own = _cookie_call(
        gateway,
        "POST",
        f"/admin/keys/{key['id']}/revoke",
        {"Origin": gateway.url, "Content-Type": "application/json"},
        content=b"{}",
    )
    assert own.status_code == 200, own.text
    assert not _key_works(gateway, key["secret"])


def test_header_keys_and_reads_are_not_affected(gateway: Gateway) -> None:
    key = _new_key(gateway)
    by_header = httpx.post(
        f"{gateway.url}/admin/keys/{key['id']}/revoke",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Origin": EVIL},
    )
    assert by_header.status_code == 200  # a foreign page cannot set Authorization without CORS
    read = _cookie_call(gateway, "GET", "/admin/keys", {"Origin": EVIL})
    assert read.status_code == 200  # reads change nothing (and CORS keeps the answer from the page)


def test_login_csrf_is_refused(gateway: Gateway) -> None:
    form = {"key": ADMIN_KEY}
    foreign = httpx.post(gateway.url + "/ui/login", data=form, headers={"Origin": EVIL}, follow_redirects=False)
    assert _refused(foreign) and "set-cookie" not in foreign.headers
    bare = httpx.post(gateway.url + "/ui/login", data=form, follow_redirects=False)
    assert _refused(bare)
    own = httpx.post(gateway.url + "/ui/login", data=form, headers={"Origin": gateway.url}, follow_redirects=False)
    assert own.status_code == 303 and "opsgate_session=" in own.headers["set-cookie"]
    referer = httpx.post(
        gateway.url + "/ui/login", data=form, headers={"Referer": gateway.url + "/ui/login"}, follow_redirects=False
    )
    assert referer.status_code == 303  # a browser that sends no Origin still sends our own Referer
    other_port = gateway.url.rsplit(":", 1)[0] + ":1"
    assert _refused(httpx.post(gateway.url + "/ui/login", data=form, headers={"Origin": other_port}))


def test_with_auth_off_a_foreign_page_still_cannot_drive_the_admin_api() -> None:
    open_gateway = start_gateway({"models": MODELS})
    try:
        foreign = httpx.post(
            open_gateway.url + "/admin/erasure",
            json={"user": "victim"},
            headers={"Origin": EVIL},
        )
        assert _refused(foreign)
        cli = httpx.post(open_gateway.url + "/admin/erasure", json={"user": "nobody"})
        assert cli.status_code == 200, cli.text  # scripts and the CLI send no Origin
    finally:
        open_gateway.server.stop()
