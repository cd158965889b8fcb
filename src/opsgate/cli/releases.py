"""``opsgate prompts|release|experiment``: the prompt registry, releases and experiments from a terminal.

The same library calls as ``/admin/prompts``, ``/admin/releases`` and ``/admin/experiments``, straight
on the config's store; the audit log names the actor ``cli:<os user>``. Running gateways on that
store pick every change up within their poll interval (``releases.poll_seconds``).
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
import yaml
from rich.console import Console
from rich.table import Table

from opsgate.cli.config_file import existing_store, load_config_or_exit
from opsgate.cli.logs import config_option
from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError
from opsgate.releases import metrics
from opsgate.releases.prompts import PromptStore, diff
from opsgate.releases.store import AliasState, ReleaseStore, validate_release_spec
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore

console = Console()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@contextmanager
def _store(config_path: str | None) -> Iterator[tuple[SqlRecordStore, GatewayConfig]]:
    config = load_config_or_exit(config_path)
    # Never a new empty store: prompts and releases written there would never reach the gateway.
    store = open_store(existing_store(config, config_path, "prompts and releases"))
    try:
        yield store, config
    except GatewayError as error:
        raise click.ClickException(error.message) from None
    finally:
        store.close()


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _json(value: Any) -> None:
    click.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


def _pairs(values: tuple[str, ...], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint=what)
        try:
            out[key] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            out[key] = raw
    return out


# -- prompts ----------------------------------------------------------------------------------------


@click.group()
def prompts() -> None:
    """The prompt registry: immutable versions, labels, diffs."""


@prompts.command("create")
@click.argument("name")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/JSON {messages, variables, parameters, notes}.",
)
@click.option("--system", help="A one-message prompt: this system template (Jinja2).")
@click.option("--var", "variables", multiple=True, help="A declared variable (repeat).")
@click.option("--param", "params", multiple=True, help="KEY=VALUE parameter (temperature, max_tokens, ...).")
@click.option("--label", help="Point this label at the new version.")
@click.option("--notes")
@click.option("--tenant", help="The tenant whose prompt this is (default: shared).")
@config_option
def prompts_create(
    name: str,
    path: str | None,
    system: str | None,
    variables: tuple[str, ...],
    params: tuple[str, ...],
    label: str | None,
    notes: str | None,
    tenant: str | None,
    config_path: str | None,
) -> None:
    """Create the next version of NAME (the same content as the latest is not a new version)."""
    spec: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if not isinstance(loaded, dict):
            raise click.BadParameter("the file must hold an object", param_hint="--file")
        spec = loaded
    if system is not None:
        spec["messages"] = [{"role": "system", "content": system}]
    if variables:
        spec["variables"] = list(variables)
    if params:
        spec["parameters"] = {**(spec.get("parameters") or {}), **_pairs(params, "--param")}
    if not spec.get("messages"):
        raise click.UsageError("give --file or --system")
    with _store(config_path) as (store, _):
        registry = PromptStore(store)
        version, created = registry.create(
            tenant, name, spec.get("messages"), spec.get("variables", []), spec.get("parameters"),
            notes or spec.get("notes"), _actor(),
        )  # fmt: skip
        if label:
            registry.set_label(tenant, name, label, version.version, _actor())
    state = "created" if created else "unchanged (same content as the latest)"
    console.print(f"{version.ref} {state}" + (f"; label {label} → {version.version}" if label else ""))


@prompts.command("list")
@click.option("--tenant")
@config_option
def prompts_list(tenant: str | None, config_path: str | None) -> None:
    """Prompts with their latest version and labels."""
    with _store(config_path) as (store, _):
        rows = PromptStore(store).list_all(tenant)
    table = Table("name", "latest", "labels", "updated")
    for row in rows:
        labels = ", ".join(f"{k}→{v}" for k, v in sorted(row["labels"].items()))
        table.add_row(row["name"], str(row["latest_version"]), labels, _when(row["updated_at"]))
    console.print(table)


@prompts.command("show")
@click.argument("ref")
@click.option("--tenant")
@config_option
def prompts_show(ref: str, tenant: str | None, config_path: str | None) -> None:
    """A version as JSON (REF: name, name@label or name@N)."""
    with _store(config_path) as (store, _):
        _json(PromptStore(store).resolve(tenant, ref).to_dict())


@prompts.command("diff")
@click.argument("name")
@click.argument("old", type=int)
@click.argument("new", type=int)
@click.option("--tenant")
@config_option
def prompts_diff(name: str, old: int, new: int, tenant: str | None, config_path: str | None) -> None:
    """Unified diff of two versions."""
    with _store(config_path) as (store, _):
        registry = PromptStore(store)
        a, b = registry.get(tenant, name, old), registry.get(tenant, name, new)
    if a is None or b is None:
        raise click.ClickException(f"no such version of {name}")
    click.echo(diff(a, b))


@prompts.command("label")
@click.argument("name")
@click.argument("label")
@click.argument("version", type=int)
@click.option("--tenant")
@config_option
def prompts_label(name: str, label: str, version: int, tenant: str | None, config_path: str | None) -> None:
    """Point LABEL of NAME at VERSION (audited)."""
    with _store(config_path) as (store, _):
        before = PromptStore(store).set_label(tenant, name, label, version, _actor())
    console.print(f"{name}: {label} {before if before is not None else '(new)'} → {version}")


# -- releases ---------------------------------------------------------------------------------------


@click.group()
def release() -> None:
    """Releases of an alias: create, canary, promote, rollback, history."""


def _print_state(state: AliasState) -> None:
    arms = ", ".join(f"{a['arm']} {a['weight']:g}% ({a['release'] or 'base'})" for a in state.arms or [])
    console.print(
        f"{state.alias}: active {state.active or 'base (the YAML config)'}"
        + (f"; experiment {state.experiment}: {arms}" if arms else "")
        + f" (revision {state.revision})"
    )


@release.command("create")
@click.argument("alias")
@click.option("--deployment", "deployments", multiple=True, help="LABEL=WEIGHT, e.g. chat#0=1 (repeat).")
@click.option("--prompt", help="name@label or name@N (pinned to its version now).")
@click.option("--param", "params", multiple=True, help="KEY=VALUE (temperature, top_p, max_tokens, seed, stop).")
@click.option("--notes")
@click.option("--activate", is_flag=True, help="Make it the active release at once (no canary).")
@config_option
def release_create(
    alias: str,
    deployments: tuple[str, ...],
    prompt: str | None,
    params: tuple[str, ...],
    notes: str | None,
    activate: bool,
    config_path: str | None,
) -> None:
    """Create a release of ALIAS."""
    with _store(config_path) as (store, config):
        known = {a.name: [f"{a.name}#{i}" for i in range(len(a.deployments))] for a in config.models}
        if alias not in known:
            raise click.ClickException(f"no model '{alias}' in the config (known: {', '.join(known)})")
        spec: dict[str, Any] = {"parameters": _pairs(params, "--param")}
        if deployments:
            spec["deployments"] = _pairs(deployments, "--deployment")
        if prompt:
            spec["prompt"] = prompt
        releases = ReleaseStore(store)
        made = releases.create(
            alias, validate_release_spec(alias, spec, known[alias], PromptStore(store)), notes, _actor()
        )
        console.print(f"release {made.number} of {alias}: {made.id}")
        if activate:
            _print_state(releases.activate(alias, made.id, _actor()))


@release.command("canary")
@click.argument("alias")
@click.argument("release_ref", required=False)
@click.option("--weight", type=float, required=True, help="Percent of users (sticky) on the release.")
@config_option
def release_canary(alias: str, release_ref: str | None, weight: float, config_path: str | None) -> None:
    """Send WEIGHT % of ALIAS's users to RELEASE_REF (id or number; default: the newest release that is not
    the active one)."""
    with _store(config_path) as (store, _):
        releases = ReleaseStore(store)
        if release_ref is None:
            state = releases.state(alias)
            active = state.active if state else None
            candidates = [r for r in releases.list_all(alias) if r.id != active]
            if not candidates:
                raise click.ClickException(
                    f"{alias} has no release to canary: create one with `opsgate release create`"
                )
            release_ref = candidates[0].id
        _print_state(releases.canary(alias, release_ref, weight, _actor()))


@release.command("promote")
@click.argument("alias")
@config_option
def release_promote(alias: str, config_path: str | None) -> None:
    """Make the running canary's release the active one."""
    with _store(config_path) as (store, _):
        _print_state(ReleaseStore(store).promote(alias, _actor()))


