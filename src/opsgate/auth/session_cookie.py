"""The dashboard session cookie on the wire: its name, its Secure flag, and reading it unambiguously.

With a Secure cookie the name is ``__Host-opsgate_session``: a browser accepts that name only from
this exact host with Secure, ``Path=/`` and no ``Domain``, so a sibling subdomain cannot toss in a
cookie of that name (its own session, to log the victim in as the attacker). Plain http to a
loopback host (``auto``) and ``allow_http`` over http keep the plain ``opsgate_session``, since a
browser drops ``__Host-`` cookies that are not Secure. Whatever the name, a request that carries it
more than once has no session: which copy is whose cannot be told (the server does not delete
either; with ``__Host-`` only this host could have set both).
"""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.responses import Response

from opsgate.auth.ui_sessions import COOKIE_NAME

HOST_COOKIE_NAME = "__Host-" + COOKIE_NAME


def cookie_secure(request: Request, mode: str) -> bool | None:
    """The session cookie's Secure flag for ``auth.ui_session.cookie_secure``; None: refuse the login.

    ``auto`` sets it unless the request is plain http to a loopback host (a local gateway, where a
    browser treats http as a secure context anyway), and refuses a plain-http login elsewhere rather
    than send the session in the clear; ``allow_http`` is that choice made on purpose.
    """
    if mode == "always" or request.url.scheme == "https":
        return True
    if mode == "allow_http":
        return False
    return False if _loopback(request.url.hostname) else None


def cookie_name(secure: bool | None) -> str:
    """The cookie's name: ``__Host-`` prefixed exactly when it is Secure."""
    return HOST_COOKIE_NAME if secure else COOKIE_NAME


def read_session_cookie(request: Request, mode: str) -> str | None:
    """The session id this request carries under this request's cookie name; None if absent or sent twice."""
    name = cookie_name(cookie_secure(request, mode))
    values = [
        value.strip()
        for header in request.headers.getlist("cookie")
        for part in header.split(";")
        for key, _, value in (part.partition("="),)
        if key.strip() == name
    ]
    return values[0] if len(values) == 1 else None


def drop_session_cookie(response: Response, request: Request, mode: str) -> None:
    """Tell the browser to delete this request's session cookie (``__Host-`` needs Secure to be deleted)."""
    secure = bool(cookie_secure(request, mode))
    response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True, samesite="strict")


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
