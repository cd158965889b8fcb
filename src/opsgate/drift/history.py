"""Stored drift check results (``drift_checks``), newest first: the history the report and /ui read."""

from __future__ import annotations

from typing import Any

import orjson

from opsgate.drift.windows import NO_TENANT
from opsgate.slo.reader import StoreSource, resolve
from opsgate.store.sql import SqlRecordStore

Results = list[dict[str, Any]]
GLOBAL = NO_TENANT  # pass as ``tenant`` to list only the checks over every tenant of an alias


def _conditions(alias: str | None, tenant: str | None, since: float | None) -> tuple[list[str], list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if alias is not None:
        conditions.append("alias = ?")
        params.append(alias)
    if tenant is not None:
        conditions.append("tenant = ?")
        params.append(tenant)
    if since is not None:
        conditions.append("checked_at >= ?")
        params.append(since)
    return conditions, params


class DriftHistory:
    """Check results in the record store."""

    def __init__(self, source: StoreSource) -> None:
        self._source = source

    @property
    def store(self) -> SqlRecordStore:
        """The store holding ``drift_checks``."""
        return resolve(self._source)

    def add(self, result: dict[str, Any]) -> int:
        """Store one result; its id."""
        tenant = result.get("tenant") or NO_TENANT
        with self.store.connection() as conn, self.store.transaction(conn):
            cursor = self.store.execute(
                conn,
                "INSERT INTO drift_checks (alias, tenant, checked_at, drifted, score, insufficient, result) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [
                    result["alias"],
                    tenant,
                    float(result["checked_at"]),
                    int(bool(result["drifted"])),
                    float(result["score"]),
                    int(bool(result.get("insufficient"))),
                    orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                ],
            )
            return int(cursor.fetchone()[0])

    def list(
        self,
        alias: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        limit: int = 500,
        drifted: bool | None = None,
    ) -> Results:
        """Results newest first. ``tenant`` None: every check; ``GLOBAL`` (''): only all-tenant checks;
        a tenant id: only that tenant's per-tenant checks."""
        conditions, params = _conditions(alias, tenant, since)
        if drifted is not None:
            conditions.append("drifted = ?")
            params.append(int(drifted))
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT id, result FROM drift_checks {where} ORDER BY checked_at DESC, id DESC LIMIT ?",
                [*params, int(limit)],
            ).fetchall()
        return [{**orjson.loads(row[1]), "id": int(row[0])} for row in rows]

    def latest(self, tenant: str | None = None) -> Results:
        """The newest result of each (alias, tenant) scope, ``tenant`` narrowing as in ``list``."""
        conditions, params = _conditions(None, tenant, None)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                "SELECT c.id, c.result FROM drift_checks c JOIN (SELECT alias, tenant, MAX(id) AS id "
                f"FROM drift_checks {where} GROUP BY alias, tenant) m ON c.id = m.id ORDER BY c.alias, c.tenant",
                params,
            ).fetchall()
        return [{**orjson.loads(row[1]), "id": int(row[0])} for row in rows]

    def prune(self, before: float) -> int:
        """Delete results older than ``before``."""
        with self.store.connection() as conn, self.store.transaction(conn):
            cursor = self.store.execute(conn, "DELETE FROM drift_checks WHERE checked_at < ?", [before])
            return max(int(cursor.rowcount), 0)
