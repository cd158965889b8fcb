"""The record store on PostgreSQL: shared by every gateway replica, trigram-indexed search."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from opsgate.store import rollups
from opsgate.store.encoding import storable_json_text
from opsgate.store.migrations import migrate_postgres
from opsgate.store.query import RecordQuery
from opsgate.store.sql import COLUMNS, ERASURE_LOCK, LIST_COLUMNS, USAGE_COLUMNS, USAGE_UPSERT, SqlRecordStore

_SELECT_BATCH = ", ".join(f"coalesce({c}, false)" if c in ("stream", "cached") else c for c in COLUMNS)
_INSERT_BATCH = (
    "WITH batch AS (SELECT DISTINCT ON (id) * FROM jsonb_populate_recordset(NULL::requests, %s::jsonb)), "
    # Records journaled before their user's erasure and arriving after it are not stored, and the
    # online/shadow items copied from them go too (stored before the erasure while the request row was
    # not there, they were out of its reach): all sub-statements see one snapshot, so the scores are
    # found through the items this statement deletes.
    "gone AS (SELECT b.id FROM batch b WHERE b.user_id IS NOT NULL AND EXISTS (SELECT 1 FROM erasures e "
    "  WHERE e.user_id = encode(sha256(convert_to(b.user_id, 'UTF8')), 'hex') AND e.erased_at >= b.ts)), "
    "fresh AS (SELECT * FROM batch b WHERE NOT EXISTS (SELECT 1 FROM gone g WHERE g.id = b.id)), "
    "gone_scores AS (DELETE FROM eval_scores s USING eval_items i WHERE i.request_id IN (SELECT id FROM gone) "
    "  AND s.run_id = i.run_id AND s.item_key = i.item_key), "
    "gone_items AS (DELETE FROM eval_items WHERE request_id IN (SELECT id FROM gone)), "
    f"ins AS (INSERT INTO requests ({', '.join(COLUMNS)}, stored_at) "
    f"  SELECT {_SELECT_BATCH}, extract(epoch FROM clock_timestamp()) FROM fresh "
    "  ON CONFLICT (id) DO NOTHING RETURNING ts, tenant, model, user_id, status, prompt_tokens, "
    "  completion_tokens, cost, latency_ms, deployment, ttft_ms, quality_flags), "
    f"r10 AS ({rollups.rollup_upsert(rollups.FINE_TABLE, rollups.FINE_SECONDS, 'ins', rollups.POSTGRES_BUCKET)}), "
    f"r1h AS ({rollups.rollup_upsert(rollups.HOUR_TABLE, rollups.HOUR_SECONDS, 'ins', rollups.POSTGRES_BUCKET)}), "
    f"up AS (INSERT INTO usage_daily ({USAGE_COLUMNS}) "
    "  SELECT to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), coalesce(tenant, ''), "
    "  coalesce(model, ''), coalesce(user_id, ''), count(*), count(*) FILTER (WHERE status >= 400), "
    "  coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0), "
    f"  count(cost), coalesce(sum(latency_ms), 0) FROM ins GROUP BY 1, 2, 3, 4 {USAGE_UPSERT}) "
    "SELECT count(*) FROM ins"
)


# What the record writer retries later: the server gone or restarting, a broken connection, no pooled
# connection in time (``PoolTimeout`` is an ``OperationalError``), a statement cancelled. And what says
# a line's own data is refused (set aside, the rest stored): a value or constraint the schema refuses,
# a line that is not JSON.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)
REFUSED_DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    ValueError,
    # Class 54, "program limit exceeded", is an OperationalError to the DB-API but says the data is too
    # big for the server (an index entry past ~2.7 KB, JSON nested past the stack), not that it is down:
    # read as an outage, one such line held every later record in the journal.
    psycopg.errors.ProgramLimitExceeded,
    psycopg.errors.StatementTooComplex,
    psycopg.errors.TooManyColumns,
    psycopg.errors.TooManyArguments,
)


# How long a caller waits for a pooled connection before PoolTimeout (an OperationalError: transient).
# Requests wait this long when PostgreSQL is unreachable (a key lookup on the request path), so it is
# short (probe-g G3: 10 s was 10 s per request); in normal running a checkout takes microseconds, and
# four connections serve the writer, key lookups and the admin API. ``pool_timeout`` overrides it.
POOL_TIMEOUT_SECONDS = 2.5


def check_idle_connection(conn: psycopg.Connection[Any]) -> None:
    """Raise ``OperationalError`` if the other end closed this idle pooled connection; no round trip.

    An idle connection's socket is readable only when something arrived: a notice, or the end of the
    stream (a closed or reset connection). What arrived is read without blocking; the end raises.
    A few microseconds a checkout, where psycopg_pool's ``check_connection`` (an empty query) costs a
    round trip: +~120 us a checkout on a loaded 2-core machine (15 -> 133 us; this check: 16 us).
    A connection silently black-holed is not seen here (nor by a round trip short of its timeout).
    """
    pgconn = conn.pgconn
    poller = select.poll()
    poller.register(pgconn.socket, select.POLLIN)
    for _ in range(_IDLE_READS):
        if not poller.poll(0):
            return
        pgconn.consume_input()  # reads what is there; at the end of the stream it raises
    ConnectionPool.check_connection(conn)  # still readable after that: let a round trip decide


_IDLE_READS = 4


class PostgresRecordStore(SqlRecordStore):
    """A small connection pool; each batch is one statement (``_INSERT_BATCH``) in one transaction."""

    dialect = "postgres"
    transient_errors = TRANSIENT_ERRORS
    refused_data_errors = REFUSED_DATA_ERRORS
    # A text search's first walk, and the longest it walks before the trigram index (search_rows);
    # walking costs ~4 us a row here.
    walk_rows = 1000
    max_walk_rows = 12_000

    def __init__(self, url: str, pool_size: int = 4, pool_timeout: float = POOL_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=True,
            kwargs={"autocommit": True},
            timeout=pool_timeout,
        )
        try:
            with self.connection() as conn:
                migrate_postgres(conn)
        except BaseException:
            # An open pool keeps reconnecting in its own threads: each failed open (a store that is
            # down, retried by the writer) left four threads logging for minutes, 13 after three.
            self.pool.close()
            raise

    @classmethod
    def from_url(cls, url: str) -> PostgresRecordStore:
        """Any libpq URL (``postgresql://user@host:5432/db?options=-csearch_path%3Dschema``)."""
        return cls(url)

    def sql(self, statement: str) -> str:
        """``?`` placeholders as ``%s``."""
        return statement.replace("?", "%s")

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A pooled connection; one the other end closed while it sat in the pool is replaced, not handed out.

        Probe-g G9: after a failover, a pgbouncer restart or an idle kill, every stale pooled connection
        cost a request a 500. Not the pool's own ``check=``: after a failed check it sleeps (1 s, then
        2 s...) before the next connection, so four dead ones outlast the whole wait.
        """
        conn = self._checked_connection()
        try:
            with conn:  # commit, or roll back on an error; a pooled connection stays open
                yield conn
        finally:
            self.pool.putconn(conn)

    def _checked_connection(self) -> Any:
        """A live connection within the pool's timeout: each dead one is closed and the pool replaces it."""
        deadline = time.monotonic() + self.pool.timeout
        while True:
            conn = self.pool.getconn(max(deadline - time.monotonic(), 0.001))  # PoolTimeout past the deadline
            try:
                check_idle_connection(conn)
                return conn
            except psycopg.Error:
                conn.close()  # returned closed, the pool drops it and opens a new one in the background
                self.pool.putconn(conn)

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        """A transaction block."""
        with conn.transaction():
            yield

    def insert_rows(self, conn: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """executemany runs in pipeline mode: one round trip for the batch, not one per row."""
        with conn.cursor() as cursor:
            cursor.executemany(self.sql(statement), rows)

    def insert_lines(self, conn: Any, lines: list[bytes]) -> int:
        """One statement: the server unpacks the batch (jsonb_populate_recordset), inserts the new rows
        and rolls up what was inserted, so the gateway process spends no CPU per record."""
        # PostgreSQL refuses NUL and lone surrogates that SQLite takes (store/encoding.py): replaced
        # by U+FFFD so such a record is stored, not set aside; bytes that are not UTF-8 likewise.
        batch = storable_json_text("[" + ",".join(line.decode(errors="replace") for line in lines) + "]")
        # Shared with item writers, exclusive for an erasure (store/sql.py): a batch is stored before an
        # erasure on any replica, which then deletes its rows, or after its tombstone, which drops them.
        # Its own statement: the batch statement's snapshot must be taken after the wait.
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", [ERASURE_LOCK])
        row = conn.execute(_INSERT_BATCH, [batch]).fetchone()
        return int(row[0])

    def search_rows(self, conn: Any, query: RecordQuery, limit: int) -> Sequence[Sequence[Any]]:
        """A text search planned here, because the planner's own choice is a coin toss.

        Left to itself, PostgreSQL either walks the window newest-first (the ``ts`` index) filtering
        every row, or intersects bitmap scans of the trigram and ``ts`` indexes, by ANALYZE's sample:
        for a 0.2% term over the last day of 1,000,000 rows, 90 ms (26,000 rows walked) or 7 ms,
        flipping between two ANALYZE runs. Walking wins for a term common in the window, the
        bitmaps for a rare one. So: walk a sample of the newest rows; if the term is common enough
        there to fill the page within ``max_walk_rows``, walk that far; otherwise use the bitmaps.
        """
        if not query.text or len(query.text) < 3:  # no trigram to look up: walking is the only plan
            return super().search_rows(conn, query, limit)
        where, params = self._where(query, text=False)
        text, text_params = self.text_condition(query.text)
        columns = ", ".join(LIST_COLUMNS)
        walk = self.sql(
            f"SELECT {columns} FROM (SELECT {columns} FROM requests{where} ORDER BY ts DESC, id DESC LIMIT ?) "
            f"AS newest WHERE {text} ORDER BY ts DESC, id DESC LIMIT ?"
        )
        beyond = self.sql(f"SELECT 1 FROM requests{where} ORDER BY ts DESC, id DESC OFFSET ? LIMIT 1")
        span = self.walk_rows
        while True:
            rows = conn.execute(walk, [*params, span, *text_params, limit]).fetchall()
            if len(rows) >= limit or conn.execute(beyond, [*params, span]).fetchone() is None:
                return rows  # type: ignore[no-any-return]  # a full page, or the walk saw the whole window
            # Twice the rows the sample's hit rate says a page needs (a small sample's rate is rough).
            needed = 2 * span * limit // max(len(rows), 1)
            if not rows or needed > self.max_walk_rows or span >= self.max_walk_rows:
                break
            span = needed
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")  # no ordered walk: bitmap scans only
            conn.execute("SET LOCAL enable_seqscan = off")
            return super().search_rows(conn, query, limit)

    def text_condition(self, text: str, since: float | None = None) -> tuple[str, list[Any]]:
        """Case-insensitive substring match, served by the trigram GIN indexes."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return "(input_text ILIKE ? OR output_text ILIKE ?)", [pattern, pattern]

    def tag_condition(self, key: str, value: str) -> tuple[str, list[Any]]:
        """The key in the gateway's tags or the client's metadata."""
        return "((tags::jsonb ->> ?) = ? OR (metadata::jsonb ->> ?) = ?)", [key, value, key, value]

    def delete_limited(self, condition: str) -> str:
        """Delete by id in a bounded sub-select."""
        return f"DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE {condition} LIMIT ?)"

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()
