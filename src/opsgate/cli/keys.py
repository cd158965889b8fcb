"""``opsgate keys create|list|show|rotate|revoke``: API keys from a terminal, straight in the config's store.

The same ``KeyStore`` calls as ``/admin/keys``; the audit log names the actor ``cli:<os user>``.
A secret is printed once, at creation or rotation, and never again.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.auth.key_fields import checked_models
from opsgate.auth.key_store import KeyInfo, KeySpec, KeyStore
from opsgate.cli.config_file import existing_store, load_config_or_exit
from opsgate.cli.logs import config_option
from opsgate.cli.options import id_column
from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError
from opsgate.domain.principal import ROLES
from opsgate.store.query import parse_duration
from opsgate.store.record_log import open_store

console = Console()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _key_store(config_path: str | None) -> Iterator[tuple[KeyStore, GatewayConfig]]:
    config = load_config_or_exit(config_path)
    # Keys live in the record store the gateway reads: never in a new store made here by mistake.
    store = open_store(existing_store(config, config_path, "API keys"))
    try:
        yield KeyStore(store), config
    except GatewayError as error:
        raise click.ClickException(error.message) from None
    finally:
        store.close()


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


def _print_secret(secret: str, info: KeyInfo) -> None:
    console.print(f"[bold green]{secret}[/bold green]")
    console.print(
        f"key id {info.key_id}, tenant {info.tenant or '(operator: every tenant)'}, role {info.role}. "
        "This secret is shown once: store it now."
    )


@click.group()
def keys() -> None:
    """Create, list, rotate and revoke API keys."""


@keys.command()
@config_option
@click.option("--tenant", default=None, help="Tenant the key belongs to; leave out for an operator key.")
@click.option("--role", type=click.Choice(ROLES), default="service", show_default=True)
@click.option("--name", default="", help="What the key is for.")
@click.option("--models", default=None, help="Comma-separated aliases the key may call (default: all).")
@click.option("--expires-in", default=None, help="Lifetime such as 90d or 12h (default: no expiry).")
@click.option("--json", "as_json", is_flag=True, help="Print the key as JSON.")
def create(
    config_path: str | None,
    tenant: str | None,
    role: str,
    name: str,
    models: str | None,
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its secret (once)."""
    with _key_store(config_path) as (store, config):
        aliases = {alias.name for alias in config.models}
        spec = KeySpec(
            tenant=tenant,
            role=role,  # type: ignore[arg-type]  # click.Choice(ROLES) checked it
            name=name,
            # The same bounds as POST /admin/keys: configured aliases, at most 64, no repeats.
            models=checked_models([m.strip() for m in models.split(",") if m.strip()], aliases) if models else None,
            expires_at=time.time() + parse_duration(expires_in, "expires_in") if expires_in else None,
        )
        created = store.create(spec, _actor(), config.auth.max_keys_per_tenant)
    if as_json:
        click.echo(orjson.dumps(created.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_secret(created.secret, created.info)


@keys.command("list")
@config_option
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
@click.option("--json", "as_json", is_flag=True)
def list_keys(config_path: str | None, tenant: str | None, show_all: bool, as_json: bool) -> None:
    """List keys (prefixes only; secrets are never stored)."""
    with _key_store(config_path) as (store, _config):
        infos = store.list(tenant, include_inactive=show_all)
    if as_json:
        click.echo(orjson.dumps([i.to_json() for i in infos], option=orjson.OPT_INDENT_2).decode())
        return
    ids = id_column("id", (info.key_id for info in infos))
    table = Table(ids, "key", "tenant", "role", "name", "models", "created", "expires", "state")
    for info in infos:
        row = info.to_json()
        table.add_row(
            info.key_id,
            row["key"],
            info.tenant or "*",
            info.role,
            info.name,
            ",".join(info.models) if info.models is not None else "all",
            _when(info.created_at),
            _when(info.expires_at),
            row["state"],
        )
    console.print(table)


@keys.command()
@config_option
@click.argument("key_id")
def show(config_path: str | None, key_id: str) -> None:
    """Show one key as JSON."""
    with _key_store(config_path) as (store, _config):
        info = store.require(key_id)
    click.echo(orjson.dumps(info.to_json(), option=orjson.OPT_INDENT_2).decode())


@keys.command()
@config_option
@click.argument("key_id")
@click.option("--grace", default=None, help="How long the old key keeps working, e.g. 1h (default: auth config).")
def rotate(config_path: str | None, key_id: str, grace: str | None) -> None:
    """Issue a new secret for a key; the old one lapses after the grace period."""
    with _key_store(config_path) as (store, config):
        seconds = parse_duration(grace, "grace") if grace else config.auth.rotation_grace_seconds
        created = store.rotate(key_id, _actor(), seconds, max_per_tenant=config.auth.max_keys_per_tenant)
    _print_secret(created.secret, created.info)
    console.print(f"the old key {key_id} stops working at {_when(time.time() + seconds)} or its own expiry.")


@keys.command()
@config_option
@click.argument("key_id")
def revoke(config_path: str | None, key_id: str) -> None:
    """Revoke a key (gateways stop accepting it within auth.cache_ttl_seconds)."""
    with _key_store(config_path) as (store, _config):
        info = store.revoke(key_id, _actor())
    console.print(f"revoked {info.key_id} ({info.to_json()['key']}, tenant {info.tenant or '*'})")
