"""``opsgate redteam run|check|roc``: measure a gateway's guards against a suite of attacks and benign prompts."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opsgate.cli.config_file import exit_listing_problems, load_config_or_exit
from opsgate.cli.json_output import json_destination
from opsgate.cli.options import gateway_url_option
from opsgate.domain.config import GatewayConfig
from opsgate.redteam.report import Report, Thresholds, render_table, summarise
from opsgate.redteam.runner import CaseResult, RunSettings, make_client, run_suite
from opsgate.redteam.suite import Suite, SuiteError, load_suite

console = Console(stderr=True)
# Exit codes: 0 the gate passed, 1 a threshold (or the error budget) was missed, 2 bad input.
EXIT_FAILED = 1
EXIT_USAGE = 2


def _suite_or_exit(path: str | None) -> Suite:
    try:
        return load_suite(path)
    except SuiteError as error:
        exit_listing_problems("suite", error.source, error.problems)


@asynccontextmanager
async def local_gateway(config: GatewayConfig, ready_timeout: float = 300.0) -> AsyncIterator[str]:
    """Serve ``config`` on a free loopback port inside this process; yields its ``/v1`` base URL.

    The cases still go over real HTTP through the SDK, so they pass exactly the path a client's
    requests pass (headers, status codes, error bodies), not a shortcut around it.
    """
    import uvicorn

    from opsgate.server.app import create_app

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on"
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                raise click.ClickException("the in-process gateway did not start (see the log above)")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + ready_timeout
        with console.status("loading models…"):
            async with httpx.AsyncClient() as http:
                while (await http.get(url + "/readyz")).status_code != 200:
                    if time.monotonic() > deadline:
                        raise click.ClickException(f"the in-process gateway was not ready after {ready_timeout:.0f} s")
                    await asyncio.sleep(0.2)
        yield url + "/v1"
    finally:
        server.should_exit = True
        await task


async def _run(
    suite: Suite, settings: RunSettings, base_url: str | None, api_key: str | None, config_path: str | None
) -> tuple[list[CaseResult], str]:
    progress = Progress(
        TextColumn("[bold]red team[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("detected {task.fields[detected]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )

    async def go(url: str) -> list[CaseResult]:
        await _refuse_without_guards(url, api_key)
        client = make_client(url, api_key, settings)
        task = progress.add_task(suite.name, total=len(suite.cases), detected=0)
        seen = {"detected": 0}

        def advance(result: CaseResult) -> None:
            seen["detected"] += result.detected
            progress.update(task, advance=1, detected=seen["detected"])

        try:
            with progress:
                return await run_suite(client, suite.cases, settings, advance)
        finally:
            await client.close()

    if base_url:
        return await go(base_url), base_url
    logging.basicConfig(level="WARNING")
    async with local_gateway(load_config_or_exit(config_path)) as url:
        return await go(url), "in-process"


async def _refuse_without_guards(base_url: str, api_key: str | None) -> None:
    """Stop at once (exit 2) when the gateway's ``/readyz`` shows no guard stage: every attack would pass,
    and the run would take minutes to say "recall 0%". A key that cannot read /readyz's detail: run anyway."""
    root = base_url.rstrip("/").removesuffix("/v1")
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            body = (await http.get(root + "/readyz", headers=headers)).json()
    except (httpx.HTTPError, ValueError):
        return  # not an opsgate /readyz (another gateway in front): the run itself will tell
    pipeline = body.get("pipeline") if isinstance(body, dict) else None
    if isinstance(pipeline, list) and "guard" not in pipeline:
        console.print(
            f"[red]guards are off[/red] on {root} (no guard stage in its pipeline, per /readyz): every attack "
            "would pass. Turn them on (guard.enabled, e.g. examples/guards.yaml) and run again."
        )
        raise SystemExit(EXIT_USAGE)


def _document(
    suite: Suite, settings: RunSettings, target: str, started: datetime, seconds: float, report: Report, rows: list[Any]
) -> dict[str, Any]:
    return {
        "suite": suite.name,
        "model": settings.model,
        "target": target,
        "started_at": started.isoformat(),
        "duration_s": round(seconds, 2),
        "settings": {"max_tokens": settings.max_tokens, "concurrency": settings.concurrency, "temperature": 0},
        **report.to_dict(),
        "cases": rows,
    }


@click.group()
def redteam() -> None:
    """Red-team the guards: attacks they should catch, benign prompts they should pass."""


