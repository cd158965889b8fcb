"""Credentials in URLs (``scheme://user:password@host``) never leave the process in clear.

Operators put them in ``base_url``, Redis and PostgreSQL URLs; anything shown — ``/readyz``, the
admin API, the CLI, an error message that quotes a URL — goes through ``redact_url`` or
``redact_urls`` first.
"""

from __future__ import annotations

import re
from typing import Any

# The userinfo of an authority: everything from "://" to the last "@" before the path, query or fragment.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#\s]*)@")
MASK = "***"


def _mask(match: re.Match[str]) -> str:
    user, colon, _ = match.group("userinfo").partition(":")
    # Keep a user name (useful when debugging, rarely secret); a lone token in the user slot is a secret.
    shown = f"{user}:{MASK}" if colon and user else MASK
    return f"{match.group('scheme')}{shown}@"


def redact_url(text: str) -> str:
    """``text`` with the password (or lone token) of every URL in it replaced by ``***``."""
    return _USERINFO.sub(_mask, text) if "@" in text else text


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user name or password before its host."""
    return _USERINFO.search(url) is not None


def redact_urls(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with ``redact_url`` applied to every string."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {key: redact_urls(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_urls(item) for item in value]
    return value
