"""``opsgate migrate`` on its own, and a replica that refuses a schema newer than it knows."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from opsgate.store.migrations import MIGRATIONS


def opsgate(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPSGATE_CONFIG": str(config)} if config else dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "opsgate.cli.main", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_migrate_then_check(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/requests.db"
    pending = opsgate("migrate", "--store", store, "--check")
    assert pending.returncode == 1 and f"{len(MIGRATIONS)} pending" in pending.stdout
    done = opsgate("migrate", "--store", store)
    assert done.returncode == 0 and f"applied {len(MIGRATIONS)} migration(s)" in done.stdout
    again = opsgate("migrate", "--store", store)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert opsgate("migrate", "--store", store, "--check").returncode == 0


def test_a_newer_schema_is_refused_with_the_reason(tmp_path: Path) -> None:
    database = tmp_path / "requests.db"
    assert opsgate("migrate", "--store", f"sqlite:///{database}").returncode == 0
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 0)")
    config = tmp_path / "gw.yaml"
    config.write_text(f"record:\n  store: sqlite:///{database}\n  journal_dir: {tmp_path}/journal\nmodels: []\n")
    check = opsgate("migrate", "--check", config=config)
    assert check.returncode == 2 and "9999_from_the_future" in check.stderr
    served = opsgate("serve", "--port", "0", config=config)
    assert served.returncode == 2
    assert "refusing to serve" in served.stderr and "9999_from_the_future" in served.stderr.replace("\n", "")
    assert "newer release" in " ".join(served.stderr.split())  # rich wraps at 80 columns, leaving a space


def test_the_store_itself_will_not_open_a_newer_schema(tmp_path: Path) -> None:
    import pytest

    from opsgate.store.migrations import SchemaTooNewError
    from opsgate.store.sqlite import SqliteRecordStore

    SqliteRecordStore(tmp_path / "r.db").close()
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 0)")
    with pytest.raises(SchemaTooNewError, match="9999_from_the_future"):
        SqliteRecordStore(tmp_path / "r.db")
