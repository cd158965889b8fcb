"""Store work in a worker thread that a cancelled caller still waits for.

``asyncio.to_thread`` returns at once when its caller is cancelled, while the thread goes on: a service's
``stop()`` then returns with a write still running, and the gateway closes the store under it (a full suite
run crashed in SQLite that way: an online evaluation's results being stored as the gateway shut down).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def finished_in_thread(function: Callable[..., T], *args: Any) -> T:
    """``await asyncio.to_thread(function, *args)``, but a cancellation waits for the thread to finish first."""
    work = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise
