"""The record store's SQL, shared by SQLite and PostgreSQL; subclasses supply connections and dialect bits.

Statements are written with ``?`` placeholders; the PostgreSQL store rewrites them to ``%s``.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import orjson

from opsgate.audit.chain import append_entry
from opsgate.domain.config import RetentionConfig
from opsgate.domain.errors import InvalidRequestError
from opsgate.store.encoding import storable_text
from opsgate.store.query import RecordQuery, encode_cursor

# The columns of ``requests``, in insert order. ``request``/``response`` hold JSON or ciphertext.
COLUMNS: tuple[str, ...] = (
    "id",
    "ts",
    "tenant",
    "api_key_id",
    "user_id",
    "endpoint",
    "model",
    "deployment",
    "status",
    "error_type",
    "error_message",
    "stream",
    "cached",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "latency_ms",
    "ttft_ms",
    "cost",
    "input_text",
    "output_text",
    "request",
    "response",
    "payload_key_id",
    "tags",
    "metadata",
    "client_request_id",  # the client's X-Request-Id (``id`` is always the gateway's)
    # What the release stage applied (migration 0009): prompt name and version, release, experiment, arm.
    "prompt",
    "prompt_version",
    "release_id",
    "experiment",
    "arm",
    # Quality SLI bits (migration 0010, slo/quality.py): written for the rollups, not read back (the
    # guard verdicts they summarise are in ``tags``).
    "quality_flags",
)
_WRITE_ONLY = ("quality_flags",)
# What reads return: the columns plus ``stored_at``, when the writer inserted the row (the store's clock).
READ_COLUMNS: tuple[str, ...] = (*(c for c in COLUMNS if c not in _WRITE_ONLY), "stored_at")
LIST_COLUMNS = tuple(c for c in READ_COLUMNS if c not in ("request", "response"))
_JSON_COLUMNS = ("tags", "metadata", "request", "response")
# Rollup of a batch of new rows (a table or CTE named by the dialect) into usage_daily.
USAGE_UPSERT = (
    "ON CONFLICT (day, tenant, model, user_id) DO UPDATE SET "
    "requests = usage_daily.requests + excluded.requests, errors = usage_daily.errors + excluded.errors, "
    "prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens, "
    "completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens, "
    "cost = usage_daily.cost + excluded.cost, "
    "priced_requests = usage_daily.priced_requests + excluded.priced_requests, "
    "latency_ms_sum = usage_daily.latency_ms_sum + excluded.latency_ms_sum"
)
USAGE_COLUMNS = (
    "day, tenant, model, user_id, requests, errors, prompt_tokens, completion_tokens, cost, priced_requests, "
    "latency_ms_sum"
)
USAGE_DIMENSIONS = {"model": "model", "user": "user_id", "day": "day", "tenant": "tenant"}
# Cuts the daily rollup does not keep: read from the requests of the window (indexed by ts).
RELEASE_DIMENSIONS = {
    "prompt_version": "prompt || '@' || CAST(prompt_version AS TEXT)",
    "release": "release_id",
    "experiment_arm": "experiment || '/' || arm",
}


# Erasure against the writers (the record writer's batches, evals/store.py ``write_results``): the
# erasure takes this PostgreSQL transaction lock exclusively, writers shared, so a row or copy is either
# stored before the erasure (which then deletes it) or checked against its tombstone after.
ERASURE_LOCK = 7041916


def user_hash(user: str) -> str:
    """How an erased user is remembered: not their id, only enough to recognise late records."""
    return hashlib.sha256(user.encode()).hexdigest()


def day_of(ts: float) -> str:
    """The UTC day of an epoch time, as the rollup key."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


