"""The sentinel's tables (``drift/sentinel_schema.py``): baselines, runs with their items, the schedule's lease.

Synchronous, like the other stores: callers on the event loop use ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from opsgate.store import lease as store_lease
from opsgate.store.encoding import storable_text
from opsgate.store.sql import SqlRecordStore

_RUN_COLUMNS = (
    "id",
    "alias",
    "deployment",
    "kind",
    "status",
    "started_at",
    "finished_at",
    "prompts",
    "changed",
    "failed",
    "share",
    "model_changed",
    "fingerprint_changed",
    "summary",
    "actor",
)
_ITEM_COLUMNS = (
    "prompt_id",
    "status",
    "exact",
    "similarity",
    "answer",
    "upstream_model",
    "fingerprint",
    "request_id",
    "error",
    "diff",
)
_INSERT_BASELINE = (
    "INSERT INTO sentinel_baselines (alias, deployment, prompt_id, prompt_hash, answer, upstream_model, fingerprint, "
    "embedding, run_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Baseline:
    """The stored answer of one golden prompt on one deployment."""

    prompt_id: str
    prompt_hash: str
    answer: str
    upstream_model: str | None
    fingerprint: str | None
    embedding: np.ndarray | None
    created_at: float


@dataclass
class RunItem:
    """One golden prompt's outcome in a run. ``status``: baseline | same | similar | changed | failed."""

    prompt_id: str
    status: str
    exact: bool | None = None
    similarity: float | None = None
    answer: str | None = None
    upstream_model: str | None = None
    fingerprint: str | None = None
    request_id: str | None = None
    error: str | None = None
    diff: str | None = None
    prompt_hash: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False)


def encode_vector(vector: np.ndarray | None) -> str | None:
    """A float32 vector as base64 text."""
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(text: str | None) -> np.ndarray | None:
    """The vector ``encode_vector`` wrote (None for nothing or garbage)."""
    if not text:
        return None
    try:
        return np.frombuffer(base64.b64decode(text), dtype=np.float32)
    except ValueError:
        return None


def _text(value: str | None, limit: int = 200_000) -> str | None:
    return None if value is None else storable_text(value[:limit])


