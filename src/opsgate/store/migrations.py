"""Schema migrations: append-only, named, per dialect; an old database always upgrades.

Each migration runs once, in a transaction, and is recorded in ``schema_migrations``. Never edit
a released migration; add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsgate.auth import session_store
from opsgate.drift import checks_schema as drift_checks_schema
from opsgate.drift import schema as drift_schema
from opsgate.drift import sentinel_schema
from opsgate.releases import schema as release_schema
from opsgate.store import quality_schema, rollups


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


# API keys: only a salted hash of each secret is kept; ``prefix`` is the public, indexed part of the key.
_API_KEYS = """CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY, prefix TEXT NOT NULL UNIQUE, salt TEXT NOT NULL, hash TEXT NOT NULL,
    tenant TEXT, role TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', models TEXT, limits TEXT,
    created_at {real} NOT NULL, created_by TEXT, expires_at {real}, revoked_at {real}, rotated_to TEXT)"""


def _api_keys(real: str) -> tuple[str, ...]:
    return (_API_KEYS.format(real=real), "CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at)")


# Whose counters a key's limits are counted on: ``limit_counter``, the first key of its rotations (a rotation
# must not start its budget again), and ``limit_chain``, the limited keys that minted it (JSON), whose limits
# its requests count against too (a budget-limited admin's keys share its budget, not one each).
_API_KEY_LIMIT_CHAIN = (
    "ALTER TABLE api_keys ADD COLUMN limit_counter TEXT",
    "ALTER TABLE api_keys ADD COLUMN limit_chain TEXT",
)


def _slo_feedback(real: str, serial: str, bucket: str, now: str) -> tuple[str, ...]:
    # SLO rollups (store/rollups.py), backfilled from the rows already stored; feedback; alert state.
    recent = f"(SELECT * FROM requests WHERE ts >= {now} - 8 * 86400) AS recent"
    return (
        rollups.table_ddl(rollups.FINE_TABLE, real),
        rollups.table_ddl(rollups.HOUR_TABLE, real),
        rollups.rollup_upsert(rollups.HOUR_TABLE, rollups.HOUR_SECONDS, "requests", bucket),
        rollups.rollup_upsert(rollups.FINE_TABLE, rollups.FINE_SECONDS, recent, bucket),
        f"CREATE TABLE feedback (id TEXT PRIMARY KEY, ts {real} NOT NULL, request_id TEXT NOT NULL, tenant TEXT, "
        f"model TEXT, deployment TEXT, user_id TEXT, raw_score TEXT NOT NULL, score {real}, "
        "positive INTEGER NOT NULL, comment TEXT)",
        "CREATE INDEX feedback_ts ON feedback (ts)",
        "CREATE INDEX feedback_tenant_ts ON feedback (tenant, ts)",
        "CREATE INDEX feedback_request ON feedback (request_id)",
        f"CREATE TABLE slo_measurements (slo TEXT NOT NULL, ts {real} NOT NULL, value {real} NOT NULL, tenant TEXT)",
        "CREATE INDEX slo_measurements_slo_ts ON slo_measurements (slo, ts)",
        f"CREATE TABLE slo_alerts (id {serial}, slo TEXT NOT NULL, tenant TEXT NOT NULL, severity TEXT NOT NULL, "
        f"state TEXT NOT NULL, since {real} NOT NULL, resolved_at {real}, details TEXT, "
        "notified_firing INTEGER NOT NULL DEFAULT 0, notified_resolved INTEGER NOT NULL DEFAULT 0)",
        "CREATE INDEX slo_alerts_state ON slo_alerts (state, slo, severity)",
        f"CREATE TABLE slo_leader (id INTEGER PRIMARY KEY, holder TEXT, expires {real} NOT NULL)",
        "INSERT INTO slo_leader (id, holder, expires) VALUES (1, NULL, 0)",
    )


# The audit hash chain (opsgate/audit/chain.py): rows already there stay unhashed and are folded into
# the chain's first hash. Triggers make the table append-only, so only someone who drops them can
# change a row — and verify then shows it.
_AUDIT_CHAIN_SQLITE = (
    "ALTER TABLE audit_log ADD COLUMN prev_hash TEXT",
    "ALTER TABLE audit_log ADD COLUMN hash TEXT",
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
)
_AUDIT_CHAIN_POSTGRES = (
    "ALTER TABLE audit_log ADD COLUMN prev_hash TEXT, ADD COLUMN hash TEXT",
    "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
    "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
)

# When the writer stored each row (the store's clock), so a follower sees records that arrive late
# (long streams, journal replays, a writer catching up) instead of missing them by request time.
# Rows stored before this migration keep NULL.
_STORED_AT = (
    "ALTER TABLE requests ADD COLUMN stored_at {real}",
    "CREATE INDEX requests_stored_at ON requests (stored_at)",
)

# The client's X-Request-Id, kept apart from the gateway-made ``id`` (which a client could otherwise
# choose, and so hide another record behind it) and searchable. Rows stored before keep NULL.
_CLIENT_REQUEST_ID = (
    "ALTER TABLE requests ADD COLUMN client_request_id TEXT",
    "CREATE INDEX requests_client_request_id_ts ON requests (client_request_id, ts)",
)

# Evaluation (opsgate/evals): immutable dataset versions, runs (offline and online), per-item results
# and one row per (item, scorer). Scores carry tenant, model and ts so releases, experiments and drift
# can read windows of them with plain SQL (index on model, scorer, ts). release/arm are for releases.
_EVALS = (
    "CREATE TABLE eval_datasets (id TEXT PRIMARY KEY, tenant TEXT, name TEXT NOT NULL, version INTEGER NOT NULL, "
    "content_hash TEXT NOT NULL, items INTEGER NOT NULL, source TEXT, created_at {real} NOT NULL, created_by TEXT)",
    "CREATE UNIQUE INDEX eval_datasets_name_version ON eval_datasets (coalesce(tenant, ''), name, version)",
    "CREATE TABLE eval_dataset_items (dataset_id TEXT NOT NULL, idx INTEGER NOT NULL, item_hash TEXT NOT NULL, "
    "item TEXT NOT NULL, PRIMARY KEY (dataset_id, idx))",
    "CREATE TABLE eval_runs (id TEXT PRIMARY KEY, tenant TEXT, kind TEXT NOT NULL, dataset_id TEXT, "
    "model TEXT NOT NULL, release TEXT, arm TEXT, status TEXT NOT NULL, settings TEXT, summary TEXT, "
    "created_at {real} NOT NULL, finished_at {real}, created_by TEXT)",
    "CREATE INDEX eval_runs_tenant_created ON eval_runs (tenant, created_at)",
    "CREATE TABLE eval_items (run_id TEXT NOT NULL, item_key TEXT NOT NULL, idx INTEGER, ts {real} NOT NULL, "
    "tenant TEXT, model TEXT, request_id TEXT, status TEXT NOT NULL, error TEXT, input TEXT, output TEXT, "
    "reference TEXT, latency_ms {real}, prompt_tokens INTEGER, completion_tokens INTEGER, cost {real}, "
    "PRIMARY KEY (run_id, item_key))",
    "CREATE INDEX eval_items_model_ts ON eval_items (model, ts)",
    "CREATE TABLE eval_scores (run_id TEXT NOT NULL, item_key TEXT NOT NULL, scorer TEXT NOT NULL, "
    "ts {real} NOT NULL, tenant TEXT, model TEXT, value {real}, passed INTEGER, details TEXT, "
    "PRIMARY KEY (run_id, item_key, scorer))",
    "CREATE INDEX eval_scores_model_scorer_ts ON eval_scores (model, scorer, ts)",
    "CREATE INDEX eval_scores_tenant_ts ON eval_scores (tenant, ts)",
)

# Erasure finds a user's copies by request id and retention expires live items by time: without these,
# both scanned eval_items whole (1.9 s for 200k items on SQLite, inside the erasure's transaction).
_EVAL_ITEMS_INDEXES = (
    "CREATE INDEX eval_items_request ON eval_items (request_id)",
    "CREATE INDEX eval_items_ts ON eval_items (ts)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration("0001_requests_usage_audit", _sqlite_v1(), _postgres_v1()),
    Migration("0002_api_keys", _api_keys("REAL"), _api_keys("DOUBLE PRECISION")),
    Migration(
        "0004_slo_feedback",
        _slo_feedback("REAL", "INTEGER PRIMARY KEY", rollups.SQLITE_BUCKET, "CAST(strftime('%s','now') AS REAL)"),
        _slo_feedback(
            "DOUBLE PRECISION", "BIGSERIAL PRIMARY KEY", rollups.POSTGRES_BUCKET, "extract(epoch from now())"
        ),
    ),
    Migration("0003_audit_chain", _AUDIT_CHAIN_SQLITE, _AUDIT_CHAIN_POSTGRES),
    Migration(
        "0005_stored_at",
        tuple(s.format(real="REAL") for s in _STORED_AT),
        tuple(s.format(real="DOUBLE PRECISION") for s in _STORED_AT),
    ),
    Migration("0006_client_request_id", _CLIENT_REQUEST_ID, _CLIENT_REQUEST_ID),
    Migration(
        "0007_evals",
        tuple(s.format(real="REAL") for s in _EVALS),
        tuple(s.format(real="DOUBLE PRECISION") for s in _EVALS),
    ),
    Migration("0008_releases", release_schema.SQLITE, release_schema.POSTGRES),
    Migration("0009_request_release_columns", release_schema.REQUEST_COLUMNS, release_schema.REQUEST_COLUMNS),
    Migration("0010_quality_slis", quality_schema.SQLITE, quality_schema.POSTGRES),
    Migration("0011_drift_windows", drift_schema.SQLITE, drift_schema.POSTGRES),
    Migration("0012_drift_checks", drift_checks_schema.SQLITE, drift_checks_schema.POSTGRES),
    Migration("0013_sentinel", sentinel_schema.SQLITE, sentinel_schema.POSTGRES),
    Migration("0014_eval_items_request_ts", _EVAL_ITEMS_INDEXES, _EVAL_ITEMS_INDEXES),
    Migration("0015_ui_sessions", session_store.SQLITE, session_store.POSTGRES),
    Migration("0016_api_key_limit_chain", _API_KEY_LIMIT_CHAIN, _API_KEY_LIMIT_CHAIN),
)


class SchemaTooNewError(Exception):
    """The database carries migrations this release does not know: a newer opsgate migrated it."""

    def __init__(self, unknown: list[str]) -> None:
        self.unknown = unknown
        super().__init__(
            f"the database schema is newer than this opsgate knows (unknown migrations: {', '.join(unknown)}; "
            f"newest known: {MIGRATIONS[-1].name}). A newer release migrated it: run that release (or newer), "
            "or restore a backup taken before the upgrade. This replica will not write to it."
        )


def refuse_unknown(applied: set[str]) -> None:
    """Raise ``SchemaTooNewError`` if ``applied`` names a migration this release does not have."""
    unknown = sorted(applied - {m.name for m in MIGRATIONS})
    if unknown:
        raise SchemaTooNewError(unknown)


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
        refuse_unknown(applied)
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
        refuse_unknown(applied)
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
