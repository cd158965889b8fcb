"""The drift monitor as a gateway background service (built in the drift issue)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opsgate.domain.config import GatewayConfig

if TYPE_CHECKING:
    from opsgate.server.services import BackgroundService, StoreOpener


def build_drift_monitor(config: GatewayConfig, store: StoreOpener | None) -> BackgroundService | None:
    """The drift monitor for ``config``, or None when drift monitoring is off or there is no store."""
    return None
