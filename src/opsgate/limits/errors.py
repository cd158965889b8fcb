"""The two answers the limits give instead of serving — 429 (over a limit) and 503 (cannot count) — and
the store failure that leads to the second."""

from __future__ import annotations

import math

from opsgate.domain.errors import GatewayError


class RateLimitError(GatewayError):
    """Over a rate limit or budget: 429 with ``Retry-After`` and a message naming the limit."""

    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, code: str, retry_after: float | None, headers: dict[str, str]) -> None:
        if retry_after is not None:
            headers = {**headers, "Retry-After": str(max(1, math.ceil(retry_after)))}
        super().__init__(message, code=code, headers=headers)
        self.retry_after = retry_after


class LimitsUnavailableError(GatewayError):
    """The shared counters cannot be reached and ``on_redis_error`` is ``closed``: 503, retry soon."""

    status = 503
    error_type = "server_error"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, code="limits_unavailable", headers={"Retry-After": str(max(1, retry_after))})


class CountersUnavailable(Exception):
    """The shared counter store could not be asked; ``on_redis_error`` decides what happens."""
