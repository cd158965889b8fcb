"""``opsgate logs …`` and ``opsgate usage``: the request log from a terminal.

The commands open the store directly (``RecordLog(config.record, writer=False)``) and make the
same library calls as the admin API, with the same filter parsing, so both answer alike.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from opsgate.cli.config_file import existing_store, load_config_or_exit
from opsgate.cli.options import id_column, since_option
from opsgate.domain.errors import GatewayError, InvalidRequestError
from opsgate.store.crypto import KeyError_
from opsgate.store.export import export_chunks, require_export_format
from opsgate.store.query import RecordQuery, parse_time, query_from_params
from opsgate.store.record_log import RecordLog
from opsgate.store.sql import RELEASE_DIMENSIONS, USAGE_DIMENSIONS

F = TypeVar("F", bound=Callable[..., Any])
ERASURE_ACTOR = "cli"
FOLLOW_OVERLAP_S = 10.0  # writers' batches commit within this long of their stored_at stamp
_OPTION_NAMES = {"q": "TEXT", "limit": "--limit / --lines"}

stderr = Console(stderr=True)


# -- shared plumbing --------------------------------------------------------------------------------------


def config_option(func: F) -> F:
    """``--config FILE`` (envvar OPSGATE_CONFIG; the embedded default config when left out)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar="OPSGATE_CONFIG",
        help="YAML config whose record.store to read (default: the embedded config).",
    )(func)


