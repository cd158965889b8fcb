"""Drift check results, kept for history and the /ui drift page (issue 15).

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()
POSTGRES: tuple[str, ...] = ()
