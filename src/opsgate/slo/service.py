"""The SLO features of one gateway: engine, alert store and background evaluator, built from config."""

from __future__ import annotations

from typing import Any

from opsgate.domain.config import GatewayConfig
from opsgate.slo.alerts import AlertEvaluator, AlertStore
from opsgate.slo.engine import SloEngine
from opsgate.store.record_log import RecordLog
from opsgate.store.sql import SqlRecordStore


class SloService:
    """Reads through the request log's reader store; evaluates alerts when objectives and a store exist."""

    def __init__(self, config: GatewayConfig, record_log: RecordLog | None) -> None:
        self.config = config
        self.record_log = record_log
        self.engine: SloEngine | None = None
        self.alerts: AlertStore | None = None
        self.evaluator: AlertEvaluator | None = None
        if record_log is not None:
            self.engine = SloEngine(self.store, config.slo, config.alerts)
            self.alerts = AlertStore(self.store)
            if config.alerts.enabled and config.slo.objectives:
                self.evaluator = AlertEvaluator(self.engine, self.alerts, config.alerts)

    def store(self) -> SqlRecordStore:
        """The reader store (opened on first use; raises StoreUnavailable if it cannot be)."""
        assert self.record_log is not None
        return self.record_log.store

    async def start(self) -> None:
        """Start the evaluator, if there is one."""
        if self.evaluator is not None:
            await self.evaluator.start()

    async def stop(self) -> None:
        """Stop the evaluator."""
        if self.evaluator is not None:
            await self.evaluator.stop()

    def status(self) -> dict[str, Any] | None:
        """The evaluator's counters for ``/readyz`` (None without one)."""
        return self.evaluator.status() if self.evaluator is not None else None
