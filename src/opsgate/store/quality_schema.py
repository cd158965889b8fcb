"""Quality SLIs: the requests columns and rollup columns that count guard verdicts and refusals (issue 15).

A released migration is never edited; change the schema with a new migration.
"""

from __future__ import annotations

SQLITE: tuple[str, ...] = ()
POSTGRES: tuple[str, ...] = ()
