"""Schema migrations: append-only, named, per dialect; an old database always upgrades.

Each migration runs once, in a transaction, and is recorded in ``schema_migrations``. Never edit
a released migration; add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Migration:
    """One schema step, written for each dialect."""

    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


_COLUMNS = """
    id TEXT NOT NULL {id_constraint},
    ts {real} NOT NULL,
    tenant TEXT,
    api_key_id TEXT,
    user_id TEXT,
    endpoint TEXT NOT NULL,
    model TEXT,
    deployment TEXT,
    status INTEGER NOT NULL,
    error_type TEXT,
    error_message TEXT,
    stream {bool} NOT NULL DEFAULT {false},
    cached {bool} NOT NULL DEFAULT {false},
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cached_tokens INTEGER,
    latency_ms {real},
    ttft_ms {real},
    cost {real},
    input_text TEXT,
    output_text TEXT,
    request TEXT,
    response TEXT,
    payload_key_id TEXT,
    tags TEXT,
    metadata TEXT
"""

# Indexes for the queries the admin API and CLI run: a time range, usually with one equality filter.
_INDEXES = (
    "CREATE INDEX requests_ts ON requests (ts)",
    "CREATE INDEX requests_model_ts ON requests (model, ts)",
    "CREATE INDEX requests_user_ts ON requests (user_id, ts)",
    "CREATE INDEX requests_tenant_ts ON requests (tenant, ts)",
    "CREATE INDEX requests_status_ts ON requests (status, ts)",
    "CREATE INDEX requests_deployment_ts ON requests (deployment, ts)",
)

_SIDE_TABLES = (
    """CREATE TABLE usage_daily (
        day TEXT NOT NULL, tenant TEXT NOT NULL, model TEXT NOT NULL, user_id TEXT NOT NULL,
        requests BIGINT NOT NULL, errors BIGINT NOT NULL,
        prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL,
        cost {real} NOT NULL, priced_requests BIGINT NOT NULL, latency_ms_sum {real} NOT NULL,
        PRIMARY KEY (day, tenant, model, user_id))""",
    """CREATE TABLE audit_log (
        seq {serial}, ts {real} NOT NULL, actor TEXT, action TEXT NOT NULL, target TEXT, details TEXT)""",
    "CREATE TABLE erasures (user_id TEXT PRIMARY KEY, erased_at {real} NOT NULL)",
)


def _sqlite_v1() -> tuple[str, ...]:
    types = {"real": "REAL", "bool": "INTEGER", "false": "0", "serial": "INTEGER PRIMARY KEY"}
    return (
        "CREATE TABLE requests (rowid INTEGER PRIMARY KEY, " + _COLUMNS.format(id_constraint="UNIQUE", **types) + ")",
        *_INDEXES,
        # Trigram tokenizer: substring search that works for any script, not just space-separated words.
        "CREATE VIRTUAL TABLE requests_fts USING fts5(input_text, output_text, content='requests', "
        "content_rowid='rowid', tokenize='trigram')",
        "CREATE TRIGGER requests_fts_insert AFTER INSERT ON requests BEGIN "
        "INSERT INTO requests_fts(rowid, input_text, output_text) VALUES (new.rowid, new.input_text, new.output_text); "
        "END",
        "CREATE TRIGGER requests_fts_delete AFTER DELETE ON requests BEGIN "
        "INSERT INTO requests_fts(requests_fts, rowid, input_text, output_text) "
        "VALUES ('delete', old.rowid, old.input_text, old.output_text); END",
        "CREATE TRIGGER requests_fts_update AFTER UPDATE ON requests BEGIN "
        "INSERT INTO requests_fts(requests_fts, rowid, input_text, output_text) "
        "VALUES ('delete', old.rowid, old.input_text, old.output_text); "
        "INSERT INTO requests_fts(rowid, input_text, output_text) VALUES (new.rowid, new.input_text, new.output_text); "
        "END",
        *(table.format(**types) for table in _SIDE_TABLES),
    )


def _postgres_v1() -> tuple[str, ...]:
    types = {
        "real": "DOUBLE PRECISION",
        "bool": "BOOLEAN",
        "false": "FALSE",
        "serial": "BIGSERIAL PRIMARY KEY",
    }
    return (
        "CREATE TABLE requests (" + _COLUMNS.format(id_constraint="PRIMARY KEY", **types) + ")",
        *_INDEXES,
        # Trigram GIN indexes: ILIKE '%word%' for any script, the same semantics as SQLite's trigram FTS.
        # {trgm} is the schema pg_trgm lives in, which need not be on this store's search_path.
        "CREATE INDEX requests_input_trgm ON requests USING gin (input_text {trgm}.gin_trgm_ops)",
        "CREATE INDEX requests_output_trgm ON requests USING gin (output_text {trgm}.gin_trgm_ops)",
        *(table.format(**types) for table in _SIDE_TABLES),
    )


MIGRATIONS: tuple[Migration, ...] = (Migration("0001_requests_usage_audit", _sqlite_v1(), _postgres_v1()),)


def pending(applied: set[str]) -> list[Migration]:
    """Migrations not yet applied, in order."""
    return [m for m in MIGRATIONS if m.name not in applied]


def migrate_sqlite(conn: Any) -> list[str]:
    """Apply pending migrations to a sqlite3 connection; returns the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    done: list[str] = []
    conn.execute("BEGIN IMMEDIATE")  # one process migrates at a time
    try:
        applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for migration in pending(applied):
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, strftime('%s','now'))", (migration.name,))
            done.append(migration.name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return done


def migrate_postgres(conn: Any) -> list[str]:
    """Apply pending migrations to a psycopg connection (in its search_path schema)."""
    done: list[str] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7041911)")  # replicas starting together migrate once
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        applied = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        todo = pending(applied)
        if todo:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public")
            trgm = conn.execute(
                "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
            ).fetchone()[0]
        for migration in todo:
            for statement in migration.postgres:
                conn.execute(statement.replace("{trgm}", trgm))
            conn.execute("INSERT INTO schema_migrations VALUES (%s, extract(epoch from now()))", (migration.name,))
            done.append(migration.name)
    return done