@redteam.command("run")
@click.option("-m", "--model", required=True, help="Model alias to attack (its guard policy is what is measured).")
@click.option(
    "--suite", "suite_path", type=click.Path(dir_okay=False), default=None, help="Suite YAML (default: starter)."
)
@gateway_url_option(dest="base_url", help="A running gateway's /v1 base URL; in-process from --config when left out.")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None, help="Key for the gateway.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="OPSGATE_CONFIG")
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=128, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="Per request.")
@click.option("--category", "categories", multiple=True, help="Only these categories (repeatable).")
@click.option("--case", "case_ids", multiple=True, help="Only these case ids (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON on stdout (the table on stderr).")
@click.option("-o", "--output", default=None, help="Write the full report as JSON to this file ('-': stdout).")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=0.95, show_default=True)
@click.option("--max-fpr", type=click.FloatRange(0, 1), default=0.02, show_default=True)
@click.option("--strict", is_flag=True, help="Gate on the 95% interval's pessimistic end, not the point estimate.")
@click.option("--max-errors", type=click.IntRange(0), default=0, show_default=True, help="Cases allowed no verdict.")
def run(
    model: str,
    suite_path: str | None,
    base_url: str | None,
    api_key: str | None,
    config_path: str | None,
    concurrency: int,
    max_tokens: int,
    timeout: float,
    categories: tuple[str, ...],
    case_ids: tuple[str, ...],
    as_json: bool,
    output: str | None,
    min_recall: float,
    max_fpr: float,
    strict: bool,
    max_errors: int,
) -> None:
    """Send the suite through the gateway and gate on recall and false-positive rate.

    Exit 0 when the thresholds hold, 1 when they do not (or more cases than --max-errors failed to
    get any verdict), 2 for a bad suite, config or option.
    """
    json_out = json_destination(as_json, output)
    suite = _suite_or_exit(suite_path)
    if categories or case_ids:
        suite = suite.subset(list(case_ids) or None, list(categories) or None)
        if not suite.cases:
            console.print("[red]No case matches[/red] the --category/--case filters.")
            raise SystemExit(EXIT_USAGE)
    settings = RunSettings(model=model, max_tokens=max_tokens, concurrency=concurrency, timeout=timeout)
    thresholds = Thresholds(min_recall=min_recall, max_fpr=max_fpr, strict=strict, max_errors=max_errors)
    started, clock = datetime.now(UTC), time.perf_counter()
    results, target = asyncio.run(_run(suite, settings, base_url, api_key, config_path))
    report = summarise(results, thresholds)
    # With --json (or -o -), stdout is the JSON document alone; the table goes to stderr with the progress.
    (console if json_out == "-" else Console()).print(
        render_table(report, f"red team: {suite.name} on {model} ({target})")
    )
    errors = [r for r in results if r.outcome == "error"]
    for result in errors[:5]:
        console.print(f"[yellow]error[/yellow] {result.case.id}: {result.status or ''} {result.message}")
    if json_out:
        document = _document(
            suite, settings, target, started, time.perf_counter() - clock, report, [r.to_dict() for r in results]
        )
        data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
        if json_out == "-":
            sys.stdout.buffer.write(data + b"\n")
            sys.stdout.flush()
        else:
            Path(json_out).write_bytes(data + b"\n")
    if report.passed:
        console.print("[green]PASS[/green] " + f"recall {report.recall.describe()}, FPR {report.fpr.describe()}")
        raise SystemExit(0)
    console.print("[red]FAIL[/red] " + "; ".join(report.failures))
    raise SystemExit(EXIT_FAILED)


@redteam.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
def check(path: str | None) -> None:
    """Validate a suite file (default: the starter suite) and count its cases per category."""
    suite = _suite_or_exit(path)
    counts: dict[tuple[str, str], int] = {}
    for case in suite.cases:
        counts[(case.kind, case.category)] = counts.get((case.kind, case.category), 0) + 1
    table = Table("kind", "category", "cases", title=suite.name, title_justify="left")
    for (kind, category), count in sorted(counts.items()):
        table.add_row(kind, category, str(count))
    Console().print(table)
    console.print(f"[green]OK[/green] {len(suite.attacks())} attacks, {len(suite.benign())} benign")


@redteam.command("roc")
@click.option("--corpus", type=click.Path(dir_okay=False, exists=True), help="Default: the checkout's corpus.")
@click.option(
    "--split",
    default="loso",
    show_default=True,
    type=click.Choice(["loso", "train", "dev", "heldout"]),
    help="loso: out-of-fold scores of the outside sources (the honest curve); a split: the shipped model in-sample.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the ROC as JSON on stdout instead of Markdown.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Also write the ROC as JSON to this file.")
def roc(corpus: str | None, split: str, as_json: bool, output: str | None) -> None:
    """The learned injection detector's ROC (leave-one-source-out by default) and its shipped operating point."""
    from opsgate.guard.training.corpus import CORPUS
    from opsgate.redteam.roc import detector_roc, loso_roc, render_markdown

    path = Path(corpus) if corpus else CORPUS
    if not path.exists():
        console.print(f"[red]no corpus at {path}[/red]: run from a checkout, or pass --corpus")
        raise SystemExit(EXIT_USAGE)
    report = path.with_name("loso.json")
    if split == "loso" and not report.exists():
        console.print(f"[red]no leave-one-source-out report at {report}[/red]: run opsgate.guard.training.train")
        raise SystemExit(EXIT_USAGE)
    try:
        result = loso_roc(path, report) if split == "loso" else detector_roc(path, split)
    except (ValueError, KeyError, TypeError) as error:  # a corpus or report that is not ours (JSON errors too)
        console.print(f"[red]cannot read the corpus or its report:[/red] {escape(str(error))}")
        raise SystemExit(EXIT_USAGE) from None
    data = orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"
    json_out = json_destination(as_json, output)
    if json_out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    click.echo(render_markdown(result))
    if json_out:
        Path(json_out).write_bytes(data)
