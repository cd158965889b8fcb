"""``/admin/sentinel``: golden-prompt baselines, runs and behaviour changes (built in the drift issue)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route


def sentinel_routes(gateway: Any) -> list[Route]:
    """The ``/admin/sentinel`` routes over ``gateway``'s record store."""
    return []
