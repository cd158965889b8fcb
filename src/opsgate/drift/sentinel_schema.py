"""Sentinel golden-prompt baselines and runs (issue 15).

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()
POSTGRES: tuple[str, ...] = ()
