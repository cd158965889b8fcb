"""Quality SLIs: the requests columns and rollup columns that count guard verdicts and refusals (issue 15).

``requests.quality_flags`` is a bit set (what each bit means: ``slo/quality.py``); NULL on rows stored
before this migration, which so count as not flagged. The rollup tables get one count per bit, 0 for
the buckets already there. A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations

# (rollup column, bit of requests.quality_flags), in column order.
FLAG_COLUMNS: tuple[tuple[str, int], ...] = (
    ("q_scanned", 1),
    ("q_answered", 2),
    ("q_injection", 4),
    ("q_pii_leak", 8),
    ("q_toxic", 16),
    ("q_low_confidence", 32),
    ("q_refusal", 64),
)
_ROLLUP_TABLES = ("slo_rollup_10s", "slo_rollup_1h")

# SQLite adds one column per ALTER TABLE.
SQLITE: tuple[str, ...] = (
    "ALTER TABLE requests ADD COLUMN quality_flags INTEGER",
    *(
        f"ALTER TABLE {table} ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0"
        for table in _ROLLUP_TABLES
        for column, _ in FLAG_COLUMNS
    ),
)
POSTGRES: tuple[str, ...] = (
    "ALTER TABLE requests ADD COLUMN quality_flags INTEGER",
    *(
        f"ALTER TABLE {table} "
        + ", ".join(f"ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0" for column, _ in FLAG_COLUMNS)
        for table in _ROLLUP_TABLES
    ),
)
