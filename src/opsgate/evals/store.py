"""Evaluation tables over the record store's database: datasets, runs, item results and scores.

One class, ``EvalStore``, over a ``SqlRecordStore`` (its connections and dialect; the tables come
from migration ``0007_evals``). Calls block: run them in a worker thread from async code.

Tenancy: every read takes ``tenant`` — a tenant's key passes its tenant and sees only its rows;
an operator passes ``ANY_TENANT`` and sees all, except that a dataset *name* resolves among the shared
(tenant NULL) datasets only (``find_dataset``). Rows written by an operator have tenant NULL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from opsgate.evals.dataset import DatasetError, DatasetItem, dataset_hash, parse_item
from opsgate.store.encoding import record_json, storable_text
from opsgate.store.sql import ERASURE_LOCK, SqlRecordStore, user_hash


class _AnyTenant:
    def __repr__(self) -> str:
        return "ANY_TENANT"


ANY_TENANT: Final = _AnyTenant()
TenantScope = str | None | _AnyTenant
_DATASET_COLUMNS = "id, tenant, name, version, content_hash, items, source, created_at, created_by"
_RUN_COLUMNS = "id, tenant, kind, dataset_id, model, release, arm, status, settings, summary, created_at, finished_at"
_ITEM_COLUMNS = (
    "run_id, item_key, idx, ts, tenant, model, request_id, status, error, input, output, reference, "
    "latency_ms, prompt_tokens, completion_tokens, cost"
)
_SCORE_COLUMNS = "run_id, item_key, scorer, ts, tenant, model, value, passed, details"


@dataclass(frozen=True)
class DatasetVersion:
    """One immutable version of a named dataset."""

    id: str
    tenant: str | None
    name: str
    version: int
    content_hash: str
    items: int
    source: dict[str, Any] | None
    created_at: float
    created_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for the API and CLI."""
        return dict(self.__dict__)


@dataclass
class ItemResult:
    """One item of a run: the call's outcome and its scores (``scores``: scorer -> Score dict)."""

    item_key: str
    idx: int | None
    status: str  # ok | failed
    input: str | None = None
    output: str | None = None
    reference: list[str] | None = None
    error: str | None = None
    request_id: str | None = None
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    scores: dict[str, dict[str, Any]] | None = None
    ts: float = 0.0
    # Not stored: whose live request the item copies and when it was made (online and shadow items), so
    # the writer drops the item when that user was erased after it (``write_results``).
    user: str | None = None
    request_ts: float | None = None


def _json(value: Any) -> str | None:
    # record_json: a lone surrogate in a judge's reason or a reference must not refuse the row.
    return None if value is None else record_json(value).decode()


def _text(value: str | None) -> str | None:
    """Text as the request log stores it (NUL and lone surrogates as U+FFFD): PostgreSQL refuses NUL."""
    return None if value is None else storable_text(value)


def _loads(value: Any) -> Any:
    return None if value is None else orjson.loads(value)


def _tenant_condition(tenant: TenantScope, column: str = "tenant") -> tuple[str, list[Any]]:
    if isinstance(tenant, _AnyTenant):
        return "1 = 1", []
    if tenant is None:
        return f"{column} IS NULL", []
    return f"{column} = ?", [tenant]


