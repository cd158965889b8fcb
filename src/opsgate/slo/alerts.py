"""Burn-rate alerts: state kept in the database, one evaluator at a time, notifications on transitions.

Replicas share the store, so each evaluator first takes a lease (a row in ``slo_leader``, renewed
every tick and lapsing after three intervals); only the holder evaluates and notifies, so a
transition is sent once. An alert is one row per (objective, tenant, severity) episode: inserted
``firing`` when its rule starts to fire, updated to ``resolved`` when none of its rules fires any
more. Each row records which notifications went out, so a new leader finishes what an old one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

import aiohttp
import orjson

from opsgate.domain.slo_config import AlertsConfig
from opsgate.slo.engine import SloEngine
from opsgate.slo.reader import FINE_KEEP_SECONDS, StoreSource, resolve
from opsgate.slo.webhooks import send, summary_line
from opsgate.store import lease as store_lease
from opsgate.store.sql import SqlRecordStore

log = logging.getLogger("opsgate.slo.alerts")
_COLUMNS = ("id", "slo", "tenant", "severity", "state", "since", "resolved_at", "details")


class AlertStore:
    """Alert rows and the evaluator lease, in the record store."""

    def __init__(self, source: StoreSource) -> None:
        self._source = source

    @property
    def store(self) -> SqlRecordStore:
        """The store holding the alert rows."""
        return resolve(self._source)

    def try_lead(self, holder: str, ttl: float, now: float | None = None) -> bool:
        """Take or renew the evaluator lease; False while another live holder has it."""
        return store_lease.try_lead(self.store, "slo_leader", holder, ttl, now)

    def release(self, holder: str) -> None:
        """Give the lease up (at shutdown), so another replica takes over at its next tick."""
        store_lease.release(self.store, "slo_leader", holder)

    def reconcile(self, statuses: list[dict[str, Any]], now: float, tenants: dict[str, str]) -> None:
        """Open alerts for (objective, severity) pairs that fire now; resolve open ones that stopped."""
        wanted: dict[tuple[str, str, str], dict[str, Any]] = {}
        for status in statuses:
            for severity in ("page", "ticket"):
                if any(label.startswith(severity + ":") for label in status.get("firing") or []):
                    wanted[(status["name"], tenants.get(status["name"], ""), severity)] = status
        with self.store.connection() as conn, self.store.transaction(conn):
            open_rows = self.store.execute(
                conn, "SELECT id, slo, tenant, severity FROM slo_alerts WHERE state = 'firing'"
            ).fetchall()
            open_keys = {(r[1], r[2], r[3]): r[0] for r in open_rows}
            for key, status in wanted.items():
                if key not in open_keys:
                    details = {
                        k: status.get(k) for k in ("current", "target", "budget_remaining", "burn_rates", "firing")
                    }
                    self.store.execute(
                        conn,
                        "INSERT INTO slo_alerts (slo, tenant, severity, state, since, details) "
                        "VALUES (?, ?, ?, 'firing', ?, ?)",
                        [*key, now, orjson.dumps(details).decode()],
                    )
            for key, alert_id in open_keys.items():
                if key not in wanted:
                    self.store.execute(
                        conn,
                        "UPDATE slo_alerts SET state = 'resolved', resolved_at = ? WHERE id = ?",
                        [now, alert_id],
                    )

    def pending(self) -> list[dict[str, Any]]:
        """Transitions not yet notified, oldest first: firing ones, then resolutions."""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT {', '.join(_COLUMNS)}, notified_firing, notified_resolved FROM slo_alerts "
                "WHERE notified_firing = 0 OR (state = 'resolved' AND notified_resolved = 0) ORDER BY id",
            ).fetchall()
        events = []
        for row in rows:
            alert = self._alert(row)
            if not row[-2]:
                events.append({**alert, "status": "firing"})
            if alert["state"] == "resolved" and not row[-1]:
                events.append({**alert, "status": "resolved"})
        return events

    def mark_notified(self, alert_id: int, status: str) -> None:
        """Record that the ``status`` transition of an alert went out."""
        column = "notified_firing" if status == "firing" else "notified_resolved"
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(conn, f"UPDATE slo_alerts SET {column} = 1 WHERE id = ?", [alert_id])

    def list(self, tenant: str | None = None, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Alerts newest first; ``tenant`` narrows to one tenant's objectives (None: all)."""
        conditions, params = [], []
        if tenant is not None:
            conditions.append("tenant = ?")
            params.append(tenant)
        if state is not None:
            conditions.append("state = ?")
            params.append(state)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn, f"SELECT {', '.join(_COLUMNS)} FROM slo_alerts{where} ORDER BY id DESC LIMIT ?", [*params, limit]
            ).fetchall()
        return [self._alert(row) for row in rows]

    @staticmethod
    def _alert(row: Any) -> dict[str, Any]:
        item = dict(zip(_COLUMNS, row[: len(_COLUMNS)], strict=True))
        item["details"] = orjson.loads(item["details"]) if item["details"] else None
        return {
            "alert_id": item["id"],
            "slo": item["slo"],
            "tenant": item["tenant"] or None,
            "severity": item["severity"],
            "state": item["state"],
            "since": item["since"],
            "resolved_at": item["resolved_at"],
            "details": item["details"],
        }


class AlertEvaluator:
    """The background task: every ``interval_seconds``, if it holds the lease, evaluate and notify."""

    def __init__(self, engine: SloEngine, alerts: AlertStore, config: AlertsConfig) -> None:
        self.engine = engine
        self.alerts = alerts
        self.config = config
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tenants = {d.name: d.filter.tenant or "" for d in engine.slo.objectives}
        self.ticks = 0
        self.sent = 0
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._next_prune = 0.0

    async def start(self) -> None:
        """Start ticking in the background."""
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="opsgate-slo-evaluator")

    async def stop(self) -> None:
        """Stop ticking and give the lease up."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.alerts.release, self.holder)

    def status(self) -> dict[str, Any]:
        """Counters for ``/readyz``."""
        return {"ticks": self.ticks, "notifications_sent": self.sent, "last_error": self.last_error}

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                if message != self.last_error:
                    log.error("SLO evaluation failed: %s", message)
                self.last_error = message
            await asyncio.sleep(self.config.interval_seconds)

    async def tick(self, now: float | None = None) -> list[dict[str, Any]]:
        """One evaluation; returns the transitions notified (none when another replica leads)."""
        now = time.time() if now is None else now
        ttl = max(3 * self.config.interval_seconds, 5.0)
        if not await asyncio.to_thread(self.alerts.try_lead, self.holder, ttl, now):
            return []
        self.ticks += 1
        statuses = await asyncio.to_thread(self.engine.status, None, now)
        await asyncio.to_thread(self.alerts.reconcile, statuses, now, self.tenants)
        events = await asyncio.to_thread(self.alerts.pending)
        for event in events:
            await self._notify(event)
            await asyncio.to_thread(self.alerts.mark_notified, event["alert_id"], event["status"])
        if now >= self._next_prune:
            self._next_prune = now + 3600
            await asyncio.to_thread(self.engine.reader.prune_fine, now - FINE_KEEP_SECONDS)
        return events

    async def _notify(self, event: dict[str, Any]) -> None:
        line = summary_line(event)
        (log.warning if event["status"] == "firing" else log.info)("SLO alert: %s", line)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        results = await asyncio.gather(
            *(send(self._session, hook, event, self.config.retries) for hook in self.config.webhooks)
        )
        self.sent += sum(1 for ok in results if ok)
