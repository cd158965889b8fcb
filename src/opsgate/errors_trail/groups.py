"""Error groups over a time range, read from the request log (index on status, ts).

Grouping happens on read: signatures need regular expressions, which SQLite lacks, and an error
log is small next to the traffic. The scan is capped at ``MAX_ERRORS`` newest errors; the answer
says when the cap was hit.
"""

from __future__ import annotations

import time
from typing import Any

from opsgate.errors_trail.signature import normalise_message, signature
from opsgate.store.sql import SqlRecordStore

MAX_ERRORS = 200_000
EXAMPLES = 5
TREND_BUCKETS = 24


def error_groups(
    store: SqlRecordStore,
    since: float,
    tenant: str | None = None,
    now: float | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Failed requests (status ≥ 400) since ``since`` grouped by signature, most frequent first."""
    now = time.time() if now is None else now
    params: list[Any] = [since]
    where = "status >= 400 AND ts >= ?"
    if tenant is not None:
        where += " AND tenant = ?"
        params.append(tenant)
    statement = (
        f"SELECT id, ts, status, error_type, deployment, error_message FROM requests WHERE {where} "
        "ORDER BY ts DESC LIMIT ?"
    )
    with store.connection() as conn:
        rows = store.execute(conn, statement, [*params, MAX_ERRORS + 1]).fetchall()
    truncated = len(rows) > MAX_ERRORS
    width = max((now - since) / TREND_BUCKETS, 1e-9)
    groups: dict[str, dict[str, Any]] = {}
    for record_id, ts, status, error_type, deployment, message in rows[:MAX_ERRORS]:
        key = signature(error_type, deployment, message)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "signature": key,
                "error_type": error_type,
                "deployment": deployment,
                "message": normalise_message(message),
                "sample_message": message,
                "statuses": {},
                "count": 0,
                "first_seen": ts,
                "last_seen": ts,
                "examples": [],
                "trend": [0] * TREND_BUCKETS,
            }
        group["count"] += 1
        group["first_seen"] = min(group["first_seen"], ts)
        group["last_seen"] = max(group["last_seen"], ts)
        group["statuses"][str(status)] = group["statuses"].get(str(status), 0) + 1
        if len(group["examples"]) < EXAMPLES:
            group["examples"].append(record_id)  # rows come newest first
        group["trend"][min(TREND_BUCKETS - 1, max(0, int((ts - since) / width)))] += 1
    ordered = sorted(groups.values(), key=lambda g: (-g["count"], -g["last_seen"]))
    return {
        "object": "list",
        "data": ordered[:limit],
        "total_errors": min(len(rows), MAX_ERRORS),
        "truncated": truncated,
        "trend_bucket_seconds": width,
    }
