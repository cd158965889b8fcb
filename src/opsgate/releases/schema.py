"""The tables of prompts, releases and experiments (migration ``0008_releases``).

``release_clock`` is one counter bumped by every change to prompts' labels, releases or experiments:
each replica polls it (one indexed row) and reloads its cache only when it moved.
"""

from __future__ import annotations

_TABLES = (
    "CREATE TABLE prompt_versions (id TEXT PRIMARY KEY, tenant TEXT, name TEXT NOT NULL, version INTEGER NOT NULL, "
    "messages TEXT NOT NULL, variables TEXT NOT NULL, parameters TEXT, notes TEXT, content_hash TEXT NOT NULL, "
    "created_at {real} NOT NULL, created_by TEXT)",
    "CREATE UNIQUE INDEX prompt_versions_name_version ON prompt_versions (coalesce(tenant, ''), name, version)",
    "CREATE TABLE prompt_labels (scope TEXT NOT NULL, name TEXT NOT NULL, label TEXT NOT NULL, "
    "version INTEGER NOT NULL, updated_at {real} NOT NULL, updated_by TEXT, PRIMARY KEY (scope, name, label))",
    "CREATE TABLE releases (id TEXT PRIMARY KEY, alias TEXT NOT NULL, number INTEGER NOT NULL, spec TEXT NOT NULL, "
    "notes TEXT, created_at {real} NOT NULL, created_by TEXT)",
    "CREATE UNIQUE INDEX releases_alias_number ON releases (alias, number)",
    "CREATE TABLE release_state (alias TEXT PRIMARY KEY, active TEXT, previous TEXT, arms TEXT, experiment TEXT, "
    "revision INTEGER NOT NULL, updated_at {real} NOT NULL)",
    "CREATE TABLE release_history (id {serial}, alias TEXT NOT NULL, ts {real} NOT NULL, action TEXT NOT NULL, "
    "release TEXT, details TEXT, actor TEXT)",
    "CREATE INDEX release_history_alias ON release_history (alias, ts)",
    "CREATE TABLE release_experiments (id TEXT PRIMARY KEY, alias TEXT NOT NULL, kind TEXT NOT NULL, "
    "arms TEXT NOT NULL, status TEXT NOT NULL, settings TEXT, started_at {real} NOT NULL, stopped_at {real}, "
    "verdict TEXT, created_by TEXT)",
    "CREATE INDEX release_experiments_alias ON release_experiments (alias, started_at)",
    "CREATE TABLE release_clock (id INTEGER PRIMARY KEY, counter BIGINT NOT NULL)",
    "INSERT INTO release_clock (id, counter) VALUES (1, 0)",
)

# Which prompt version, release, experiment and arm served each request (the release stage's tags, as
# columns so reports and searches filter by index, never by parsing tags). Shadow calls are not request
# rows at all (releases/shadow.py), so usage and SLO rollups never count them.
REQUEST_COLUMNS = (
    "ALTER TABLE requests ADD COLUMN prompt TEXT",
    "ALTER TABLE requests ADD COLUMN prompt_version INTEGER",
    "ALTER TABLE requests ADD COLUMN release_id TEXT",
    "ALTER TABLE requests ADD COLUMN experiment TEXT",
    "ALTER TABLE requests ADD COLUMN arm TEXT",
    "CREATE INDEX requests_release_ts ON requests (release_id, ts)",
    "CREATE INDEX requests_experiment_ts ON requests (experiment, ts)",
)

SQLITE = tuple(s.format(real="REAL", serial="INTEGER PRIMARY KEY") for s in _TABLES)
POSTGRES = tuple(s.format(real="DOUBLE PRECISION", serial="BIGSERIAL PRIMARY KEY") for s in _TABLES)
