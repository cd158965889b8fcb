"""Filters for searching the record, parsed from query parameters or CLI options with clear errors."""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opsgate.domain.errors import InvalidRequestError

MAX_PAGE = 1000
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Epoch seconds a datetime can hold (years 1 to 9999): anything else (nan, inf, 1e400) is a 400,
# not a failure deep in date arithmetic.
_EARLIEST = -62135596800.0
_LATEST = 253402300799.0


def require_text(value: str, param: str) -> str:
    """``value`` if a store can compare it; NUL is a 400 (PostgreSQL refuses it, SQLite cuts at it)."""
    if "\x00" in value:
        raise InvalidRequestError(f"{param} must not contain a NUL character.", param=param)
    return value


def check_params(
    params: Mapping[str, Any] | Iterable[tuple[str, Any]], path_params: Mapping[str, Any] | None = None
) -> None:
    """Every query (and path) parameter, names too, is text a store can take (see ``require_text``).

    ``params``: a mapping (Starlette's ``QueryParams``: every value of a repeated name is checked)
    or (name, value) pairs.
    """
    multi = getattr(params, "multi_items", None)
    pairs = multi() if callable(multi) else params.items() if isinstance(params, Mapping) else params
    for name, value in [*pairs, *(path_params or {}).items()]:
        require_text(str(name), "query")
        require_text(str(value), str(name))


def _finite_time(value: float, param: str) -> float:
    if not math.isfinite(value) or not _EARLIEST <= value <= _LATEST:
        raise InvalidRequestError(f"{param} is not a time between the years 1 and 9999.", param=param)
    return value


def parse_duration(value: str, param: str) -> float:
    """``30m``/``12h``/``30d`` as seconds."""
    match = _DURATION.match(value.strip())
    if not match:
        raise InvalidRequestError(f"'{value}' is not a duration: use 30m, 12h, 30d or 2w.", param=param)
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_time(value: str, param: str, now: float | None = None) -> float:
    """``1h``/``7d`` (ago), an ISO 8601 timestamp, or epoch seconds, as epoch seconds."""
    value = value.strip()
    now = time.time() if now is None else now
    match = _DURATION.match(value)
    if match:
        return _finite_time(now - float(match.group(1)) * _SECONDS[match.group(2)], param)
    try:
        return _finite_time(float(value), param)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"'{value}' is not a time: use 30m, 1h, 7d, an ISO 8601 time or epoch seconds.", param=param
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        timestamp = parsed.timestamp()
    except (OverflowError, ValueError):  # an offset that moves year 1 or 9999 out of range
        timestamp = math.nan
    return _finite_time(timestamp, param)


@dataclass
class RecordQuery:
    """What to look for in the record; every field is optional and they combine with AND."""

    text: str | None = None
    since: float | None = None
    until: float | None = None
    stored_since: float | None = None  # stored at or after (``logs tail --follow``: late records too)
    model: str | None = None
    deployment: str | None = None
    status: str | None = None  # "200", "4xx", "5xx" or "error" (>= 400)
    user: str | None = None
    tenant: str | None = None
    client_request_id: str | None = None  # the client's X-Request-Id
    # What the release stage applied (releases/): cut the log by prompt version, release or arm.
    prompt: str | None = None
    prompt_version: int | None = None
    release: str | None = None
    experiment: str | None = None
    arm: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    min_cost: float | None = None
    max_cost: float | None = None
    limit: int = 50
    cursor: tuple[float, str] | None = None

    def status_range(self) -> tuple[int, int] | None:
        """The status filter as an inclusive range."""
        if self.status is None:
            return None
        if self.status == "error":
            return 400, 599
        if re.fullmatch(r"[1-5]xx", self.status):
            low = int(self.status[0]) * 100
            return low, low + 99
        code = int(self.status)
        return code, code


def encode_cursor(ts: float, record_id: str) -> str:
    """An opaque cursor for the page after the row (ts, id)."""
    return base64.urlsafe_b64encode(f"{ts!r}|{record_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (ts, id) a cursor points after."""
    try:
        ts, sep, record_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        value = float(ts)
    except (ValueError, UnicodeDecodeError):
        sep, record_id, value = "", "", math.nan
    if not sep or not math.isfinite(value) or "\x00" in record_id:
        raise InvalidRequestError("cursor is not one this API returned", param="cursor")
    return value, record_id


_KNOWN = {
    "q",
    "since",
    "until",
    "stored_since",
    "model",
    "deployment",
    "status",
    "user",
    "tenant",
    "client_request_id",
    "prompt",
    "prompt_version",
    "release",
    "experiment",
    "arm",
    "tag",
    "min_latency_ms",
    "max_latency_ms",
    "min_cost",
    "max_cost",
    "limit",
    "cursor",
}


def _number(params: dict[str, Any], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):  # nan, inf and 1e400 compare as nothing sensible in SQL
        raise InvalidRequestError(f"{name} must be a finite number, not '{raw}'.", param=name)
    return value


def query_from_params(params: dict[str, Any], tags: list[str] | None = None) -> RecordQuery:
    """Build a RecordQuery from query parameters; unknown or malformed ones are a 400 naming them."""
    unknown = sorted(set(params) - _KNOWN)
    if unknown:
        raise InvalidRequestError(
            f"Unknown filter '{unknown[0]}'. Known: {', '.join(sorted(_KNOWN))}.", param=unknown[0]
        )
    check_params(params.items())
    for tag in tags or ():
        require_text(str(tag), "tag")
    query = RecordQuery()
    query.text = params.get("q") or None
    if query.text is not None and len(query.text) > 500:
        raise InvalidRequestError("q is longer than 500 characters.", param="q")
    for name in ("since", "until", "stored_since"):
        if params.get(name):
            setattr(query, name, parse_time(str(params[name]), name))
    for name in (
        "model",
        "deployment",
        "user",
        "tenant",
        "client_request_id",
        "prompt",
        "release",
        "experiment",
        "arm",
    ):
        if params.get(name):
            setattr(query, name, str(params[name]))
    version = _number(params, "prompt_version")
    if version is not None:
        if version < 1 or version > 2**31 - 1 or version != int(version):
            raise InvalidRequestError("prompt_version must be a whole number from 1.", param="prompt_version")
        query.prompt_version = int(version)
    status = params.get("status")
    if status:
        status = str(status).lower()
        if not (status == "error" or re.fullmatch(r"[1-5]xx", status) or re.fullmatch(r"[1-5]\d\d", status)):
            raise InvalidRequestError("status must be a code (404), a class (5xx) or 'error'.", param="status")
        query.status = status
    for tag in tags or ([params["tag"]] if params.get("tag") else []):
        key, sep, value = str(tag).partition("=")
        if not sep or not key:
            raise InvalidRequestError("tag must look like key=value.", param="tag")
        query.tags[key] = value
    query.min_latency_ms = _number(params, "min_latency_ms")
    query.max_latency_ms = _number(params, "max_latency_ms")
    query.min_cost = _number(params, "min_cost")
    query.max_cost = _number(params, "max_cost")
    limit = _number(params, "limit")
    if limit is not None:
        if limit < 1 or limit > MAX_PAGE or limit != int(limit):
            raise InvalidRequestError(f"limit must be a whole number from 1 to {MAX_PAGE}.", param="limit")
        query.limit = int(limit)
    if params.get("cursor"):
        query.cursor = decode_cursor(str(params["cursor"]))
    if query.since is not None and query.until is not None and query.since > query.until:
        raise InvalidRequestError("since is after until.", param="since")
    return query
