"""Sentinel golden-prompt baselines and runs (issue 15, migration ``0013_sentinel``).

One run is one deployment checked against its baselines (a scheduled sweep makes one run per
deployment). Embeddings are stored as base64 float32 (TEXT works the same on both stores).
``sentinel_lease`` is one row: the replica that holds it runs the schedule, and ``next_run`` is kept
there so a new holder continues the schedule instead of restarting it.

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations

_TABLES = (
    "CREATE TABLE sentinel_baselines (alias TEXT NOT NULL, deployment TEXT NOT NULL, prompt_id TEXT NOT NULL, "
    "prompt_hash TEXT NOT NULL, answer TEXT NOT NULL, upstream_model TEXT, fingerprint TEXT, embedding TEXT, "
    "run_id TEXT, created_at {real} NOT NULL, PRIMARY KEY (alias, deployment, prompt_id))",
    "CREATE TABLE sentinel_runs (id TEXT PRIMARY KEY, alias TEXT NOT NULL, deployment TEXT NOT NULL, "
    "kind TEXT NOT NULL, status TEXT NOT NULL, started_at {real} NOT NULL, finished_at {real}, "
    "prompts INTEGER NOT NULL, changed INTEGER NOT NULL, failed INTEGER NOT NULL, share {real}, "
    "model_changed INTEGER NOT NULL, fingerprint_changed INTEGER NOT NULL, summary TEXT, actor TEXT)",
    "CREATE INDEX sentinel_runs_started ON sentinel_runs (started_at)",
    "CREATE INDEX sentinel_runs_deployment ON sentinel_runs (alias, deployment, started_at)",
    "CREATE TABLE sentinel_items (run_id TEXT NOT NULL, prompt_id TEXT NOT NULL, status TEXT NOT NULL, "
    "exact INTEGER, similarity {real}, answer TEXT, upstream_model TEXT, fingerprint TEXT, request_id TEXT, "
    "error TEXT, diff TEXT, PRIMARY KEY (run_id, prompt_id))",
    "CREATE TABLE sentinel_lease (id INTEGER PRIMARY KEY, holder TEXT, expires {real} NOT NULL, next_run {real})",
    "INSERT INTO sentinel_lease (id, holder, expires, next_run) VALUES (1, NULL, 0, NULL)",
)

SQLITE: tuple[str, ...] = tuple(s.format(real="REAL") for s in _TABLES)
POSTGRES: tuple[str, ...] = tuple(s.format(real="DOUBLE PRECISION") for s in _TABLES)