def filter_options(func: F) -> F:
    """The admin API's search filters as options (every one optional; they combine with AND)."""
    options = [
        click.option("--model", help="Model alias."),
        click.option("--deployment", help="Deployment that served the request."),
        click.option("--since", help="From this time: 30m, 1h, 7d (ago), ISO 8601 or epoch seconds."),
        click.option("--until", help="Up to this time (same forms as --since)."),
        click.option("--status", help="A code (404), a class (5xx) or 'error'."),
        click.option("--user", help="The request's user field."),
        click.option("--tenant", help="Tenant."),
        click.option("--client-request-id", help="The X-Request-Id the client sent (ids are the gateway's)."),
        click.option("--prompt", help="Prompt name the release stage applied (opsgate prompts)."),
        click.option("--prompt-version", help="Prompt version (with --prompt)."),
        click.option("--release", help="Release id that served the request."),
        click.option("--experiment", help="Experiment id."),
        click.option("--arm", help="Experiment arm."),
        click.option("--tag", "tags", multiple=True, help="key=value; repeat to require several."),
        click.option("--min-latency-ms", help="At least this latency."),
        click.option("--max-latency-ms", help="At most this latency."),
        click.option("--min-cost", help="At least this cost."),
        click.option("--max-cost", help="At most this cost."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_query(text: str | None, filters: dict[str, Any], limit: int | None = None) -> RecordQuery:
    """The RecordQuery for CLI filters, validated exactly as the admin API validates query parameters."""
    params = {name: value for name, value in filters.items() if name != "tags" and value not in (None, "")}
    if text:
        params["q"] = text
    if limit is not None:
        params["limit"] = limit
    return query_from_params(params, list(filters.get("tags") or ()))


def _load_config_record_log(config_path: str | None) -> RecordLog:
    config = load_config_or_exit(config_path)
    existing_store(config, config_path, "reading")  # opening would create an empty one, "nothing found"
    return RecordLog(config.record, writer=False)


@contextmanager
def opened_record_log(config_path: str | None) -> Iterator[RecordLog]:
    """The request log the config names, opened for reading; store and filter errors become CLI errors."""
    record_log = _load_config_record_log(config_path)
    try:
        yield record_log
    except InvalidRequestError as error:
        if error.param:
            hint = _OPTION_NAMES.get(error.param, "--" + error.param.replace("_", "-"))
            raise click.BadParameter(error.message, param_hint=hint) from None
        raise click.UsageError(error.message) from None
    except (GatewayError, KeyError_) as error:
        raise click.ClickException(str(error)) from None
    finally:
        record_log.stop()


def _echo_json(value: Any, *, pretty: bool = True) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    click.echo(orjson.dumps(value, option=option).decode())


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _snippet(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def _cost(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _record_line(row: dict[str, Any]) -> str:
    return "  ".join(
        [
            _when(row["ts"]),
            row["id"],
            str(row.get("model") or "-"),
            str(row.get("status")),
            str(row.get("user_id") or "-"),
            f"{_number(row.get('latency_ms'))}ms",
            _snippet(row.get("input_text")),
        ]
    )


def _records_table(rows: list[dict[str, Any]]) -> Table:
    ids = id_column("id", (str(row["id"]) for row in rows))
    table = Table("time", ids, "model", "status", "user", "latency ms", "tokens in/out", "cost", "input")
    for row in rows:
        tokens = f"{row.get('prompt_tokens') or 0}/{row.get('completion_tokens') or 0}"
        table.add_row(
            _when(row["ts"]),
            row["id"],
            str(row.get("model") or ""),
            str(row.get("status")),
            str(row.get("user_id") or ""),
            _number(row.get("latency_ms")),
            tokens,
            _cost(row.get("cost")),
            _snippet(row.get("input_text"), 40),
        )
    return table


# -- commands ---------------------------------------------------------------------------------------------


@click.group()
def logs() -> None:
    """Search, show, export and erase records in the request log."""


@logs.command()
@click.option(
    "-n",
    "--lines",
    "count",
    type=int,
    default=20,
    show_default=True,
    help="How many records to show (0: only new ones, with --follow).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are stored (Ctrl-C stops).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between polls with --follow.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@filter_options
@config_option
def tail(count: int, follow: bool, interval: float, as_json: bool, config_path: str | None, **filters: Any) -> None:
    """Print the newest records, oldest first (like tail)."""

    def show(row: dict[str, Any]) -> None:
        if as_json:
            _echo_json(row, pretty=False)
        else:
            click.echo(_record_line(row))

    with opened_record_log(config_path) as record_log:
        rows = record_log.search(build_query(None, filters, count))[0] if count else []
        for row in reversed(rows):
            show(row)
        if not follow:
            return
        follower = Follower(record_log.store.latest_stored_at(), {row["id"] for row in rows})
        follower.poll(record_log, build_query(None, filters, 1000))  # stored before we started: not new
        try:
            while True:
                time.sleep(interval)
                for row in follower.poll(record_log, build_query(None, filters, 1000)):
                    show(row)
        except KeyboardInterrupt:
            pass


class Follower:
    """New records by when they were stored, not by request time, so a late one is not missed: a long
    stream, a journal replayed after a crash, a writer catching up after a burst or an outage.

    Each poll asks for rows stored since the newest one seen, less ``FOLLOW_OVERLAP_S`` (batches
    from several writers can commit out of ``stored_at`` order), and skips the ids already shown.
    """

    def __init__(self, mark: float, shown: set[str]) -> None:
        self.mark = mark  # newest stored_at seen (the store's clock, never this machine's)
        self.seen: dict[str, float] = dict.fromkeys(shown, mark)

    def poll(self, record_log: RecordLog, query: RecordQuery) -> list[dict[str, Any]]:
        """Records stored since the last poll, in the order they were stored."""
        query.stored_since = self.mark - FOLLOW_OVERLAP_S
        fresh: list[dict[str, Any]] = []
        while True:
            rows, cursor = record_log.search(query)
            fresh += [row for row in rows if row["id"] not in self.seen]
            if cursor is None:
                break
            query.cursor = (float(rows[-1]["ts"]), str(rows[-1]["id"]))
        fresh.sort(key=lambda row: (row["stored_at"] or 0.0, row["ts"], row["id"]))
        self.seen.update((row["id"], row["stored_at"] or 0.0) for row in fresh)
        self.mark = max([self.mark, *(row["stored_at"] or 0.0 for row in fresh)])
        horizon = self.mark - FOLLOW_OVERLAP_S
        for stale in [rid for rid, stored in self.seen.items() if stored < horizon]:
            del self.seen[stale]
        return fresh


@logs.command()
@click.argument("text", required=False)
@filter_options
@click.option("--limit", type=int, default=50, show_default=True, help="Records per page (1-1000).")
@click.option("--cursor", help="Continue after a previous page (printed when there are more).")
@click.option("--json", "as_json", is_flag=True, help="JSON: {data, next_cursor}.")
@config_option
def search(
    text: str | None, limit: int, cursor: str | None, as_json: bool, config_path: str | None, **filters: Any
) -> None:
    """Find records whose input or output contains TEXT (any script), narrowed by filters."""
    with opened_record_log(config_path) as record_log:
        query = build_query(text, {**filters, "cursor": cursor}, limit)
        rows, next_cursor = record_log.search(query)
    if as_json:
        _echo_json({"data": rows, "next_cursor": next_cursor})
        return
    Console().print(_records_table(rows))
    if next_cursor:
        stderr.print(f"more: add --cursor {next_cursor}")
    elif not rows:
        stderr.print("no matching records")


@logs.command()
@click.argument("record_id", metavar="ID")
@config_option
def show(record_id: str, config_path: str | None) -> None:
    """Print one record as JSON, with its request and response payloads."""
    with opened_record_log(config_path) as record_log:
        record = record_log.get(record_id)
    if record is None:
        raise click.ClickException(f"no record with id {record_id}")
    _echo_json(record)


@logs.command()
@click.option("--user", required=True, help="The user whose records to delete.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@config_option
def erase(user: str, yes: bool, as_json: bool, config_path: str | None) -> None:
    """Delete every record of a user (GDPR erasure) and show the counts before and after."""
    with opened_record_log(config_path) as record_log:
        if not yes:
            click.confirm(f"Erase every record of user {user!r}? This cannot be undone", abort=True)
        result = record_log.erase_user(user, ERASURE_ACTOR)
    if as_json:
        _echo_json(result)
        return
    table = Table(
        "table", "before", "after", title=f"erased user {user} (audited as sha256 {result['user_sha256'][:16]})"
    )
    for name, before in result["before"].items():
        table.add_row(name, str(before), str(result["after"].get(name)))
    Console().print(table)


@logs.command("replay-rejected")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@config_option
def replay_rejected(as_json: bool, config_path: str | None) -> None:
    """Store again the journal lines the store refused (rejected.jsonl.txt), once their cause is fixed.

    Lines that store (or were stored meanwhile) leave the file; lines that still fail stay, with
    their new error. Exits 1 while any remain.
    """
    with opened_record_log(config_path) as record_log:
        counts = record_log.replay_rejected()
    if as_json:
        _echo_json(counts)
    else:
        click.echo(
            f"stored {counts['stored']}, already stored {counts['duplicates']}, "
            f"still refused {counts['still_rejected']}, unreadable {counts['unreadable']}"
        )
    if counts["still_rejected"] or counts["unreadable"]:
        sys.exit(1)


@logs.command()
@click.option(
    "--format", "export_format", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@click.argument("text", required=False)
@filter_options
@config_option
def export(text: str | None, export_format: str, output: str | None, config_path: str | None, **filters: Any) -> None:
    """Write every matching record, with payloads, as JSONL, CSV or Parquet."""
    with opened_record_log(config_path) as record_log:
        require_export_format(export_format)
        records = record_log.iter_records(build_query(text, filters))
        if output is None:
            for chunk in export_chunks(records, export_format):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        written = _export_to_file(records, export_format, Path(output))
    stderr.print(f"exported {written} records to {output}")


def _export_to_file(records: Iterator[dict[str, Any]], export_format: str, output: Path) -> int:
    """Write the export beside ``output`` and move it into place when complete, with a progress bar."""
    partial = output.with_name(output.name + ".partial")
    count = 0
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr, transient=True
    )

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in records:
            count += 1
            if count % 100 == 0:
                progress.update(task, description=f"exported {count:,} records")
            yield record

    with progress:
        task = progress.add_task("exporting…", total=None)
        try:
            with partial.open("wb") as file:
                for chunk in export_chunks(counted(), export_format):
                    file.write(chunk)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
    return count


@click.command()
@click.option("--by", type=click.Choice([*USAGE_DIMENSIONS, *RELEASE_DIMENSIONS]), default="model", show_default=True)
@since_option()
@click.option("--until", default=None, help="Up to this time (default: now).")
@click.option("--tenant", default=None, help="Only this tenant.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@config_option
def usage(by: str, since: str, until: str | None, tenant: str | None, as_json: bool, config_path: str | None) -> None:
    """Requests, errors, tokens and cost from the request log, grouped by model, user, day, tenant, prompt
    version, release or experiment arm."""
    with opened_record_log(config_path) as record_log:
        start = parse_time(since, "since") if since else None
        end = parse_time(until, "until") if until else None
        if start is not None and end is not None and start > end:
            raise InvalidRequestError("since is after until.", param="since")
        rows = record_log.usage(by, start, end, tenant)
    if as_json:
        _echo_json(rows)
        return
    table = Table(by, "requests", "errors", "tokens in", "tokens out", "cost", "mean latency ms")
    for row in rows:
        table.add_row(
            str(row[by]) or "(none)",
            _number(row["requests"]),
            _number(row["errors"]),
            _number(row["prompt_tokens"]),
            _number(row["completion_tokens"]),
            _cost(row["cost"]),
            _number(row["mean_latency_ms"], 1),
        )
    Console().print(table)
