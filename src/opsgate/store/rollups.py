"""SLO rollups: per-bucket counts the record writer upserts in the same transaction as the rows.

Two tables with the same columns: ``slo_rollup_10s`` (10-second buckets, for burn-rate windows up to
6 h, live charts and tests with short windows) and ``slo_rollup_1h`` (hourly, for 3-day and 30-day
windows). Keyed by (bucket, tenant, model, deployment). Latency and time to first token are kept as
cumulative histograms (``l3`` = successful requests with latency ≤ ``BOUNDS_MS[3]``), so "95% of
requests within a bound" and percentiles come from sums, never from scanning ``requests``.

Quality counts (migration 0010, ``q_*``) count the bits of each row's ``quality_flags``
(``slo/quality.py``): the denominators and numerators of the quality SLIs.
"""

from __future__ import annotations

from collections.abc import Sequence

from opsgate.store.quality_schema import FLAG_COLUMNS

# Histogram bucket bounds in milliseconds: LLM latencies span tens of ms to minutes. The tables are
# created from these (migration 0004): changing them needs a new migration.
BOUNDS_MS: tuple[float, ...] = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
LATENCY_COLUMNS = tuple(f"l{i}" for i in range(len(BOUNDS_MS)))
TTFT_COLUMNS = tuple(f"t{i}" for i in range(len(BOUNDS_MS)))
FINE_TABLE, FINE_SECONDS = "slo_rollup_10s", 10
HOUR_TABLE, HOUR_SECONDS = "slo_rollup_1h", 3600
KEY_COLUMNS = ("bucket", "tenant", "model", "deployment")
# errors: server-side failures (5xx), what burns availability; client_errors: 4xx (their mistake or
# our limit), kept apart so a client's bad requests never burn the gateway's error budget.
# The columns migration 0004 created: frozen, since that migration builds its tables from them.
BASE_SUM_COLUMNS: tuple[str, ...] = (
    "requests",
    "errors",
    "client_errors",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "latency_sum",
    "ttft_count",
    *LATENCY_COLUMNS,
    *TTFT_COLUMNS,
)
# Added by migration 0010 (store/quality_schema.py): quality-flag counts.
QUALITY_COLUMNS: tuple[str, ...] = tuple(column for column, _ in FLAG_COLUMNS)
SUM_COLUMNS: tuple[str, ...] = (*BASE_SUM_COLUMNS, *QUALITY_COLUMNS)
_REAL_COLUMNS = {"cost", "latency_sum"}


def _aggregates() -> list[str]:
    out = [
        "count(*)",
        "count(CASE WHEN status >= 500 THEN 1 END)",
        "count(CASE WHEN status >= 400 AND status < 500 THEN 1 END)",
        "coalesce(sum(prompt_tokens), 0)",
        "coalesce(sum(completion_tokens), 0)",
        "coalesce(sum(cost), 0)",
        "coalesce(sum(CASE WHEN status < 400 THEN latency_ms END), 0)",
        "count(ttft_ms)",
    ]
    out += [f"count(CASE WHEN status < 400 AND latency_ms <= {b} THEN 1 END)" for b in BOUNDS_MS]
    out += [f"count(CASE WHEN ttft_ms <= {b} THEN 1 END)" for b in BOUNDS_MS]
    out += [f"count(CASE WHEN (quality_flags & {bit}) <> 0 THEN 1 END)" for _, bit in FLAG_COLUMNS]
    return out


def table_ddl(table: str, real: str) -> str:
    """CREATE TABLE for one rollup table as migration 0004 made it; ``real`` is the dialect's floating-point type."""
    sums = ", ".join(f"{c} {real if c in _REAL_COLUMNS else 'BIGINT'} NOT NULL" for c in BASE_SUM_COLUMNS)
    return (
        f"CREATE TABLE {table} (bucket BIGINT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL, "
        f"deployment TEXT NOT NULL, {sums}, PRIMARY KEY (bucket, tenant, model, deployment))"
    )


def _is_backfill(source: str) -> bool:
    """Whether ``source`` reads the ``requests`` table itself (migration 0004's backfill), not a new batch."""
    return source == "requests" or " FROM requests " in f"{source} "


def rollup_upsert(table: str, seconds: int, source: str, bucket_of_ts: str, sums: Sequence[str] | None = None) -> str:
    """INSERT … SELECT … GROUP BY … ON CONFLICT: roll the rows of ``source`` into ``table``.

    ``bucket_of_ts`` is the dialect's expression for the bucket start, with ``{n}`` for ``seconds``.
    A batch ``source`` must hold only rows inserted by this batch, so replays never double-count.
    ``sums``: the columns to roll up; by default every column for a batch, and migration 0004's
    columns for a backfill from ``requests`` (that migration runs before 0010 adds the quality ones).
    """
    if sums is None:
        sums = BASE_SUM_COLUMNS if _is_backfill(source) else SUM_COLUMNS
    aggregates = dict(zip(SUM_COLUMNS, _aggregates(), strict=True))
    columns = ", ".join((*KEY_COLUMNS, *sums))
    select = ", ".join(
        (
            bucket_of_ts.format(n=seconds),
            "coalesce(tenant, '')",
            "coalesce(model, '')",
            "coalesce(deployment, '')",
            *(aggregates[c] for c in sums),
        )
    )
    updates = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    # "WHERE true": SQLite's parser needs it between a SELECT … FROM and an upsert clause.
    return (
        f"INSERT INTO {table} ({columns}) SELECT {select} FROM {source} WHERE true GROUP BY 1, 2, 3, 4 "
        f"ON CONFLICT (bucket, tenant, model, deployment) DO UPDATE SET {updates}"
    )


SQLITE_BUCKET = "(CAST(ts AS INTEGER) / {n}) * {n}"
POSTGRES_BUCKET = "(floor(ts / {n}) * {n})::bigint"