class SqlRecordStore(ABC):
    """Writes batches of records and answers the admin queries, over one SQL dialect."""

    dialect = "sql"

    # -- dialect hooks ----------------------------------------------------------------------------

    @abstractmethod
    def connection(self) -> AbstractContextManager[Any]:
        """A connection for this thread, as a context manager."""

    @abstractmethod
    def transaction(self, conn: Any) -> AbstractContextManager[None]:
        """A write transaction on ``conn``."""

    @abstractmethod
    def text_condition(self, text: str, since: float | None = None) -> tuple[str, list[Any]]:
        """The WHERE fragment for a full-text search of input and output."""

    @abstractmethod
    def tag_condition(self, key: str, value: str) -> tuple[str, list[Any]]:
        """The WHERE fragment for ``tags[key] == value``."""

    @abstractmethod
    def delete_limited(self, condition: str) -> str:
        """A DELETE of at most ``?`` rows matching ``condition``."""

    def sql(self, statement: str) -> str:
        """The statement in this dialect's placeholder style."""
        return statement

    def execute(self, conn: Any, statement: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement."""
        return conn.execute(self.sql(statement), params)

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""

    # -- writing ----------------------------------------------------------------------------------

    def write_batch(self, records: list[dict[str, Any]]) -> int:
        """Store record dicts (see ``write_lines``); returns how many were new."""
        return self.write_lines([orjson.dumps(r) for r in records])

    def write_lines(self, lines: list[bytes]) -> int:
        """Store journal lines (one JSON record each) not already stored, and roll them up.

        Replays are idempotent: rows already stored are skipped and rollups count only what was
        inserted; records of a user erased after they were journaled are dropped.
        """
        if not lines:
            return 0
        with self.connection() as conn, self.transaction(conn):
            return self.insert_lines(conn, lines)

    @abstractmethod
    def insert_lines(self, conn: Any, lines: list[bytes]) -> int:
        """Insert the records of journal lines (inside a transaction); returns how many were new."""

    def insert_rows(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """Run one statement for many parameter rows."""
        conn.executemany(self.sql(statement), rows)

    def _upsert_usage(self, conn: Any, rows: list[tuple[Any, ...]]) -> None:
        statement = f"INSERT INTO usage_daily ({USAGE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?) {USAGE_UPSERT}"
        self.insert_rows(conn, statement, rows)

    # -- reading ----------------------------------------------------------------------------------

    def _where(self, query: RecordQuery, *, text: bool = True) -> tuple[str, list[Any]]:
        """The query's filters as a WHERE clause; ``text=False`` leaves out the full-text term."""
        conditions: list[str] = []
        params: list[Any] = []

        def add(condition: str, *values: Any) -> None:
            conditions.append(condition)
            params.extend(values)

        if query.since is not None:
            add("ts >= ?", query.since)
        if query.until is not None:
            add("ts <= ?", query.until)
        if query.stored_since is not None:
            add("stored_at >= ?", query.stored_since)
        for column, value in (
            ("model", query.model),
            ("deployment", query.deployment),
            ("user_id", query.user),
            ("tenant", query.tenant),
            ("client_request_id", query.client_request_id),
            ("prompt", query.prompt),
            ("prompt_version", query.prompt_version),
            ("release_id", query.release),
            ("experiment", query.experiment),
            ("arm", query.arm),
        ):
            if value is not None:
                add(f"{column} = ?", value)
        status = query.status_range()
        if status is not None:
            add("status BETWEEN ? AND ?", *status)
        for column, low, high in (
            ("latency_ms", query.min_latency_ms, query.max_latency_ms),
            ("cost", query.min_cost, query.max_cost),
        ):
            if low is not None:
                add(f"{column} >= ?", low)
            if high is not None:
                add(f"{column} <= ?", high)
        for key, value in query.tags.items():
            condition, values = self.tag_condition(key, value)
            add(condition, *values)
        if query.text and text:
            condition, values = self.text_condition(query.text, query.since)
            add(condition, *values)
        if query.cursor is not None:
            ts, rid = query.cursor
            add("(ts < ? OR (ts = ? AND id < ?))", ts, ts, rid)
        return (" WHERE " + " AND ".join(conditions)) if conditions else "", params

    @staticmethod
    def _row_dict(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
        item = dict(zip(columns, row, strict=True))
        for column in ("stream", "cached"):
            if column in item and item[column] is not None:
                item[column] = bool(item[column])
        for column in ("tags", "metadata"):
            if isinstance(item.get(column), str):
                item[column] = orjson.loads(item[column])
        return item

    def search(self, query: RecordQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of matching records (newest first, without payloads) and the next page's cursor."""
        with self.connection() as conn:
            rows = self.search_rows(conn, query, query.limit + 1)
        items = [self._row_dict(LIST_COLUMNS, row) for row in rows[: query.limit]]
        cursor = None
        if len(rows) > query.limit and items:
            cursor = encode_cursor(items[-1]["ts"], items[-1]["id"])
        return items, cursor

    def search_rows(self, conn: Any, query: RecordQuery, limit: int) -> Sequence[Sequence[Any]]:
        """The first ``limit`` matching rows (``LIST_COLUMNS``), newest first; a dialect may plan it itself."""
        where, params = self._where(query)
        statement = f"SELECT {','.join(LIST_COLUMNS)} FROM requests{where} ORDER BY ts DESC, id DESC LIMIT ?"
        return self.execute(conn, statement, [*params, limit]).fetchall()  # type: ignore[no-any-return]

    def iter_records(self, query: RecordQuery, page: int = 1000) -> Iterator[dict[str, Any]]:
        """Every matching record with payloads, newest first, fetched a page at a time (for export)."""
        query = RecordQuery(**{**query.__dict__, "limit": page})
        while True:
            where, params = self._where(query)
            statement = f"SELECT {','.join(READ_COLUMNS)} FROM requests{where} ORDER BY ts DESC, id DESC LIMIT ?"
            with self.connection() as conn:
                rows = self.execute(conn, statement, [*params, page]).fetchall()
            for row in rows:
                yield self._row_dict(READ_COLUMNS, row)
            if len(rows) < page:
                return
            last = rows[-1]
            query.cursor = (last[COLUMNS.index("ts")], last[0])

    def latest_stored_at(self) -> float:
        """When the newest row was stored (the store's clock; 0.0 for an empty log): a follower's start."""
        with self.connection() as conn:
            row = self.execute(conn, "SELECT max(stored_at) FROM requests").fetchone()
        return float(row[0] or 0.0)

    def get(self, record_id: str) -> dict[str, Any] | None:
        """One record with its payloads (still as stored: JSON text or ciphertext)."""
        with self.connection() as conn:
            statement = f"SELECT {','.join(READ_COLUMNS)} FROM requests WHERE id = ?"
            row = self.execute(conn, statement, [record_id]).fetchone()
        return self._row_dict(READ_COLUMNS, row) if row else None

    def usage(
        self, by: str, since: float | None, until: float | None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Usage and cost grouped by model, user, day or tenant (the daily rollup), or by prompt version,
        release or experiment arm (the window's requests)."""
        if by in RELEASE_DIMENSIONS:
            return self._usage_from_requests(by, since, until, tenant)
        if by not in USAGE_DIMENSIONS:
            known = ", ".join([*USAGE_DIMENSIONS, *RELEASE_DIMENSIONS])
            raise InvalidRequestError(f"by must be one of {known}.", param="by")
        column = USAGE_DIMENSIONS[by]
        conditions, params = [], []
        if since is not None:
            conditions.append("day >= ?")
            params.append(day_of(since))
        if until is not None:
            conditions.append("day <= ?")
            params.append(day_of(until))
        if tenant is not None:
            conditions.append("tenant = ?")
            params.append(tenant)
        where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
        statement = (
            f"SELECT {column}, SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), "
            f"SUM(cost), SUM(priced_requests), SUM(latency_ms_sum) FROM usage_daily{where} "
            f"GROUP BY {column} ORDER BY {column}"
        )
        with self.connection() as conn:
            rows = self.execute(conn, statement, params).fetchall()
        return self._usage_rows(by, rows)

    def _usage_from_requests(
        self, by: str, since: float | None, until: float | None, tenant: str | None
    ) -> list[dict[str, Any]]:
        key = RELEASE_DIMENSIONS[by]
        conditions, params = [f"{key} IS NOT NULL"], []
        for condition, value in (("ts >= ?", since), ("ts <= ?", until), ("tenant = ?", tenant)):
            if value is not None:
                conditions.append(condition)
                params.append(value)
        # Errors as usage_daily counts them (status >= 400), so every cut of usage agrees.
        statement = (
            f"SELECT {key}, count(*), count(CASE WHEN status >= 400 THEN 1 END), coalesce(sum(prompt_tokens), 0), "
            "coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0), count(cost), coalesce(sum(latency_ms), 0) "
            f"FROM requests WHERE {' AND '.join(conditions)} GROUP BY 1 ORDER BY 1"
        )
        with self.connection() as conn:
            rows = self.execute(conn, statement, params).fetchall()
        return self._usage_rows(by, rows)

    @staticmethod
    def _usage_rows(by: str, rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        out = []
        for key, requests, errors, prompt, completion, cost, priced, latency in rows:
            out.append(
                {
                    by: key,
                    "requests": int(requests),
                    "errors": int(errors),
                    "prompt_tokens": int(prompt),
                    "completion_tokens": int(completion),
                    "cost": float(cost) if priced else None,
                    "priced_requests": int(priced),
                    "mean_latency_ms": float(latency) / int(requests) if requests else None,
                }
            )
        return out

    # -- privacy ----------------------------------------------------------------------------------

    def user_traces(self, user: str) -> dict[str, int]:
        """How many rows anywhere still name ``user`` or copy their requests (the proof an erasure shows)."""
        with self.connection() as conn:
            return {
                "requests": self.execute(conn, "SELECT COUNT(*) FROM requests WHERE user_id = ?", [user]).fetchone()[0],
                "usage_daily": self.execute(
                    conn, "SELECT COUNT(*) FROM usage_daily WHERE user_id = ?", [user]
                ).fetchone()[0],
                "audit_log": self.execute(
                    conn,
                    "SELECT COUNT(*) FROM audit_log WHERE target = ? OR details LIKE ? ESCAPE '!'",
                    [user, '%"' + user.replace("!", "!!").replace("%", "!%").replace("_", "!_") + '"%'],
                ).fetchone()[0],
                **self._copy_traces(conn, user),
            }

    def _copy_traces(self, conn: Any, user: str) -> dict[str, int]:
        # Copies of the user's requests the quality loop keeps (joined through the requests still there),
        # and feedback that names the user or comments on one of their requests.
        counts: dict[str, int] = {}
        for table, condition in (
            ("eval_items", _OF_USER_ITEMS),
            ("eval_scores", _OF_USER_SCORES),
            ("feedback", _OF_USER_FEEDBACK + " AND (user_id IS NOT NULL OR comment IS NOT NULL)"),
        ):
            row = self.execute(conn, f"SELECT COUNT(*) FROM {table} WHERE {condition}", _params(condition, user))
            counts[table] = row.fetchone()[0]
        return counts

    def erase_user(self, user: str, actor: str) -> dict[str, Any]:
        """Delete every record of ``user`` and the evaluation items and scores copied from them; strip the
        user and comment from feedback on them or by them; fold their usage into the anonymous row; audit it.

        Feedback keeps its rating (as usage keeps its totals), so CSAT objectives do not move because
        someone was erased.
        """
        user = storable_text(user)  # as the writer stored it (NUL as U+FFFD), so the id matches
        now = time.time()
        before = self.user_traces(user)
        hashed = user_hash(user)
        with self.connection() as conn, self.transaction(conn):
            if self.dialect == "postgres":  # wait for copies being stored now; hold new ones until the tombstone
                self.execute(conn, "SELECT pg_advisory_xact_lock(?)", [ERASURE_LOCK])
            # Copies first: they are found through the user's requests, which go next.
            scores = self.execute(
                conn, f"DELETE FROM eval_scores WHERE {_OF_USER_SCORES}", _params(_OF_USER_SCORES, user)
            ).rowcount
            items = self.execute(
                conn, f"DELETE FROM eval_items WHERE {_OF_USER_ITEMS}", _params(_OF_USER_ITEMS, user)
            ).rowcount
            feedback = self.execute(
                conn,
                f"UPDATE feedback SET user_id = NULL, comment = NULL WHERE {_OF_USER_FEEDBACK}",
                _params(_OF_USER_FEEDBACK, user),
            ).rowcount
            # The proof for the copies is taken here, in the erasure's transaction, while the requests
            # that lead to them still exist: after the commit that join finds nothing by construction.
            copies_left = self._copy_traces(conn, user)
            deleted = self.execute(conn, "DELETE FROM requests WHERE user_id = ?", [user]).rowcount
            usage_rows = self.execute(
                conn,
                "SELECT day, tenant, model, requests, errors, prompt_tokens, completion_tokens, cost, "
                "priced_requests, latency_ms_sum FROM usage_daily WHERE user_id = ?",
                [user],
            ).fetchall()
            self.execute(conn, "DELETE FROM usage_daily WHERE user_id = ?", [user])
            if usage_rows:
                self._upsert_usage(conn, [(r[0], r[1], r[2], "", *r[3:]) for r in usage_rows])
            self.execute(conn, "DELETE FROM erasures WHERE user_id = ?", [hashed])
            self.execute(conn, "INSERT INTO erasures (user_id, erased_at) VALUES (?, ?)", [hashed, now])
            details = {
                "requests_deleted": deleted,
                "usage_rows_anonymised": len(usage_rows),
                "eval_items_deleted": items,
                "eval_scores_deleted": scores,
                "feedback_anonymised": feedback,
            }
            # In the erasure's own transaction: the deletion and its audit entry commit together.
            append_entry(self, conn, actor, "erase_user", f"user-sha256:{hashed[:16]}", details, ts=now)
        after = {**self.user_traces(user), **copies_left}
        return {"user_sha256": hashed, "before": before, "after": after, **details}

    def audit(self, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
        """Append an audit entry to the hash chain (``opsgate.audit.append_audit`` is the public call)."""
        with self.connection() as conn, self.transaction(conn):
            append_entry(self, conn, actor, action, target, details)

    def audit_entries(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries."""
        columns = ("seq", "ts", "actor", "action", "target", "details")
        with self.connection() as conn:
            rows = self.execute(
                conn, f"SELECT {','.join(columns)} FROM audit_log ORDER BY seq DESC LIMIT ?", [limit]
            ).fetchall()
        return [{**dict(zip(columns, r, strict=True)), "details": orjson.loads(r[5]) if r[5] else None} for r in rows]

    def delete_expired(self, retention: RetentionConfig, now: float | None = None, pause: float = 0.0) -> int:
        """Delete records past their retention, and the copies of live traffic (evaluation items and
        scores of online and shadow runs, feedback) past the same rule by their own time, ``batch_size``
        rows per transaction; returns how many requests, items and feedback rows went (an item's scores
        go with it, uncounted)."""
        now = time.time() if now is None else now
        deleted = 0
        for condition, params in retention_conditions(retention, now):
            for delete in (self._expire_requests, self._expire_live_items, self._expire_feedback):
                while True:
                    with self.connection() as conn, self.transaction(conn):
                        count = max(delete(conn, condition, [*params, retention.batch_size]), 0)
                    deleted += count
                    if count < retention.batch_size:
                        break
                    if pause:
                        time.sleep(pause)  # let the writer and readers in between batches
        return deleted

    def _expire_requests(self, conn: Any, condition: str, params: list[Any]) -> int:
        return int(self.execute(conn, self.delete_limited(condition), params).rowcount)

    def _expire_live_items(self, conn: Any, condition: str, params: list[Any]) -> int:
        # Items and their scores go together, by key: scores carry the item's time, but judge scores
        # added later carry their own, and neither may outlive the other. Offline runs (dataset items,
        # what gates compare against) are not copies of traffic and are kept.
        keys = self.execute(conn, expired_live_items(condition), params).fetchall()
        if keys:
            rows = [tuple(k) for k in keys]
            self.insert_rows(conn, "DELETE FROM eval_scores WHERE run_id = ? AND item_key = ?", rows)
            self.insert_rows(conn, "DELETE FROM eval_items WHERE run_id = ? AND item_key = ?", rows)
        return len(keys)

    def _expire_feedback(self, conn: Any, condition: str, params: list[Any]) -> int:
        statement = f"DELETE FROM feedback WHERE id IN (SELECT id FROM feedback WHERE {condition} LIMIT ?)"
        return int(self.execute(conn, statement, params).rowcount)


# What an erasure reaches beyond the user's own rows: the copies made of their requests (by request id).
_USER_REQUESTS = "SELECT id FROM requests WHERE user_id = ?"
_OF_USER_ITEMS = f"request_id IN ({_USER_REQUESTS})"
_OF_USER_SCORES = f"(run_id, item_key) IN (SELECT run_id, item_key FROM eval_items WHERE {_OF_USER_ITEMS})"
_OF_USER_FEEDBACK = f"(user_id = ? OR request_id IN ({_USER_REQUESTS}))"


def expired_live_items(condition: str) -> str:
    """Keys of items of runs that copy live requests (evals/online.py, releases/shadow.py: kinds online and
    shadow, which retention covers) matching a retention ``condition`` (``ts < ? AND …``), ``LIMIT ?``.

    The run's kind is a correlated ``EXISTS``, not ``run_id IN (live runs)``: with the ``IN`` list
    SQLite's planner walked every live item through the primary key (~0.1 s a pass at 200k items, none
    expired); now it walks the ``ts`` index (migration 0014) from the oldest item up to the cutoff.
    PostgreSQL plans both as the same semi-join. Offline items past the cutoff are walked too (and
    kept): their number is what a pass costs on SQLite, not the live items'."""
    return (
        f"SELECT run_id, item_key FROM eval_items WHERE {condition} AND EXISTS (SELECT 1 FROM eval_runs r "
        "WHERE r.id = eval_items.run_id AND r.kind IN ('online', 'shadow')) LIMIT ?"
    )


def _params(condition: str, user: str) -> list[Any]:
    return [user] * condition.count("?")


def retention_conditions(retention: RetentionConfig, now: float) -> list[tuple[str, list[Any]]]:
    """One (condition, params) per rule: expired under that rule and not covered by a more specific one."""

    def specificity(rule: Any) -> int:
        return (rule.tenant is not None) * 2 + (rule.model is not None)

    def matches(rule: Any) -> tuple[str, list[Any]]:
        parts, params = [], []
        if rule.tenant is not None:
            parts.append("tenant = ?")
            params.append(rule.tenant)
        if rule.model is not None:
            parts.append("model = ?")
            params.append(rule.model)
        return (" AND ".join(parts) or "1=1"), params

    rules = sorted(retention.rules, key=specificity, reverse=True)
    out: list[tuple[str, list[Any]]] = []
    for index, rule in enumerate(rules):
        condition, params = matches(rule)
        condition = f"ts < ? AND {condition}"
        params = [now - rule.days * 86400, *params]
        for other in rules[:index]:
            if specificity(other) > specificity(rule):
                other_condition, other_params = matches(other)
                condition += f" AND NOT ({other_condition})"
                params += other_params
        out.append((condition, params))
    if retention.default_days is not None:
        condition, params = "ts < ?", [now - retention.default_days * 86400]
        for rule in rules:
            other_condition, other_params = matches(rule)
            condition += f" AND NOT ({other_condition})"
            params += other_params
        out.append((condition, params))
    return out
