"""SQLite's retention pass over online/shadow items walks the ``ts`` index (migration 0014).

Before, the live-run filter was ``run_id IN (SELECT id FROM eval_runs WHERE kind IN …)`` and SQLite's
planner read every live item through the primary key (~0.1 s a pass at 200k items with nothing
expired); the query plan now names ``eval_items_ts`` (or ``eval_items_model_ts`` for a model's rule).
"""

from __future__ import annotations

import time
from pathlib import Path

from opsgate.domain.config import RetentionConfig, RetentionRule
from opsgate.store.record_log import open_store
from opsgate.store.sql import expired_live_items, retention_conditions


def test_sqlite_retention_of_live_items_uses_the_ts_index(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/requests.db")
    retention = RetentionConfig(
        default_days=30,
        rules=[RetentionRule(tenant="t1", days=7), RetentionRule(model="m1", days=3)],
    )
    try:
        conditions = retention_conditions(retention, time.time())
        assert len(conditions) == 3
        with store.connection() as conn:
            for condition, params in conditions:
                plan = conn.execute("EXPLAIN QUERY PLAN " + expired_live_items(condition), [*params, 100]).fetchall()
                text = " / ".join(str(row[-1]) for row in plan)
                expected = "eval_items_model_ts" if "model = ?" in condition.split(" AND NOT ")[0] else "eval_items_ts"
                assert f"SEARCH eval_items USING INDEX {expected}" in text, (condition, text)
    finally:
        store.close()
