"""``opsgate audit …``: read and verify the hash-chained audit log from a terminal."""

from __future__ import annotations

import re
from datetime import datetime

import click
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.audit import list_entries
from opsgate.cli.logs import config_option, opened_record_log

stderr = Console(stderr=True)
_ANCHOR = re.compile(r"^(\d+):([0-9a-f]{64})$")


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    match = _ANCHOR.match(value.strip().lower())
    if match is None:
        raise click.BadParameter("expected SEQ:HASH, as printed by an earlier verify", param_hint="--anchor")
    return int(match.group(1)), match.group(2)


@click.group()
def audit() -> None:
    """The tamper-evident audit log (admin actions and config changes)."""


@audit.command()
@click.option("--anchor", help="SEQ:HASH of a head recorded earlier: detects truncation and rewrites.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@config_option
def verify(anchor: str | None, as_json: bool, config_path: str | None) -> None:
    """Walk the hash chain; exit 0 if intact, 1 at the first entry that was changed, deleted or inserted."""
    expected = _anchor(anchor)
    with opened_record_log(config_path) as record_log:
        report = record_log.verify_audit(expected)
    if as_json:
        click.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    elif report.ok:
        head = f"{report.head_seq}:{report.head_hash}" if report.head_seq is not None else "(empty)"
        legacy = f", {report.legacy_entries} from before the chain" if report.legacy_entries else ""
        stderr.print(f"[green]audit chain intact[/green]: {report.entries} entries{legacy}")
        click.echo(f"head {head}")
    else:
        stderr.print(f"[red]audit chain BROKEN at seq {report.first_broken_seq}[/red]: {report.problem}")
    raise SystemExit(0 if report.ok else 1)


@audit.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--action", help="Only this action (config_loaded, erase_user, model_integrity_failed, …).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def list_(limit: int, action: str | None, as_json: bool, config_path: str | None) -> None:
    """The newest audit entries, newest first."""
    with opened_record_log(config_path) as record_log:
        entries = list_entries(record_log.store, limit, action)
    if as_json:
        for entry in entries:
            click.echo(orjson.dumps(entry.to_dict()).decode())
        return
    table = Table("seq", "when", "actor", "action", "target", "hash")
    for entry in entries:
        when = datetime.fromtimestamp(entry.ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(entry.seq), when, entry.actor or "", entry.action, entry.target or "", (entry.hash or "-")[:16]
        )
    Console().print(table)
