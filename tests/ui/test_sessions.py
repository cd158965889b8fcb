"""Dashboard sessions over real HTTP: an opaque id in the cookie, the state on the server.

Before sessions the cookie ``opsgate_key`` held the API key: logout left a copied cookie working,
and revoking the key was the only way to end it. Every test here fails on that code.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from opsgate.domain.config import parse_config
from tests.fake_upstream import FakeUpstream
from tests.store.conftest import fresh_pg_schema
from tests.support import Gateway, start_gateway, wait_until
from tests.ui.conftest import dashboard_config

ADMIN_KEY = "og-sessions-test-admin-0123456789"
COOKIE = "opsgate_session"


class Clock:
    """Wall time the test moves (the sessions' clock); starts at the real time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _config(base_url: str, **ui_session: Any) -> dict[str, Any]:
    auth: dict[str, Any] = {"enabled": True, "admin_key": ADMIN_KEY, "cache_ttl_seconds": 30}
    if ui_session:
        auth["ui_session"] = ui_session
    return {**dashboard_config(base_url), "auth": auth}


@pytest.fixture(scope="module")
def site(ui_upstream: FakeUpstream) -> Iterator[Gateway]:
    gateway = start_gateway(_config(ui_upstream.base_url))
    yield gateway
    gateway.server.stop()


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


def _new_key(gateway: Gateway, role: str = "viewer", tenant: str | None = "acme") -> dict[str, Any]:
    response = httpx.post(gateway.url + "/admin/keys", json={"tenant": tenant, "role": role}, headers=_admin())
    assert response.status_code == 201, response.text
    return dict(response.json())


def login(gateway: Gateway, key: str, **headers: str) -> httpx.Response:
    """``POST /ui/login`` from the gateway's own page."""
    return httpx.post(
        gateway.url + "/ui/login",
        data={"key": key},
        headers={"Origin": gateway.url, **headers},
        follow_redirects=False,
    )


def session_of(gateway: Gateway, key: str) -> str:
    response = login(gateway, key)
    assert response.status_code == 303, response.text
    return str(response.cookies[COOKIE])


def ui_works(gateway: Gateway, session: str) -> bool:
    """Whether the session opens the dashboard (else the answer must be the login redirect)."""
    response = httpx.get(gateway.url + "/ui", cookies={COOKIE: session}, follow_redirects=False)
    assert response.status_code in (200, 303), response.status_code
    if response.status_code == 303:
        assert response.headers["location"] == "/ui/login"
        return False
    return True


def logout(gateway: Gateway, session: str) -> httpx.Response:
    return httpx.post(
        gateway.url + "/ui/logout", cookies={COOKIE: session}, headers={"Origin": gateway.url}, follow_redirects=False
    )


def _sessions_table(gateway: Gateway) -> list[tuple[Any, ...]]:
    store = gateway.app.state.gateway.record_log.store
    with store.connection() as conn:
        return list(store.execute(conn, "SELECT * FROM ui_sessions").fetchall())


def test_login_sets_an_opaque_cookie_that_is_not_the_key(site: Gateway) -> None:
    key = _new_key(site)["secret"]
    response = login(site, key)
    assert response.status_code == 303
    header = response.headers["set-cookie"]
    session = response.cookies[COOKIE]
    assert len(session) == 43 and key not in header
    secret_part = max(key.split("_"), key=len)  # the random part (the last '_' piece may be 1 character)
    assert secret_part not in header
    assert session not in key
    attributes = [part.strip().lower() for part in header.split(f"{COOKIE}=", 1)[1].split(";")[1:]]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes
    assert "secure" not in attributes  # plain http to a loopback address: a local gateway
    # The cookie works for pages and for the admin JSON the pages fetch, and says who it is.
    page = httpx.get(site.url + "/ui", cookies={COOKIE: session})
    assert page.status_code == 200 and "acme" in page.text and "viewer" in page.text
    api = httpx.get(site.url + "/admin/requests", cookies={COOKIE: session})
    assert api.status_code == 200
    # Two logins are two sessions.
    assert session_of(site, key) != session


def test_logout_ends_the_session_for_every_copy_of_the_cookie(site: Gateway) -> None:
    session = session_of(site, _new_key(site)["secret"])
    assert ui_works(site, session)
    out = logout(site, session)
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]
    assert not ui_works(site, session)  # the same cookie replayed after logout
    api = httpx.get(site.url + "/admin/requests", cookies={COOKIE: session})
    assert api.status_code == 401
    error = api.json()["error"]
    assert error["code"] == "invalid_session" and set(error) == {"message", "type", "param", "code"}


