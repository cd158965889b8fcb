"""Background services beside the request path (drift monitor, sentinel): one seam in the gateway.

Each feature package offers a builder taking the config and the request log's reader store; the
gateway starts and stops what the builders return, adds their record sinks to the fan-out, shows
their status in ``/readyz`` and hands them the app (for in-process calls to its own ``/v1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from opsgate.domain.config import GatewayConfig
from opsgate.pipeline.record import RecordSink
from opsgate.store.sql import SqlRecordStore

# The request log's reader store, opened on first use (None: the gateway keeps no log).
StoreOpener = Callable[[], SqlRecordStore]


class BackgroundService(Protocol):
    """What the gateway needs of a background service."""

    name: str  # its key in /readyz

    @property
    def sink(self) -> RecordSink | None:
        """A sink that sees every finished record (must not block), or None."""
        ...

    async def start(self) -> None:
        """Start its background work (after the record log and backends)."""
        ...

    async def stop(self) -> None:
        """Stop it (before the record log stops)."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters and state for /readyz."""
        ...

    def attach_app(self, app: Any) -> None:
        """Called once with the ASGI app, so the service may call the gateway's own /v1 in-process."""
        ...


ServiceBuilder = Callable[[GatewayConfig, StoreOpener | None], BackgroundService | None]


def builders() -> list[ServiceBuilder]:
    """The builders of every background service, in start order."""
    from opsgate.drift.sentinel_service import build_sentinel
    from opsgate.drift.service import build_drift_monitor

    return [build_drift_monitor, build_sentinel]
