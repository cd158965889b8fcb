"""``opsgate slo status`` and ``opsgate slo report``: objectives, budgets and burn rates from a terminal.

They open the store the config names (like ``opsgate logs``) and make the same library calls as
``GET /admin/slo`` and ``GET /admin/slo/{name}/history``.
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.cli.config_file import load_config_or_exit
from opsgate.cli.logs import config_option, opened_record_log
from opsgate.domain.config import GatewayConfig
from opsgate.slo import report
from opsgate.slo.engine import SloEngine
from opsgate.store.query import parse_time

_STATE_STYLE = {"ok": "green", "ticket": "yellow", "page": "bold red"}


def _config(config_path: str | None) -> GatewayConfig:
    config = load_config_or_exit(config_path)
    if not config.slo.objectives:
        raise click.UsageError(
            f"{config_path or 'the embedded config'} defines no SLOs (slo.objectives). Start from "
            "examples/slos.yaml, or copy the slo: section of src/opsgate/defaults/slo-example.yaml into your config."
        )
    return config


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


@click.group()
def slo() -> None:
    """Service level objectives: status and reports."""


@slo.command("status")
@config_option
@click.option("--tenant", help="Only this tenant's traffic.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(config_path: str | None, tenant: str | None, as_json: bool) -> None:
    """Target, current value, error budget left, burn rates and state of every objective."""
    config = _config(config_path)
    with opened_record_log(config_path) as record_log:
        rows = SloEngine(record_log.store, config.slo, config.alerts).status(tenant)
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    windows = list(rows[0]["burn_rates"]) if rows else []
    table = Table(
        "SLO", "SLI", "scope", "target", "current", "events", "budget left", *(f"burn {w}" for w in windows), "state"
    )
    for row in rows:
        style = _STATE_STYLE.get(row["state"], "")
        scope = ", ".join(f"{k}={v}" for k, v in (row.get("filter") or {}).items()) or "all"
        table.add_row(
            row["name"],
            row["sli"] + (f" ≤ {row['threshold_ms']:g} ms" if row.get("threshold_ms") else ""),
            scope,
            f"{row['target']:g}",
            _fmt(row["current"]),
            "-" if row.get("events") is None else str(row["events"]),
            _fmt(row["budget_remaining"], 3),
            *(_fmt(row["burn_rates"][w], 3) for w in windows),
            f"[{style}]{row['state']}[/{style}]" if style else row["state"],
        )
    Console().print(table)


@slo.command("report")
@config_option
@click.option("--since", default="30d", show_default=True, help="From this time: 7d, 30d, ISO 8601, epoch.")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("--tenant", help="Only this tenant's traffic.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (Markdown: the SVG plots go next to it); default: standard output.",
)
def report_command(config_path: str | None, since: str, fmt: str, tenant: str | None, output: Path | None) -> None:
    """A report with plots of every objective's SLI and error budget over time."""
    config = _config(config_path)
    with opened_record_log(config_path) as record_log:
        start = parse_time(since, "since")
        data = report.collect(SloEngine(record_log.store, config.slo, config.alerts), start, tenant)
    if fmt == "html":
        text = report.html_report(data)
    else:
        links: dict[str, str] = {}
        if output is not None:
            for name, svg in report.charts(data).items():
                path = output.with_name(f"{output.stem}-{name}")
                path.write_text(svg)
                links[name] = path.name
        text = report.markdown(data, links)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
        click.echo(f"wrote {output}", err=True)