def test_revoking_or_rotating_the_key_ends_its_sessions(site: Gateway) -> None:
    key = _new_key(site)
    session = session_of(site, key["secret"])
    assert ui_works(site, session)
    revoked = httpx.post(f"{site.url}/admin/keys/{key['id']}/revoke", headers=_admin())
    assert revoked.status_code == 200
    assert not ui_works(site, session)  # this replica forgets at once
    assert not _row_exists(site, session)

    other = _new_key(site, role="developer")
    session = session_of(site, other["secret"])
    assert ui_works(site, session)
    rotated = httpx.post(f"{site.url}/admin/keys/{other['id']}/rotate", headers=_admin())
    assert rotated.status_code == 201
    assert not ui_works(site, session)  # even inside the old key's grace period
    assert ui_works(site, session_of(site, rotated.json()["secret"]))


def _row_exists(gateway: Gateway, session: str) -> bool:
    # A refused session is deleted, not just hidden.
    digest = hashlib.sha256(session.encode()).hexdigest()
    return any(digest in row for row in _sessions_table(gateway))


def test_the_raw_key_and_id_are_never_in_the_sessions_table(site: Gateway) -> None:
    key = _new_key(site)["secret"]
    sessions = [session_of(site, key), session_of(site, ADMIN_KEY)]
    rows = _sessions_table(site)
    text = repr(rows)
    for secret in (key, max(key.split("_"), key=len), ADMIN_KEY, *sessions):
        assert secret not in text
    hashes = {row[0] for row in rows}
    assert {hashlib.sha256(s.encode()).hexdigest() for s in sessions} <= hashes


def _raw_get(gateway: Gateway, path: str, cookie: bytes) -> int:
    # httpx will not send every byte; a socket will.
    host, port = gateway.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + b"\r\n\r\n")
        head = sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def test_hostile_cookies_go_to_login_never_a_500_and_are_not_logged(
    site: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    ended = session_of(site, _new_key(site)["secret"])
    assert logout(site, ended).status_code == 303
    values = ["", "a" * 300, "x" * 43, "é" * 43, ended, "og_aaaaaaaaaa_" + "y" * 43, "a;b", '"quoted"']
    with caplog.at_level(logging.DEBUG):
        for value in values:
            cookie = {b"Cookie": f"{COOKIE}={value}".encode()}  # bytes: httpx sends UTF-8 as it is
            page = httpx.get(site.url + "/ui/requests", headers=cookie, follow_redirects=False)
            assert page.status_code == 303 and page.headers["location"].startswith("/ui/login"), value
            api = httpx.get(site.url + "/admin/requests", headers=cookie)
            assert api.status_code == 401, (value, api.status_code)
        for raw in (b"opsgate_session=\xff\xfe" + b"z" * 41, b"opsgate_session=" + b"a" * 5000):
            assert _raw_get(site, "/ui", raw) in (303, 400, 431), raw[:40]
        assert _raw_get(site, "/admin/requests", b"opsgate_session=abc\x00def") in (400, 401)
    for value in values:
        if len(value) >= 8:
            assert value not in caplog.text


def test_secure_flag(ui_upstream: FakeUpstream) -> None:
    gateways = {mode: start_gateway(_config(ui_upstream.base_url, cookie_secure=mode)) for mode in ("always", "auto")}
    try:
        always = login(gateways["always"], ADMIN_KEY)
        assert always.status_code == 303 and "secure" in always.headers["set-cookie"].lower()
        # auto: plain http to a host that is not loopback would send the session in the clear: refused.
        auto = gateways["auto"]
        port = auto.url.rsplit(":", 1)[1]
        remote = login(auto, ADMIN_KEY, Host=f"gw.example:{port}", Origin=f"http://gw.example:{port}")
        assert remote.status_code == 400 and "plain http" in remote.text and "set-cookie" not in remote.headers
        https = login(auto, ADMIN_KEY, Host=f"gw.example:{port}", Origin=f"https://gw.example:{port}")
        assert https.status_code == 400  # the request itself is still http; only the scheme decides
    finally:
        for gateway in gateways.values():
            gateway.server.stop()


def test_idle_and_absolute_expiry(ui_upstream: FakeUpstream) -> None:
    gateway = start_gateway(_config(ui_upstream.base_url, idle_seconds=600, lifetime_seconds=3600))
    clock = Clock()
    gateway.app.state.gateway.authenticator.sessions.clock = clock
    try:
        idle = session_of(gateway, ADMIN_KEY)
        clock.now += 599
        assert ui_works(gateway, idle)  # used: idle time starts again
        clock.now += 599
        assert ui_works(gateway, idle)
        clock.now += 601
        assert not ui_works(gateway, idle)

        kept_busy = session_of(gateway, ADMIN_KEY)
        for _ in range(11):  # used every 5 minutes for 55 minutes: never idle
            clock.now += 300
            assert ui_works(gateway, kept_busy)
        clock.now += 301  # 12 h lifetime here is 1 h: over, however busy
        assert not ui_works(gateway, kept_busy)
        assert _sessions_table(gateway) == []  # both rows were deleted when found expired
    finally:
        gateway.server.stop()


def _replica(config: dict[str, Any], store: str) -> Gateway:
    directory = tempfile.mkdtemp(prefix="opsgate-replica-")
    parsed = parse_config({**config, "record": {**config["record"], "store": store, "journal_dir": directory}})
    gateway = Gateway(parsed, keep_record_config=True)
    gateway.server.start("/readyz")
    return gateway


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tempfile.mkdtemp(prefix='opsgate-shared-')}/requests.db"
    else:
        with fresh_pg_schema("opsgate_ui_sessions") as url:
            yield url


def test_replicas_sharing_a_database_share_sessions(ui_upstream: FakeUpstream, shared_store: str) -> None:
    config = _config(ui_upstream.base_url)
    config["auth"]["cache_ttl_seconds"] = 1  # how long another replica may still accept an ended session
    first = _replica(config, shared_store)
    second = _replica(config, shared_store)
    try:
        key = httpx.post(first.url + "/admin/keys", json={"tenant": "acme", "role": "viewer"}, headers=_admin()).json()
        session = session_of(first, key["secret"])
        assert ui_works(second, session)  # logged in on one replica, used on another
        assert logout(first, session).status_code == 303
        assert wait_until(lambda: not ui_works(second, session), timeout=30)

        session = session_of(second, key["secret"])
        assert ui_works(first, session)
        assert httpx.post(f"{first.url}/admin/keys/{key['id']}/revoke", headers=_admin()).status_code == 200
        assert wait_until(lambda: not ui_works(second, session), timeout=30)
    finally:
        first.server.stop()
        second.server.stop()