@release.command("rollback")
@click.argument("alias")
@click.option("--to", "to", help="A release id or number, or 'base' (default: end the canary, else the previous).")
@click.option("--reason")
@config_option
def release_rollback(alias: str, to: str | None, reason: str | None, config_path: str | None) -> None:
    """Roll ALIAS back at once."""
    with _store(config_path) as (store, _):
        _print_state(ReleaseStore(store).rollback(alias, _actor(), to, reason))


@release.command("activate")
@click.argument("alias")
@click.argument("release_ref")
@config_option
def release_activate(alias: str, release_ref: str, config_path: str | None) -> None:
    """Make RELEASE_REF active at once (no canary)."""
    with _store(config_path) as (store, _):
        _print_state(ReleaseStore(store).activate(alias, release_ref, _actor()))


@release.command("history")
@click.argument("alias")
@click.option("--json", "as_json", is_flag=True)
@config_option
def release_history(alias: str, as_json: bool, config_path: str | None) -> None:
    """What happened to ALIAS, newest first, and its releases."""
    with _store(config_path) as (store, _):
        releases = ReleaseStore(store)
        history, listed, state = releases.history(alias), releases.list_all(alias), releases.state(alias)
    if as_json:
        _json(
            {"state": state.to_dict() if state else None, "history": history, "releases": [r.to_dict() for r in listed]}
        )
        return
    if state is not None:
        _print_state(state)
    table = Table("when", "action", "release", "actor", "details")
    for event in history:
        details = {k: v for k, v in (event["details"] or {}).items() if k not in ("before", "after", "spec")}
        table.add_row(
            _when(event["ts"]),
            event["action"],
            event["release"] or "",
            event["actor"] or "",
            orjson.dumps(details).decode(),
        )
    console.print(table)


