"""``opsgate errors``: failed requests grouped by signature, as ``GET /admin/errors`` answers."""

from __future__ import annotations

import asyncio
from datetime import datetime

import click
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.cli.logs import config_option, opened_record_log
from opsgate.cli.options import LOCAL_GATEWAY, gateway_url_option, id_column, since_option
from opsgate.errors_trail.explain import explain_groups
from opsgate.errors_trail.groups import error_groups
from opsgate.slo.report import sparkline
from opsgate.store.query import parse_time


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().strftime("%m-%d %H:%M:%S")


@click.command()
@config_option
@since_option()
@click.option("--tenant", help="Only this tenant's errors.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Groups to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--explain",
    "explain_model",
    default=None,
    help="Opt-in: ask this model alias, through the running gateway, to explain the top groups (recorded calls).",
)
@click.option("--explain-top", type=click.IntRange(1, 20), default=3, show_default=True)
@gateway_url_option(default=LOCAL_GATEWAY, help="The gateway's /v1 base URL, for --explain.")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None, help="Key for --explain (env OPSGATE_API_KEY).")
def errors(
    config_path: str | None,
    since: str,
    tenant: str | None,
    limit: int,
    as_json: bool,
    explain_model: str | None,
    explain_top: int,
    url: str,
    api_key: str | None,
) -> None:
    """Failed requests grouped by error type, deployment and normalised message."""
    with opened_record_log(config_path) as record_log:
        result = error_groups(record_log.store, parse_time(since, "since"), tenant, limit=limit)
    if explain_model:
        explained = asyncio.run(explain_groups(url, api_key, explain_model, result["data"][:explain_top]))
        for group, text, request_id in explained:
            group["explanation"] = {"model": explain_model, "text": text, "request_id": request_id}
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    examples = id_column("example", (g["examples"][0] for g in result["data"] if g["examples"]))
    table = Table("count", "type", "deployment", "message", "first", "last", "trend", examples)
    for group in result["data"]:
        table.add_row(
            str(group["count"]),
            group["error_type"] or "",
            group["deployment"] or "",
            group["message"],
            _when(group["first_seen"]),
            _when(group["last_seen"]),
            sparkline([float(c) for c in group["trend"]]),
            group["examples"][0] if group["examples"] else "",
        )
    Console().print(table)
    for group in result["data"]:
        if "explanation" in group:
            explanation = group["explanation"]
            Console().print(
                f"[bold]{group['error_type']} · {group['message'][:80]}[/bold]\n{explanation['text']}\n"
                f"[dim](asked {explanation['model']}, request {explanation['request_id']})[/dim]"
            )
    note = " (newest only: more than the scan limit)" if result["truncated"] else ""
    Console(stderr=True).print(f"{result['total_errors']} errors in {len(result['data'])} groups{note}")