def test_failed_logins_are_counted_then_refused_with_429(
    ui_upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    # Probe 2026-12-06 L4: 300 wrong keys were 300 401s, nothing refused, nothing recorded.
    gateway = start_gateway(_config(ui_upstream.base_url, login_max_failures=3, login_window_seconds=600))
    try:
        guesses = [ADMIN_KEY[:-1] + "X", "og_wrong_guess_1", "og_wrong_guess_2"]
        with caplog.at_level(logging.WARNING, logger="opsgate.auth"):
            for guess in guesses:
                assert login(gateway, guess).status_code == 401
        refused = login(gateway, guesses[0])
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 600
        assert "Too many failed logins" in refused.text and "set-cookie" not in refused.headers
        # Not even the right key is checked from this address until the window ends.
        assert login(gateway, ADMIN_KEY).status_code == 429
        assert caplog.text.count("dashboard login failed") == 3  # refusals are counted, not logged each
        assert caplog.text.count("refused for 600 s") == 1
        for guess in guesses:
            assert guess not in caplog.text  # the presented key is never logged
        logins = httpx.get(gateway.url + "/readyz", headers=_admin()).json()["auth"]["dashboard_logins"]
        assert logins["failed_logins"] == 3 and logins["refused_logins"] == 2
        # Header keys (the API) are not held back by the dashboard's login throttle.
        assert httpx.get(gateway.url + "/admin/keys", headers=_admin()).status_code == 200
    finally:
        gateway.server.stop()


def _set_cookie(response: httpx.Response, start: str) -> str:
    found = [value for value in response.headers.get_list("set-cookie") if value.startswith(start)]
    assert len(found) == 1, response.headers.get_list("set-cookie")
    return found[0]


def _page(gateway: Gateway, cookie: str) -> httpx.Response:
    return httpx.get(gateway.url + "/ui/requests", headers={"Cookie": cookie}, follow_redirects=False)


def test_a_session_cookie_sent_twice_is_no_session(site: Gateway) -> None:
    # Probe 2026-12-06 L5: the last opsgate_session won, so a cookie tossed in from a sibling
    # subdomain (the attacker's own session) could stand in for the victim's.
    good = session_of(site, _new_key(site)["secret"])
    other = session_of(site, _new_key(site)["secret"])
    assert _page(site, f"{COOKIE}={good}").status_code == 200
    for cookie in (
        f"{COOKIE}=x; {COOKIE}={good}",
        f"{COOKIE}={good}; {COOKIE}={other}",
        f"{COOKIE}={other}; {COOKIE}={good}",
    ):
        page = _page(site, cookie)
        assert page.status_code == 303 and page.headers["location"] == "/ui/login", cookie  # on HEAD: 200
        assert "set-cookie" not in page.headers  # neither copy is deleted: which is whose is unknown
        api = httpx.get(site.url + "/admin/requests", headers={"Cookie": cookie})
        assert api.status_code == 401, cookie
    assert ui_works(site, good)  # the real session still works alone


def test_a_secure_session_cookie_is_host_prefixed_and_the_plain_name_is_ignored(ui_upstream: FakeUpstream) -> None:
    gateway = start_gateway(_config(ui_upstream.base_url, cookie_secure="always"))
    try:
        response = login(gateway, ADMIN_KEY)
        assert response.status_code == 303
        set_cookie = _set_cookie(response, f"__Host-{COOKIE}=")
        flags = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}
        assert {"secure", "path", "httponly"} <= flags and "domain" not in flags and "path=/;" in set_cookie.lower()
        session = set_cookie.split(";", 1)[0].split("=", 1)[1]
        assert _page(gateway, f"__Host-{COOKIE}={session}").status_code == 200
        # The plain name is what a sibling subdomain can set: not read at all on a Secure gateway.
        assert _page(gateway, f"{COOKIE}={session}").status_code == 303
        assert _page(gateway, f"__Host-{COOKIE}={session}; __Host-{COOKIE}=x" + "y" * 42).status_code == 303
        out = httpx.post(
            gateway.url + "/ui/logout",
            headers={"Cookie": f"__Host-{COOKIE}={session}", "Origin": gateway.url},
            follow_redirects=False,
        )
        assert out.status_code == 303
        assert "secure" in _set_cookie(out, f'__Host-{COOKIE}=""').lower()
        assert _page(gateway, f"__Host-{COOKIE}={session}").status_code == 303  # ended on the server
    finally:
        gateway.server.stop()