# -- experiments ------------------------------------------------------------------------------------


@click.group()
def experiment() -> None:
    """A/B(/n) experiments between releases: start, status, stop."""


@experiment.command("start")
@click.argument("alias")
@click.option("--arm", "arms", multiple=True, required=True, help="NAME=RELEASE:WEIGHT (RELEASE 'base' = the YAML).")
@click.option("--tau", type=float, help="The sequential test's mixing sd (near the smallest effect worth seeing).")
@config_option
def experiment_start(alias: str, arms: tuple[str, ...], tau: float | None, config_path: str | None) -> None:
    """Start an experiment on ALIAS (the first arm is the control)."""
    parsed = []
    for item in arms:
        name, _, rest = item.partition("=")
        ref, _, weight = rest.rpartition(":")
        try:
            parsed.append({"arm": name, "release": ref, "weight": float(weight)})
        except ValueError:
            raise click.BadParameter(f"'{item}' is not NAME=RELEASE:WEIGHT", param_hint="--arm") from None
    with _store(config_path) as (store, _):
        settings = {"tau": tau} if tau is not None else {}
        _print_state(ReleaseStore(store).start_experiment(alias, parsed, settings, _actor()))


@experiment.command("status")
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True)
@config_option
def experiment_status(experiment_id: str, as_json: bool, config_path: str | None) -> None:
    """Per-arm metrics, the comparisons against the control, and the verdict in words."""
    with _store(config_path) as (store, _):
        found = ReleaseStore(store).experiment(experiment_id)
        if found is None:
            raise click.ClickException(f"no experiment {experiment_id}")
        report = metrics.report(store, found, float((found.get("settings") or {}).get("alpha", 0.05)))
    if as_json:
        _json(report)
        return
    console.print(f"{found['id']} on {found['alias']} ({found['kind']}, {found['status']})")
    table = Table("arm", "requests", "error rate", "p50 ms", "p95 ms", "ttft p50", "tokens", "cost", "guard flags")
    for name, arm in report["arms"].items():
        rate = arm["error_rate"]
        flags = arm["guard_flag_rate"]
        table.add_row(
            name, str(arm["requests"]), "" if rate is None else f"{rate:.4f}", str(arm["latency_ms"]["p50"] or ""),
            str(arm["latency_ms"]["p95"] or ""), str(arm["ttft_ms"]["p50"] or ""),
            "" if arm["tokens_mean"] is None else f"{arm['tokens_mean']:.1f}", f"{arm['cost']:.6f}",
            "" if flags is None else f"{flags:.4f}",
        )  # fmt: skip
    console.print(table)
    for line in report["verdict"]:
        console.print(line)
    plan = report.get("plan") or {}
    if "sequential_per_arm" in plan:
        console.print(
            f"plan: {plan['sequential_per_arm']} requests per arm to see a {plan['effect']:+.3f} change in the error "
            f"rate at {plan['power']:.0%} power (checked continuously; {plan['fixed_per_arm']} for one look); "
            f"smallest arm so far {plan['per_arm_so_far']}"
        )


@experiment.command("stop")
@click.argument("experiment_id")
@config_option
def experiment_stop(experiment_id: str, config_path: str | None) -> None:
    """Stop an experiment (traffic back on the active release)."""
    with _store(config_path) as (store, _):
        releases = ReleaseStore(store)
        found = releases.experiment(experiment_id)
        if found is None or found["status"] != "running":
            raise click.ClickException(f"no running experiment {experiment_id}")
        _print_state(releases.stop_experiment(found["alias"], _actor()))
