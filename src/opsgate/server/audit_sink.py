"""The gateway's audit sink: what its parts (the integrity monitor, config loads) append to the audit chain.

One sink over the request log's store, so a part that audits never opens a store of its own; a
gateway without a record store has no sink, and its parts log instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from opsgate.audit import append_audit
from opsgate.audit.config_change import record_config_loaded
from opsgate.domain.config import GatewayConfig
from opsgate.store.record_log import RecordLog

log = logging.getLogger("opsgate.audit")


class StoreAuditSink:
    """Appends audit entries through ``record_log``'s store (blocking: call from a worker thread)."""

    def __init__(self, record_log: RecordLog) -> None:
        self.record_log = record_log

    def append(self, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
        """One entry in the hash chain."""
        append_audit(self.record_log.store, actor, action, target, details)

    def config_loaded(self, config: GatewayConfig) -> Any:
        """A ``config_loaded`` entry when the effective config differs from the last one logged; else None."""
        return record_config_loaded(self.record_log.store, config, f"opsgate@{socket.gethostname()}")

    async def record_config(self, config: GatewayConfig, wait_seconds: float = 2.0) -> None:
        """Log ``config`` if it changed. Usually a few ms, so the entry is there once the gateway is up;
        an unreachable store must not hold up a start, though: after ``wait_seconds`` it finishes in the
        background."""
        task = asyncio.create_task(self._record(config), name="config-audit")
        await asyncio.wait({task}, timeout=wait_seconds)

    async def _record(self, config: GatewayConfig) -> None:
        try:
            entry = await asyncio.to_thread(self.config_loaded, config)
        except Exception:
            log.exception("could not record the effective config in the audit log")
            return
        if entry is not None:
            log.info("config change recorded in the audit log (seq %s)", entry.seq)
