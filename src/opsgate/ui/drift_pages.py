"""``/ui/drift``: drift over time per alias, the latest check's moved features (built in the drift issue)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


def drift_pages(dashboard: Any) -> list[BaseRoute]:
    """The ``/ui/drift`` routes."""
    return []