class SentinelStore:
    """Reads and writes the sentinel tables of one record store."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store

    def _rows(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.store.connection() as conn:
            return list(self.store.execute(conn, statement, params).fetchall())

    # -- the schedule's lease ---------------------------------------------------------------------

    def try_lead(self, holder: str, ttl: float, now: float | None = None) -> bool:
        """Take or renew the lease; False while another live holder has it."""
        return store_lease.try_lead(self.store, "sentinel_lease", holder, ttl, now)

    def release(self, holder: str) -> None:
        """Give the lease up (at shutdown), so another replica takes over at its next tick."""
        store_lease.release(self.store, "sentinel_lease", holder)

    def lease(self) -> dict[str, Any]:
        """The lease row: holder, expires, next_run."""
        rows = self._rows("SELECT holder, expires, next_run FROM sentinel_lease WHERE id = 1")
        if not rows:
            return {"holder": None, "expires": None, "next_run": None}
        holder, expires, next_run = rows[0]
        return {"holder": holder, "expires": expires, "next_run": next_run}

    def set_next_run(self, holder: str, next_run: float) -> None:
        """Schedule the next sweep (only the holder may)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn, "UPDATE sentinel_lease SET next_run = ? WHERE id = 1 AND holder = ?", [next_run, holder]
            )

    # -- baselines --------------------------------------------------------------------------------

    def baselines(self, alias: str, deployment: str) -> dict[str, Baseline]:
        """The deployment's baselines by prompt id."""
        rows = self._rows(
            "SELECT prompt_id, prompt_hash, answer, upstream_model, fingerprint, embedding, created_at "
            "FROM sentinel_baselines WHERE alias = ? AND deployment = ?",
            [alias, deployment],
        )
        return {r[0]: Baseline(r[0], r[1], r[2], r[3], r[4], decode_vector(r[5]), float(r[6])) for r in rows}

    def add_baselines(self, alias: str, deployment: str, run_id: str, items: list[RunItem], now: float) -> None:
        """Store ``items`` as their prompts' baselines (first answers, edited prompts, re-baselines)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            for item in items:
                self.store.execute(
                    conn,
                    "DELETE FROM sentinel_baselines WHERE alias = ? AND deployment = ? AND prompt_id = ?",
                    [alias, deployment, item.prompt_id],
                )
            self._insert_baselines(conn, alias, deployment, run_id, items, now)

    def _insert_baselines(
        self, conn: Any, alias: str, deployment: str, run_id: str, items: list[RunItem], now: float
    ) -> None:
        for item in items:
            if item.answer is None:
                continue
            self.store.execute(
                conn,
                _INSERT_BASELINE,
                [
                    alias,
                    deployment,
                    item.prompt_id,
                    item.prompt_hash,
                    _text(item.answer),
                    _text(item.upstream_model, 500),
                    _text(item.fingerprint, 500),
                    encode_vector(item.embedding),
                    run_id,
                    now,
                ],
            )

    # -- runs -------------------------------------------------------------------------------------

    def save_run(self, run: dict[str, Any], items: list[RunItem]) -> str:
        """Store a finished run and its items; returns its id."""
        run_id = run.get("id") or "sen_" + uuid.uuid4().hex[:20]
        values = [
            run_id,
            run["alias"],
            run["deployment"],
            run["kind"],
            run["status"],
            run["started_at"],
            run.get("finished_at"),
            run["prompts"],
            run["changed"],
            run["failed"],
            run.get("share"),
            int(bool(run.get("model_changed"))),
            int(bool(run.get("fingerprint_changed"))),
            orjson.dumps(run.get("summary") or {}).decode(),
            _text(run.get("actor"), 200),
        ]
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn,
                f"INSERT INTO sentinel_runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                values,
            )
            for item in items:
                self.store.execute(
                    conn,
                    f"INSERT INTO sentinel_items (run_id, {', '.join(_ITEM_COLUMNS)}) "
                    f"VALUES (?, {', '.join('?' * len(_ITEM_COLUMNS))})",
                    [
                        run_id,
                        item.prompt_id,
                        item.status,
                        None if item.exact is None else int(item.exact),
                        item.similarity,
                        _text(item.answer),
                        _text(item.upstream_model, 500),
                        _text(item.fingerprint, 500),
                        item.request_id,
                        _text(item.error, 1000),
                        _text(item.diff),
                    ],
                )
        return str(run_id)

    def list_runs(
        self, limit: int = 50, alias: str | None = None, deployment: str | None = None, changed_only: bool = False
    ) -> list[dict[str, Any]]:
        """Runs, newest first."""
        conditions, params = ["1 = 1"], []
        if alias is not None:
            conditions.append("alias = ?")
            params.append(alias)
        if deployment is not None:
            conditions.append("deployment = ?")
            params.append(deployment)
        if changed_only:
            conditions.append("status = 'changed'")
        rows = self._rows(
            f"SELECT {', '.join(_RUN_COLUMNS)} FROM sentinel_runs WHERE {' AND '.join(conditions)} "
            "ORDER BY started_at DESC, id DESC LIMIT ?",
            [*params, limit],
        )
        return [_run(r) for r in rows]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its items (answers and diffs)."""
        rows = self._rows(f"SELECT {', '.join(_RUN_COLUMNS)} FROM sentinel_runs WHERE id = ?", [run_id])
        if not rows:
            return None
        run = _run(rows[0])
        items = self._rows(
            f"SELECT {', '.join(_ITEM_COLUMNS)} FROM sentinel_items WHERE run_id = ? ORDER BY prompt_id", [run_id]
        )
        run["items"] = [_item(r) for r in items]
        return run

    def latest_shares(self, alias: str | None, deployment: str | None) -> list[tuple[str, str, float]]:
        """(alias, deployment, share) of the newest compared run of each deployment in scope."""

        def scope(prefix: str) -> tuple[str, list[Any]]:
            conditions, params = [f"{prefix}status IN ('changed', 'unchanged')"], []
            if alias is not None:
                conditions.append(f"{prefix}alias = ?")
                params.append(alias)
            if deployment is not None:
                conditions.append(f"{prefix}deployment = ?")
                params.append(deployment)
            return " AND ".join(conditions), params

        inner, inner_params = scope("")
        outer, outer_params = scope("r.")
        rows = self._rows(
            "SELECT r.alias, r.deployment, r.share FROM sentinel_runs r JOIN (SELECT alias, deployment, "
            f"MAX(started_at) AS latest FROM sentinel_runs WHERE {inner} GROUP BY alias, deployment) m "
            f"ON r.alias = m.alias AND r.deployment = m.deployment AND r.started_at = m.latest WHERE {outer}",
            [*inner_params, *outer_params],
        )
        return [(str(r[0]), str(r[1]), float(r[2] or 0.0)) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many runs, and how many found a change."""
        rows = self._rows("SELECT status, COUNT(*) FROM sentinel_runs GROUP BY status")
        by_status = {str(r[0]): int(r[1]) for r in rows}
        return {"runs": sum(by_status.values()), "changes_seen": by_status.get("changed", 0)}

    def prune(self, keep: int) -> int:
        """Delete runs (and items) beyond the newest ``keep``."""
        rows = self._rows("SELECT started_at FROM sentinel_runs ORDER BY started_at DESC LIMIT 1 OFFSET ?", [keep])
        if not rows:
            return 0
        cutoff = rows[0][0]
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn,
                "DELETE FROM sentinel_items WHERE run_id IN (SELECT id FROM sentinel_runs WHERE started_at <= ?)",
                [cutoff],
            )
            cursor = self.store.execute(conn, "DELETE FROM sentinel_runs WHERE started_at <= ?", [cutoff])
            return max(int(cursor.rowcount), 0)


def _run(row: Sequence[Any]) -> dict[str, Any]:
    run = dict(zip(_RUN_COLUMNS, row, strict=True))
    run["model_changed"] = bool(run["model_changed"])
    run["fingerprint_changed"] = bool(run["fingerprint_changed"])
    run["summary"] = orjson.loads(run["summary"]) if run["summary"] else {}
    return run


def _item(row: Sequence[Any]) -> dict[str, Any]:
    item = dict(zip(_ITEM_COLUMNS, row, strict=True))
    item["exact"] = None if item["exact"] is None else bool(item["exact"])
    return item