class EvalStore:
    """Reads and writes the evaluation tables."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store

    def _rows(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.store.connection() as conn:
            return list(self.store.execute(conn, statement, params).fetchall())

    # -- datasets ---------------------------------------------------------------------------------

    def save_dataset(
        self,
        tenant: str | None,
        name: str,
        items: list[DatasetItem],
        source: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Store ``items`` as the next version of ``name``; the same content as the latest is not a new
        version. Returns the version and whether it was created."""
        check_name(name)
        if not items:
            raise DatasetError(["the dataset has no items"])
        digest = dataset_hash(items)
        condition, params = _tenant_condition(tenant)
        with self.store.connection() as conn, self.store.transaction(conn):
            if self.store.dialect == "postgres":
                self.store.execute(conn, "SELECT pg_advisory_xact_lock(7041913)")
            latest = self.store.execute(
                conn,
                f"SELECT {_DATASET_COLUMNS} FROM eval_datasets WHERE {condition} AND name = ? "
                "ORDER BY version DESC LIMIT 1",
                [*params, name],
            ).fetchone()
            if latest is not None and latest[4] == digest:
                return _dataset(latest), False
            version = DatasetVersion(
                id=f"ds_{uuid.uuid4().hex[:20]}",
                tenant=tenant,
                name=name,
                version=(latest[3] + 1) if latest else 1,
                content_hash=digest,
                items=len(items),
                source=source,
                created_at=time.time(),
                created_by=actor,
            )
            self.store.execute(
                conn,
                f"INSERT INTO eval_datasets ({_DATASET_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    version.id,
                    tenant,
                    name,
                    version.version,
                    digest,
                    len(items),
                    _json(source),
                    version.created_at,
                    actor,
                ],
            )
            rows = [
                (version.id, index, item.content_hash(), orjson.dumps(item.to_dict()).decode())
                for index, item in enumerate(items)
            ]
            self.store.insert_rows(
                conn, "INSERT INTO eval_dataset_items (dataset_id, idx, item_hash, item) VALUES (?,?,?,?)", rows
            )
        from opsgate.audit import append_audit

        # A new version is a state change others rely on (runs and gates name it): it goes in the audit chain.
        details = {"tenant": tenant, "name": name, "version": version.version, "sha256": digest, "items": len(items)}
        append_audit(self.store, actor or "system", "eval_dataset_created", version.id, details)
        return version, True

    def find_dataset(self, tenant: TenantScope, ref: str) -> DatasetVersion | None:
        """A version by id (``ds_…``), ``name@version`` or ``name`` (its latest version).

        An id is global (``ANY_TENANT`` reads any tenant's). A name resolves in one scope only: a
        tenant's own datasets, or, for ``None`` and ``ANY_TENANT``, the shared (tenant NULL) ones —
        so a tenant's dataset named like the operator's never replaces it in the operator's runs and
        gates; pass the tenant to reach its dataset by name."""
        if ref.startswith("ds_"):
            condition, params = _tenant_condition(tenant)
            statement = f"SELECT {_DATASET_COLUMNS} FROM eval_datasets WHERE id = ? AND {condition}"
            rows = self._rows(statement, [ref, *params])
        else:
            condition, params = _tenant_condition(None if isinstance(tenant, _AnyTenant) else tenant)
            name, _, version = ref.partition("@")
            if version:
                if not (version.isascii() and version.isdigit()) or len(version) > 9:
                    return None
                rows = self._rows(
                    f"SELECT {_DATASET_COLUMNS} FROM eval_datasets WHERE name = ? AND version = ? AND {condition}",
                    [name, int(version), *params],
                )
            else:
                rows = self._rows(
                    f"SELECT {_DATASET_COLUMNS} FROM eval_datasets WHERE name = ? AND {condition} "
                    "ORDER BY version DESC LIMIT 1",
                    [name, *params],
                )
        return _dataset(rows[0]) if rows else None

    def list_datasets(self, tenant: TenantScope, limit: int = 200) -> list[DatasetVersion]:
        """Every version, newest first."""
        condition, params = _tenant_condition(tenant)
        rows = self._rows(
            f"SELECT {_DATASET_COLUMNS} FROM eval_datasets WHERE {condition} ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        )
        return [_dataset(r) for r in rows]

    def dataset_items(self, dataset_id: str) -> list[DatasetItem]:
        """A version's items, in order."""
        rows = self._rows("SELECT item FROM eval_dataset_items WHERE dataset_id = ? ORDER BY idx", [dataset_id])
        return [parse_item(orjson.loads(r[0])) for r in rows]

    # -- runs -------------------------------------------------------------------------------------

    def create_run(
        self,
        tenant: str | None,
        model: str,
        *,
        kind: str = "offline",
        dataset_id: str | None = None,
        settings: dict[str, Any] | None = None,
        actor: str | None = None,
        run_id: str | None = None,
        release: str | None = None,
        arm: str | None = None,
    ) -> str:
        """A new run row (status ``running``); returns its id."""
        run_id = run_id or f"run_{uuid.uuid4().hex[:20]}"
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn,
                "INSERT INTO eval_runs (id, tenant, kind, dataset_id, model, release, arm, status, settings, "
                "created_at, created_by) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [run_id, tenant, kind, dataset_id, model, release, arm, "running", _json(settings), time.time(), actor],
            )
        return run_id

    def ensure_online_run(self, tenant: str | None, model: str) -> str:
        """The online run of (tenant, model): one per pair, created on first use."""
        run_id = f"online:{tenant or '-'}:{model}"
        if not self._rows("SELECT id FROM eval_runs WHERE id = ?", [run_id]):
            try:
                self.create_run(tenant, model, kind="online", run_id=run_id, settings={"source": "live traffic"})
            except Exception:
                if not self._rows("SELECT id FROM eval_runs WHERE id = ?", [run_id]):
                    raise  # not a race with another writer
        return run_id

    def get_run(self, tenant: TenantScope, run_id: str) -> dict[str, Any] | None:
        """One run (with settings and summary), or None (also for another tenant's run)."""
        condition, params = _tenant_condition(tenant)
        rows = self._rows(f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE id = ? AND {condition}", [run_id, *params])
        return _run(rows[0]) if rows else None

    def list_runs(self, tenant: TenantScope, limit: int = 100) -> list[dict[str, Any]]:
        """Runs, newest first."""
        condition, params = _tenant_condition(tenant)
        rows = self._rows(
            f"SELECT {_RUN_COLUMNS} FROM eval_runs WHERE {condition} ORDER BY created_at DESC LIMIT ?",
            [*params, limit],
        )
        return [_run(r) for r in rows]

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Mark a run finished (``completed`` or ``interrupted``) with its summary."""
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(
                conn,
                "UPDATE eval_runs SET status = ?, summary = ?, finished_at = ? WHERE id = ?",
                [status, _json(summary), time.time(), run_id],
            )

    def set_status(self, run_id: str, status: str) -> None:
        """Mark a run running again (resume)."""
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.execute(conn, "UPDATE eval_runs SET status = ? WHERE id = ?", [status, run_id])

    # -- items and scores -------------------------------------------------------------------------

    def write_results(self, run_id: str, tenant: str | None, model: str, results: list[ItemResult]) -> int:
        """Store items and their scores (replacing earlier attempts of the same items) in one transaction.
        Texts are stored as the request log stores them (NUL as U+FFFD), so a live prompt that the
        request log took is never refused here (online and shadow items copy live traffic).

        An item copying a request of a user erased since (``erasures``, checked in this transaction
        under the erasure lock: see ``store/sql.py``'s ``erase_user``) is not stored; returns how many
        items were dropped so."""
        if not results:
            return 0
        keys = [(run_id, r.item_key) for r in results]
        with self.store.connection() as conn, self.store.transaction(conn):
            kept = self._not_erased(conn, results)
            self._write(conn, run_id, tenant, model, keys, kept)
        return len(results) - len(kept)

    def _not_erased(self, conn: Any, results: list[ItemResult]) -> list[ItemResult]:
        """``results`` less the items whose user was erased at or after their request (the request log's
        own rule for late records). Runs inside the writing transaction, after taking the erasure lock
        shared (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers): an erasure either
        committed before, and its tombstone is seen here, or starts after this commits, and deletes what
        this stored — an erasure on another replica cannot slip in between the check and the insert."""
        users = {user_hash(storable_text(r.user)) for r in results if r.user is not None}
        if not users:
            return results
        if self.store.dialect == "postgres":
            self.store.execute(conn, "SELECT pg_advisory_xact_lock_shared(?)", [ERASURE_LOCK])
        hashes = sorted(users)
        erased: dict[str, float] = {}
        for start in range(0, len(hashes), 500):
            chunk = hashes[start : start + 500]
            rows = self.store.execute(
                conn, f"SELECT user_id, erased_at FROM erasures WHERE user_id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            erased.update({row[0]: float(row[1]) for row in rows})
        if not erased:
            return results
        return [r for r in results if r.user is None or not _erased_after(erased, r)]

    def _write(
        self,
        conn: Any,
        run_id: str,
        tenant: str | None,
        model: str,
        keys: list[tuple[str, str]],
        results: list[ItemResult],
    ) -> None:
        item_rows = []
        score_rows = []
        for r in results:
            ts = r.ts or time.time()
            item_rows.append(
                (
                    run_id,
                    r.item_key,
                    r.idx,
                    ts,
                    tenant,
                    model,
                    r.request_id,
                    r.status,
                    _text(r.error),
                    _text(r.input),
                    _text(r.output),
                    _json(r.reference),
                    r.latency_ms,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cost,
                )
            )
            for scorer, score in (r.scores or {}).items():
                passed = score.get("passed")
                score_rows.append(
                    (
                        run_id,
                        r.item_key,
                        scorer,
                        ts,
                        tenant,
                        model,
                        score.get("value"),
                        None if passed is None else int(bool(passed)),
                        _json(score.get("details")),
                    )
                )
        # Earlier attempts of every key go, also of an item dropped as erased (its copy must not stay).
        self.store.insert_rows(conn, "DELETE FROM eval_scores WHERE run_id = ? AND item_key = ?", keys)
        self.store.insert_rows(conn, "DELETE FROM eval_items WHERE run_id = ? AND item_key = ?", keys)
        if item_rows:
            self.store.insert_rows(
                conn, f"INSERT INTO eval_items ({_ITEM_COLUMNS}) VALUES ({','.join('?' * 16)})", item_rows
            )
        if score_rows:
            self.store.insert_rows(
                conn, f"INSERT INTO eval_scores ({_SCORE_COLUMNS}) VALUES ({','.join('?' * 9)})", score_rows
            )

    def add_scores(self, run_id: str, item_key: str, tenant: str | None, model: str, scores: dict[str, Any]) -> None:
        """Add or replace scores of an item already stored (pairwise judgements after both runs)."""
        rows = [
            (run_id, item_key, name, time.time(), tenant, model, s.get("value"), _passed(s), _json(s.get("details")))
            for name, s in scores.items()
        ]
        with self.store.connection() as conn, self.store.transaction(conn):
            self.store.insert_rows(
                conn,
                "DELETE FROM eval_scores WHERE run_id = ? AND item_key = ? AND scorer = ?",
                [(run_id, item_key, name) for name in scores],
            )
            self.store.insert_rows(
                conn, f"INSERT INTO eval_scores ({_SCORE_COLUMNS}) VALUES ({','.join('?' * 9)})", rows
            )

    def finished_keys(self, run_id: str) -> set[str]:
        """Items of a run that finished successfully (a resume skips them)."""
        rows = self._rows("SELECT item_key FROM eval_items WHERE run_id = ? AND status = 'ok'", [run_id])
        return {r[0] for r in rows}

    def iter_items(self, run_id: str, after: str | None = None, limit: int = 10_000) -> Iterator[dict[str, Any]]:
        """A run's items with their scores, by item order (``after``: the item key to continue from)."""
        params: list[Any] = [run_id]
        where = "run_id = ?"
        if after is not None:
            where += " AND item_key > ?"
            params.append(after)
        statement = f"SELECT {_ITEM_COLUMNS} FROM eval_items WHERE {where} ORDER BY item_key LIMIT ?"
        rows = self._rows(statement, [*params, limit])
        if not rows:
            return
        keys = [r[1] for r in rows]
        scores: dict[str, dict[str, Any]] = {k: {} for k in keys}
        placeholders = ",".join("?" * len(keys))
        for s in self._rows(
            f"SELECT item_key, scorer, value, passed, details FROM eval_scores WHERE run_id = ? "
            f"AND item_key IN ({placeholders})",
            [run_id, *keys],
        ):
            scores[s[0]][s[1]] = {
                "value": s[2],
                "passed": None if s[3] is None else bool(s[3]),
                "details": _loads(s[4]),
            }
        names = [c.strip() for c in _ITEM_COLUMNS.split(",")]
        for row in rows:
            item = dict(zip(names, row, strict=True))
            item["reference"] = _loads(item["reference"])
            item["scores"] = scores[item["item_key"]]
            yield item

    def all_items(self, run_id: str) -> list[dict[str, Any]]:
        """Every item of a run (paged internally)."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            page = list(self.iter_items(run_id, after, 5000))
            out.extend(page)
            if len(page) < 5000:
                return out
            after = page[-1]["item_key"]

    def score_mean(
        self,
        model: str | None,
        scorer: str,
        since: float,
        until: float,
        tenant: TenantScope = ANY_TENANT,
        kind: str | None = "online",
    ) -> tuple[float | None, int]:
        """Mean and count of a scorer's values in [since, until) — the window query drift and SLIs use."""
        condition, params = _tenant_condition(tenant, "s.tenant")
        where = f"s.scorer = ? AND s.ts >= ? AND s.ts < ? AND s.value IS NOT NULL AND {condition}"
        args: list[Any] = [scorer, since, until, *params]
        if model is not None:
            where += " AND s.model = ?"
            args.append(model)
        if kind is not None:
            where += " AND r.kind = ?"
            args.append(kind)
        row = self._rows(
            f"SELECT avg(s.value), count(*) FROM eval_scores s JOIN eval_runs r ON r.id = s.run_id WHERE {where}", args
        )[0]
        return (None if row[0] is None else float(row[0])), int(row[1])


def _erased_after(erased: dict[str, float], result: ItemResult) -> bool:
    assert result.user is not None
    at = erased.get(user_hash(storable_text(result.user)))
    made = result.request_ts if result.request_ts is not None else result.ts
    return at is not None and at >= made


def _passed(score: dict[str, Any]) -> int | None:
    passed = score.get("passed")
    return None if passed is None else int(bool(passed))


def check_name(name: str) -> None:
    """Dataset names: 1-100 of letters, digits and ._- (no @, which separates a version)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise DatasetError([f"dataset name '{name[:100]}' must be 1-100 letters, digits, '.', '_' or '-'"])


def _dataset(row: Sequence[Any]) -> DatasetVersion:
    return DatasetVersion(
        id=row[0],
        tenant=row[1],
        name=row[2],
        version=int(row[3]),
        content_hash=row[4],
        items=int(row[5]),
        source=_loads(row[6]),
        created_at=float(row[7]),
        created_by=row[8],
    )


def _run(row: Sequence[Any]) -> dict[str, Any]:
    names = [c.strip() for c in _RUN_COLUMNS.split(",")]
    run = dict(zip(names, row, strict=True))
    run["settings"] = _loads(run["settings"])
    run["summary"] = _loads(run["summary"])
    return run
