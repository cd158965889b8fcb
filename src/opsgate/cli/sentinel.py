"""``opsgate sentinel status|run|baseline|show RUN``: the behaviour-change sentinel of a running gateway.

Each command calls the gateway's ``/admin/sentinel`` API (operator key), so what it shows is what the
gateway sees; ``--json`` prints the API's answer as it is. ``run`` exits 1 when a deployment changed
behaviour (for CI and cron).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

import click
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.cli.options import LOCAL_GATEWAY, gateway_url_option, id_column

_STATUS_STYLE = {"changed": "bold red", "unchanged": "green", "baseline": "cyan", "failed": "yellow"}


def _root(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url, api_key = ctx.obj["url"], ctx.obj["api_key"]
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(method, _root(url) + path, json=body, headers=headers, timeout=ctx.obj["timeout"])
    except httpx.HTTPError as error:
        raise click.ClickException(f"cannot reach the gateway at {_root(url)}: {error}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200:
        message = (data or {}).get("error", {}).get("message") if isinstance(data, dict) else response.text[:300]
        raise click.ClickException(f"HTTP {response.status_code}: {message}")
    return data


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _styled(status: str) -> str:
    style = _STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def _echo_json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _runs_table(runs: list[dict[str, Any]], title: str) -> Table:
    table = Table(
        id_column("run", [r["id"] for r in runs]),
        "deployment",
        "kind",
        "status",
        "changed",
        "share",
        "model / fingerprint",
        "started",
        title=title,
    )
    for run in runs:
        moved = [*run.get("summary", {}).get("model", []), *run.get("summary", {}).get("system_fingerprint", [])]
        share = run.get("share")
        table.add_row(
            run["id"],
            run["deployment"],
            run["kind"],
            _styled(run["status"]),
            f"{run['changed']}/{run['prompts']}" + (f" ({run['failed']} failed)" if run.get("failed") else ""),
            "-" if share is None else f"{share:.2f}",
            ", ".join(moved) or "-",
            _when(run.get("started_at")),
        )
    return table


@click.group("sentinel")
@gateway_url_option(default=LOCAL_GATEWAY, help="The gateway's base URL (its /v1 or its root).")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None, help="An operator admin key (env OPSGATE_API_KEY).")
@click.option("--timeout", type=click.FloatRange(1, 3600), default=600.0, show_default=True, help="Seconds per call.")
@click.pass_context
def sentinel_group(ctx: click.Context, url: str, api_key: str | None, timeout: float) -> None:
    """Golden prompts against every deployment: baselines, runs, behaviour changes."""
    ctx.obj = {"url": url, "api_key": api_key, "timeout": timeout}


@sentinel_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """The schedule, the lease, counts and the latest behaviour changes."""
    data = _call(ctx, "GET", "/admin/sentinel/status")
    if as_json:
        _echo_json(data)
        return
    console = Console()
    if not data.get("enabled"):
        console.print("[yellow]the sentinel is not enabled[/yellow] (sentinel.enabled in the gateway's config)")
    else:
        schedule = data.get("schedule") or {}
        console.print(f"aliases watched: {', '.join(f'{a} ({len(d)})' for a, d in data['aliases'].items()) or '-'}")
        console.print(f"next run: {_when(schedule.get('next_run'))}; lease holder: {schedule.get('holder') or '-'}")
        last = data.get("last_run")
        if last:
            console.print(
                f"last run here: {last['deployment']} {_styled(last['status'])} at {_when(last['finished_at'])}"
            )
        if data.get("last_error"):
            console.print(f"[yellow]last error: {data['last_error']}[/yellow]")
    counts = data.get("store") or {}
    console.print(f"runs stored: {counts.get('runs', 0)}; behaviour changes seen: {counts.get('changes_seen', 0)}")
    changes = data.get("latest_changes") or []
    if changes:
        console.print(_runs_table(changes, "latest behaviour changes"))


def _run(ctx: click.Context, path: str, alias: str | None, deployment: str | None, as_json: bool) -> None:
    body = {k: v for k, v in (("alias", alias), ("deployment", deployment)) if v is not None}
    console = Console(stderr=True)
    with console.status("running golden prompts (each deployment in turn)…"):
        data = _call(ctx, "POST", path, body)
    runs = data["data"]
    if as_json:
        _echo_json(data)
    else:
        Console().print(_runs_table(runs, "sentinel runs"))
    if any(r["status"] == "changed" for r in runs):
        changed = ", ".join(r["deployment"] for r in runs if r["status"] == "changed")
        click.echo(f"behaviour changed: {changed} (opsgate sentinel show RUN for the diffs)", err=True)
        ctx.exit(1)


@sentinel_group.command("run")
@click.option("--alias", help="Only this alias.")
@click.option("--deployment", help="Only this deployment (alias#index).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def run_command(ctx: click.Context, alias: str | None, deployment: str | None, as_json: bool) -> None:
    """Run the golden prompts now; exit 1 when a deployment changed behaviour."""
    _run(ctx, "/admin/sentinel/run", alias, deployment, as_json)


@sentinel_group.command("baseline")
@click.option("--alias", required=True, help="The alias to re-baseline.")
@click.option("--deployment", help="Only this deployment (alias#index).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def baseline_command(ctx: click.Context, alias: str, deployment: str | None, as_json: bool) -> None:
    """Store new baselines (after an intended change of a deployment)."""
    _run(ctx, "/admin/sentinel/baseline", alias, deployment, as_json)


@sentinel_group.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@click.pass_context
def show_command(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """A run: each golden prompt's verdict, similarity and diff against its baseline."""
    data = _call(ctx, "GET", f"/admin/sentinel/runs/{quote(run_id, safe='')}")
    if as_json:
        _echo_json(data)
        return
    console = Console()
    console.print(_runs_table([data], f"run {data['id']}"))
    table = Table("prompt", "status", "similarity", "model", "fingerprint", "error", title="golden prompts")
    for item in data["items"]:
        similarity = item.get("similarity")
        table.add_row(
            item["prompt_id"],
            _styled(item["status"]),
            "-" if similarity is None else f"{similarity:.3f}",
            item.get("upstream_model") or "-",
            item.get("fingerprint") or "-",
            item.get("error") or "",
        )
    console.print(table)
    for item in data["items"]:
        if item.get("diff"):
            console.print(f"\n[bold]{item['prompt_id']}[/bold] ({item['status']})")
            console.print(item["diff"], markup=False, highlight=False)
