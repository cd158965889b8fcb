"""``opsgate eval …``: datasets, runs, compare, gate and the model choice report.

The commands open the config's record store (where the evaluation tables live) and call models
through the gateway's own ``/v1``: in-process from ``--config``, or a running gateway with
``--base-url``. Exit codes: 0 done (the gate: passed), 1 the gate failed, 2 bad input.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from opsgate.cli.config_file import existing_store, load_config_or_exit
from opsgate.cli.json_output import json_destination
from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError
from opsgate.evals.analysis import RunNotFound, compare_runs, gate_runs
from opsgate.evals.client import GatewayClient, gateway_client
from opsgate.evals.dataset import DatasetError, DatasetItem
from opsgate.evals.from_logs import LogSelection, build_from_logs, feedback_ids, pii_scrubber
from opsgate.evals.importers import read_dataset, write_jsonl
from opsgate.evals.judge import PairwiseJudge
from opsgate.evals.report import pareto_png, pick_quality, render_html, render_json, render_markdown, report_rows
from opsgate.evals.runner import RunSettings, execute, run_pairwise
from opsgate.evals.scoring import Scorer, ScorerError, ScorerRegistry
from opsgate.evals.stats import parse_percent
from opsgate.evals.store import ANY_TENANT, EvalStore
from opsgate.store.record_log import RecordLog, open_store

stderr = Console(stderr=True)
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


def _fail(message: str) -> NoReturn:
    stderr.print(f"[red]error:[/red] {message}")
    raise SystemExit(EXIT_USAGE)


def _opened(config_path: str | None) -> tuple[GatewayConfig, EvalStore]:
    """The config and its record store, which must exist: a new empty one (a relative path from another
    directory) would answer "no run" or keep datasets and runs where no gateway or later command looks."""
    config = load_config_or_exit(config_path)
    try:
        url = existing_store(config, config_path, "evaluation datasets and runs")
    except click.ClickException as error:  # exit 2 (bad input): 1 would read as "the gate failed"
        _fail(error.format_message())
    return config, EvalStore(open_store(url))


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), envvar="OPSGATE_CONFIG", help="YAML config."
)
tenant_option = click.option("--tenant", default=None, help="Tenant the dataset or run belongs to (default: none).")


def _out(data: bytes, path: str | None) -> None:
    if path in (None, "-"):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        Path(str(path)).write_bytes(data)


@click.group("eval")
def eval_group() -> None:
    """Evaluate models: datasets, runs, comparisons, regression gates, reports."""


@eval_group.group()
def dataset() -> None:
    """Versioned datasets (immutable, content-hashed)."""


def _report_saved(version: Any, created: bool, skipped: int = 0, problems: list[str] | None = None) -> None:
    state = "new version" if created else "unchanged (same content as the latest version)"
    stderr.print(
        f"[green]{version.name}@{version.version}[/green] {version.id} {version.items} items, "
        f"sha256 {version.content_hash[:16]}… — {state}"
    )
    if skipped:
        stderr.print(f"[yellow]skipped {skipped} invalid items[/yellow] (--skip-invalid); first problems:")
        for problem in (problems or [])[:5]:
            stderr.print(f"  - {problem}")


@dataset.command("import")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "file_format", type=click.Choice(["jsonl", "csv", "parquet"]), default=None)
@click.option("--skip-invalid", is_flag=True, help="Skip bad items (counted and reported) instead of failing.")
@tenant_option
@config_option
def import_dataset(
    name: str, path: str, file_format: str | None, skip_invalid: bool, tenant: str | None, config_path: str | None
) -> None:
    """Import PATH (JSONL, CSV or Parquet) as the next version of dataset NAME."""
    _, store = _opened(config_path)
    try:
        result = read_dataset(path, file_format, skip_invalid=skip_invalid)
        version, created = store.save_dataset(
            tenant, name, result.items, {"file": Path(path).name, "skipped": result.skipped}, "cli"
        )
    except DatasetError as error:
        stderr.print("[red]invalid dataset:[/red]")
        for problem in error.problems[:20]:
            stderr.print(f"  - {problem}")
        raise SystemExit(EXIT_USAGE) from None
    _report_saved(version, created, result.skipped, result.problems)


@dataset.command("export")
@click.argument("ref")
@click.option("-o", "--output", default=None, help="File to write (default: stdout).")
@click.option("--tenant", default=None, help="Resolve NAME among this tenant's datasets (default: the shared ones).")
@config_option
def export_dataset(ref: str, output: str | None, tenant: str | None, config_path: str | None) -> None:
    """Write dataset REF (NAME, NAME@VERSION or its id) as JSONL."""
    _, store = _opened(config_path)
    # A name is the shared dataset's unless --tenant says whose; an id reaches any tenant's.
    version = store.find_dataset(tenant if tenant is not None else ANY_TENANT, ref)
    if version is None:
        _fail(f"no dataset '{ref}'")
    assert version is not None
    items = store.dataset_items(version.id)
    if output in (None, "-"):
        count = write_jsonl(items, sys.stdout.buffer)
        sys.stdout.flush()
    else:
        with Path(str(output)).open("wb") as handle:
            count = write_jsonl(items, handle)
    stderr.print(f"{count} items of {version.name}@{version.version}")


@dataset.command("list")
@config_option
def list_datasets(config_path: str | None) -> None:
    """Every dataset version, newest first."""
    _, store = _opened(config_path)
    table = Table("name", "version", "id", "items", "tenant", "sha256", title="datasets", title_justify="left")
    for v in store.list_datasets(ANY_TENANT):
        table.add_row(v.name, str(v.version), v.id, str(v.items), v.tenant or "", v.content_hash[:16])
    Console().print(table)


@dataset.command("from-logs")
@click.argument("name")
@click.option("--model", default=None, help="Only requests to this alias.")
@click.option("--since", default="7d", show_default=True, help="From this time: 30m, 7d (ago), ISO 8601.")
@click.option("--until", default=None)
@click.option("--tag", "tags", multiple=True, help="key=value (tags or request metadata); repeatable.")
@click.option("--status", default="2xx", show_default=True, help="A code, a class (2xx) or 'error'.")
@click.option("--feedback", type=click.Choice(["negative", "positive"]), default=None)
@click.option("--sample", type=click.IntRange(1, 200_000), default=None, help="Keep a random N after dedup.")
@click.option("--seed", type=int, default=0, show_default=True)
@tenant_option
@config_option
def from_logs(
    name: str,
    model: str | None,
    since: str,
    until: str | None,
    tags: tuple[str, ...],
    status: str,
    feedback: str | None,
    sample: int | None,
    seed: int,
    tenant: str | None,
    config_path: str | None,
) -> None:
    """Build dataset NAME from recorded traffic (PII scrubbed, duplicates removed, answers as references)."""
    from opsgate.store.query import query_from_params

    config, store = _opened(config_path)
    params = {"since": since, "until": until, "model": model, "status": status, "tenant": tenant}
    try:
        query = query_from_params({k: v for k, v in params.items() if v}, list(tags))
    except GatewayError as error:
        _fail(error.message)
    selection = LogSelection(query, feedback, sample, seed)
    log = RecordLog(config.record, writer=False)
    allowed = None
    if feedback is not None:
        allowed = feedback_ids(log.store, feedback == "positive", query.since, tenant)
    with stderr.status("reading the request log and scrubbing PII…"):
        result = build_from_logs(log.iter_records(query), selection, pii_scrubber(), allowed)
    if not result.items:
        _fail(f"no usable records matched ({result.read} read, {result.unusable} without text)")
    source = {
        "from_logs": {k: v for k, v in params.items() if v},
        "tags": list(tags),
        "feedback": feedback,
        "sample": sample,
        "seed": seed,
        "read": result.read,
        "duplicates": result.duplicates,
        "redacted": result.redacted,
    }
    version, created = store.save_dataset(tenant, name, result.items, source, "cli")
    _report_saved(version, created)
    stderr.print(
        f"read {result.read} records: {result.duplicates} duplicates and {result.unusable} without usable text "
        f"dropped; PII redacted in {result.redacted} items"
    )


# -- runs -------------------------------------------------------------------------------------------


def _build_scorers(
    specs: tuple[str, ...], judge: str | None, client: GatewayClient, run_id: str, repeats: int
) -> list[Scorer]:
    registry = ScorerRegistry()
    metadata = {"eval_run": run_id}
    scorers = [registry.build(spec, client, metadata, repeats) for spec in specs]
    if judge:
        scorers.append(registry.build(f"judge:{judge}", client, metadata, repeats))
    names = [s.name for s in scorers]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ScorerError(f"scorer '{duplicate}' given twice")
    return scorers


def _scorer_meta(scorers: list[Scorer]) -> list[dict[str, Any]]:
    return [{"name": s.name, "kind": s.kind, "higher_is_better": s.higher_is_better} for s in scorers]


async def _run_models(
    store: EvalStore,
    client: GatewayClient,
    version: Any,
    items: list[DatasetItem],
    models: list[str],
    options: dict[str, Any],
) -> list[str]:
    run_ids = []
    for model in models:
        resume = options.get("resume")
        if resume:
            run = store.get_run(ANY_TENANT, resume)
            assert run is not None
            run_id, tenant = resume, run["tenant"]
            saved = run["settings"] or {}
            settings = RunSettings(model=run["model"], **{k: v for k, v in saved.get("call", {}).items()})
            settings.concurrency = options["concurrency"]
            specs = tuple(saved.get("scorer_specs") or ())
            judge, repeats = saved.get("judge"), int(saved.get("judge_repeats") or 3)
            await asyncio.to_thread(store.set_status, run_id, "running")
        else:
            tenant = options["tenant"]
            settings = RunSettings(
                model=model,
                max_tokens=options["max_tokens"],
                temperature=options["temperature"],
                seed=options["seed"],
                concurrency=options["concurrency"],
            )
            specs, judge, repeats = options["scorers"], options["judge"], options["judge_repeats"]
            run_id = ""
        scorers = _build_scorers(specs, judge, client, run_id or "pending", repeats)
        if not resume:
            call = {k: v for k, v in settings.to_dict().items() if k != "concurrency"}
            run_id = store.create_run(
                tenant,
                model,
                dataset_id=version.id,
                settings={
                    "call": call,
                    "scorer_specs": list(specs),
                    "scorers": _scorer_meta(scorers),
                    "judge": judge,
                    "judge_repeats": repeats,
                    "dataset": f"{version.name}@{version.version}",
                },
                actor="cli",
            )
            scorers = _build_scorers(specs, judge, client, run_id, repeats)
        run_ids.append(run_id)
        stderr.print(f"run [bold]{run_id}[/bold]: {settings.model} on {version.name}@{version.version}")
        progress = Progress(
            TextColumn(f"[bold]{settings.model}[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=stderr,
        )
        with progress:
            done = store.finished_keys(run_id)
            task = progress.add_task("run", total=len(items), completed=len(done), failed=0)
            failed = {"n": 0}

            def advance(
                result: Any, task: Any = task, failed: dict[str, int] = failed, progress: Progress = progress
            ) -> None:
                failed["n"] += result.status != "ok"
                progress.update(task, advance=1, failed=failed["n"])

            outcome = await execute(client, store, run_id, tenant, settings, scorers, items, advance)
        rate = (outcome.ok + outcome.failed) / outcome.seconds if outcome.seconds else 0.0
        stderr.print(
            f"  {outcome.ok} ok, {outcome.failed} failed, {outcome.skipped} already done; "
            f"{outcome.seconds:.1f} s ({rate:.0f} items/s)"
        )
    if options.get("pairwise") and options.get("judge") and len(run_ids) > 1:
        judge_model = options["judge"]
        for run_id, model in zip(run_ids[1:], models[1:], strict=True):
            pairwise = PairwiseJudge(client, judge_model, options["judge_repeats"], {"eval_run": run_id})
            with stderr.status(f"pairwise judging {models[0]} vs {model}…"):
                judged = await run_pairwise(store, pairwise, options["tenant"], run_ids[0], run_id, model)
            stderr.print(f"  pairwise: {judged} items judged ({models[0]} vs {model}, both orders)")
    return run_ids


@eval_group.command("run")
@click.argument("dataset_ref", required=False)
@click.option("-m", "--model", "models", multiple=True, help="Model alias; repeat for several (one run each).")
@click.option("-s", "--scorer", "scorers", multiple=True, help="Scorer spec (exact, bleu, regex:PATTERN, …).")
@click.option("--judge", default=None, help="Model alias to judge answers (pointwise 1-5).")
@click.option("--judge-repeats", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--pairwise", is_flag=True, help="With --judge and 2+ models: judge each model against the first.")
@click.option("--resume", default=None, help="Resume run RUN: only unfinished (or failed) items are called.")
@click.option("--concurrency", type=click.IntRange(1, 512), default=8, show_default=True)
@click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="Per call.")
@click.option("--base-url", envvar="OPSGATE_URL", default=None, help="A running gateway's /v1 (else in-process).")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None)
@tenant_option
@config_option
def run(
    dataset_ref: str | None,
    models: tuple[str, ...],
    scorers: tuple[str, ...],
    judge: str | None,
    judge_repeats: int,
    pairwise: bool,
    resume: str | None,
    concurrency: int,
    max_tokens: int,
    temperature: float,
    seed: int,
    timeout: float,
    base_url: str | None,
    api_key: str | None,
    tenant: str | None,
    config_path: str | None,
) -> None:
    """Run DATASET through each --model and score the answers (results stored per item)."""
    config, store = _opened(config_path)
    if resume:
        existing = store.get_run(ANY_TENANT, resume)
        if existing is None or existing["dataset_id"] is None:
            _fail(f"no offline run '{resume}' to resume")
        assert existing is not None
        version = store.find_dataset(ANY_TENANT, existing["dataset_id"])
        models = (existing["model"],)
    else:
        if not dataset_ref or not models:
            _fail("give DATASET and at least one --model (or --resume RUN)")
        # A name resolves among the shared datasets (the release gate's), or --tenant's own; never
        # another tenant's dataset of the same name. An id reaches any tenant's.
        version = store.find_dataset(tenant if tenant is not None else ANY_TENANT, str(dataset_ref))
    if version is None:
        _fail(f"no dataset '{dataset_ref}'")
    assert version is not None
    items = store.dataset_items(version.id)
    options = {
        "resume": resume,
        "tenant": tenant,
        "scorers": scorers or ("exact",),
        "judge": judge,
        "judge_repeats": judge_repeats,
        "pairwise": pairwise,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "seed": seed,
    }

    async def go() -> list[str]:
        async with gateway_client(
            base_url=base_url,
            config=config,
            api_key=api_key,
            call_timeout=timeout,
            connections=max(concurrency * 2, 16),
        ) as client:
            return await _run_models(store, client, version, items, list(models), options)

    try:
        run_ids = asyncio.run(go())
    except (ScorerError, RuntimeError) as error:  # RuntimeError: the in-process gateway never became ready
        _fail(str(error))
    click.echo("\n".join(run_ids))


@eval_group.command("runs")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@config_option
def list_runs(limit: int, config_path: str | None) -> None:
    """Runs, newest first."""
    _, store = _opened(config_path)
    table = Table("run", "kind", "model", "status", "items", "failed", "scores", title="runs", title_justify="left")
    for r in store.list_runs(ANY_TENANT, limit):
        summary = r["summary"] or {}
        scores = ", ".join(
            f"{k}={v['mean']:.3g}" for k, v in (summary.get("scores") or {}).items() if v.get("mean") is not None
        )
        table.add_row(
            r["id"],
            r["kind"],
            r["model"],
            r["status"],
            str(summary.get("items", "")),
            str(summary.get("failed", "")),
            scores,
        )
    Console().print(table)


def _words_table(comparisons: list[Any], title: str) -> Table:
    table = Table("scorer", "test", "n", "baseline", "candidate", "diff (95% CI)", "p", "verdict", title=title)
    for c in comparisons:
        table.add_row(
            c.scorer,
            c.test,
            str(c.n),
            f"{c.baseline_mean:.4g}",
            f"{c.candidate_mean:.4g}",
            f"{c.diff:+.4g} ({c.ci_low:+.4g}, {c.ci_high:+.4g})",
            f"{c.p_value:.3g}",
            c.verdict,
        )
    return table


@eval_group.command("compare")
@click.argument("baseline")
@click.argument("candidate")
@click.option("-s", "--scorer", "scorers", multiple=True, help="Only these scorers.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout (the table on stderr).")
@click.option("-o", "--output", default=None, help="Write the comparison as JSON to this file ('-': stdout).")
@config_option
def compare(
    baseline: str,
    candidate: str,
    scorers: tuple[str, ...],
    as_json: bool,
    output: str | None,
    config_path: str | None,
) -> None:
    """Paired comparison of CANDIDATE against BASELINE, per scorer, with significance in words."""
    json_out = json_destination(as_json, output)
    _, store = _opened(config_path)
    try:
        comparisons, base_fail, cand_fail, header = compare_runs(
            store, ANY_TENANT, baseline, candidate, list(scorers) or None
        )
    except RunNotFound as error:
        _fail(str(error))
    (stderr if json_out == "-" else Console()).print(
        _words_table(comparisons, f"{header['candidate']['model']} vs {header['baseline']['model']}")
    )
    for c in comparisons:
        (stderr if json_out == "-" else Console()).print(c.words)
    if json_out:
        document = {**header, "failure_rates": {"baseline": base_fail, "candidate": cand_fail}}
        document["comparisons"] = [c.to_dict() for c in comparisons]
        _out(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n", json_out)


@eval_group.command("gate")
@click.option("--baseline", required=True)
@click.option("--candidate", required=True)
@click.option("--max-degradation", default="5%", show_default=True, help="Allowed drop, 5% or 0.05.")
@click.option("-s", "--scorer", "scorers", multiple=True, help="Only these scorers.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON on stdout (the table on stderr).")
@click.option("-o", "--output", default=None, help="Write the verdict as JSON to this file ('-': stdout).")
@config_option
def gate_command(
    baseline: str,
    candidate: str,
    max_degradation: str,
    scorers: tuple[str, ...],
    as_json: bool,
    output: str | None,
    config_path: str | None,
) -> None:
    """Exit 0 when CANDIDATE is not worse than BASELINE by more than --max-degradation (pessimistic end of
    the 95% interval), else 1. For CI/CD."""
    json_out = json_destination(as_json, output)
    try:
        limit = parse_percent(max_degradation)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--max-degradation") from None
    _, store = _opened(config_path)
    try:
        result, header = gate_runs(store, ANY_TENANT, baseline, candidate, limit, list(scorers) or None)
    except RunNotFound as error:
        _fail(str(error))
    if json_out:
        _out(orjson.dumps({**header, **result.to_dict()}, option=orjson.OPT_INDENT_2) + b"\n", json_out)
    stderr.print(_words_table(result.comparisons, "gate"))
    if result.passed:
        stderr.print(f"[green]PASS[/green] no scorer degrades by more than {limit:.1%}")
        raise SystemExit(0)
    stderr.print("[red]FAIL[/red]")
    for reason in result.reasons:
        stderr.print(f"  - {reason}")
    raise SystemExit(EXIT_GATE_FAILED)


@eval_group.command("report")
@click.argument("runs", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("-o", "--output", default=None, help="File to write (default: stdout; md writes the plot beside it).")
@click.option("--quality", default=None, help="Scorer to rank by (default: judge, else the first).")
@config_option
def report(runs: tuple[str, ...], fmt: str, output: str | None, quality: str | None, config_path: str | None) -> None:
    """Quality x cost x latency per run, with a Pareto plot (Markdown, HTML or JSON)."""
    _, store = _opened(config_path)
    loaded = []
    for run_id in runs:
        found = store.get_run(ANY_TENANT, run_id)
        if found is None:
            _fail(f"no evaluation run '{run_id}'")
        loaded.append(found)
    rows = report_rows(loaded, quality or pick_quality(loaded))
    if fmt == "json":
        _out(render_json(rows) + b"\n", output)
        return
    png = pareto_png(rows)
    if fmt == "html":
        _out(render_html(rows, png).encode(), output)
        return
    image = None
    if png is not None and output not in (None, "-"):
        image_path = Path(str(output)).with_suffix(".png")
        image_path.write_bytes(png)
        image = image_path.name
    _out(render_markdown(rows, image).encode(), output)
