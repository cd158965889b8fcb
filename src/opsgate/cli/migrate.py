"""``opsgate migrate``: the request log's schema migrations on their own (a Kubernetes init step).

Replicas also migrate when they open the store (under a lock, so replicas starting together migrate
once); running this first keeps a long migration out of the replicas' start-up and readiness. Either
way a database migrated by a newer release is refused: ``SchemaTooNewError`` names the migrations
this release does not know, and ``opsgate serve`` exits with it instead of serving.
"""

from __future__ import annotations

from contextlib import closing

import click
from rich.console import Console

from opsgate.cli.config_file import load_config_or_exit
from opsgate.domain.config import GatewayConfig
from opsgate.domain.urls import redact_url
from opsgate.store.migrations import MIGRATIONS, SchemaTooNewError

console = Console(stderr=True)


def applied_migrations(url: str) -> set[str]:
    """The migration names recorded in the store at ``url`` (empty for a new database), migrating nothing."""
    if url.startswith("sqlite:///"):
        import sqlite3
        from pathlib import Path

        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return set()
        with closing(sqlite3.connect(path)) as conn:
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone()
            return {row[0] for row in conn.execute("SELECT name FROM schema_migrations")} if exists else set()
    import psycopg

    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
        if row is None or row[0] is None:
            return set()
        return {str(name) for (name,) in conn.execute("SELECT name FROM schema_migrations")}


def migrate_store(url: str) -> list[str]:
    """Apply pending migrations to the store at ``url``; the names applied. Raises ``SchemaTooNewError``."""
    from opsgate.store.migrations import migrate_postgres

    if url.startswith("sqlite:///"):
        from opsgate.store.sqlite import SqliteRecordStore

        before = applied_migrations(url)
        SqliteRecordStore.from_url(url).close()  # opening migrates (WAL mode set as the gateway sets it)
        return [m.name for m in MIGRATIONS if m.name not in before]
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        return migrate_postgres(conn)


def check_schema_or_exit(config: GatewayConfig) -> None:
    """Refuse to serve against a schema newer than this release (exit 2); an unreachable store is only a
    warning: records wait in the journal until it is back."""
    url = config.record.store
    if url is None:
        return
    try:
        applied = applied_migrations(url)
    except Exception as error:
        console.print(
            f"[yellow]record store {redact_url(url)} not reachable now ({type(error).__name__}); "
            "records wait in the journal until it is[/yellow]"
        )
        return
    unknown = sorted(applied - {m.name for m in MIGRATIONS})
    if unknown:
        console.print(f"[red]refusing to serve:[/red] {redact_url(url)}: {SchemaTooNewError(unknown)}")
        raise SystemExit(2)


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="OPSGATE_CONFIG")
@click.option("--store", "store_url", default=None, help="Store URL (default: record.store from the config).")
@click.option(
    "--check", is_flag=True, help="Apply nothing: exit 1 if migrations are pending, 2 if the schema is newer."
)
def migrate(config_path: str | None, store_url: str | None, check: bool) -> None:
    """Apply the request log's pending schema migrations and exit (run before rolling out replicas)."""
    url = store_url or load_config_or_exit(config_path).record.store
    if url is None:
        raise click.ClickException("no record store configured (record.store): nothing to migrate")
    shown = redact_url(url)
    applied = applied_migrations(url)
    unknown = sorted(applied - {m.name for m in MIGRATIONS})
    if unknown:
        console.print(f"[red]{shown}:[/red] {SchemaTooNewError(unknown)}")
        raise SystemExit(2)
    todo = [m.name for m in MIGRATIONS if m.name not in applied]
    if check:
        click.echo(f"{shown}: {len(applied)} applied, {len(todo)} pending" + (f": {', '.join(todo)}" if todo else ""))
        raise SystemExit(1 if todo else 0)
    try:
        done = migrate_store(url)
    except SchemaTooNewError as error:  # a newer replica migrated between our check and now
        console.print(f"[red]{shown}:[/red] {error}")
        raise SystemExit(2) from None
    click.echo(f"{shown}: applied {len(done)} migration(s)" + (f": {', '.join(done)}" if done else "; up to date"))
