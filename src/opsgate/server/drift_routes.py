"""``/admin/drift``: drift checks, their history and reports (built in the drift issue)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route


def drift_routes(gateway: Any) -> list[Route]:
    """The ``/admin/drift`` routes over ``gateway``'s record store."""
    return []
