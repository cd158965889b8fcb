"""`opsgate drift status|report|check`: input and output drift per alias, from a terminal.

With ``--url`` they call a running gateway's ``/admin/drift`` API (``--api-key``: a tenant key sees
its own tenant's checks); without it they open the store the config names and make the same library
calls (``DriftHistory``, ``DriftChecker``). Reports are rendered by ``opsgate.drift.report``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import httpx
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.cli.config_file import existing_store, load_config_or_exit
from opsgate.cli.logs import config_option
from opsgate.cli.options import gateway_url_option
from opsgate.domain.config import GatewayConfig
from opsgate.drift.engine import headline
from opsgate.store.record_log import open_store
from opsgate.store.sql import SqlRecordStore

HISTORY_FOR_REPORT = 500


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M")


@contextmanager
def _local(config_path: str | None) -> Iterator[tuple[SqlRecordStore, GatewayConfig]]:
    config = load_config_or_exit(config_path)
    # Never a new empty store (a relative path from another directory): it would say "no checks".
    store = open_store(existing_store(config, config_path, "drift summaries and checks"))
    try:
        yield store, config
    except (click.ClickException, SystemExit):
        raise
    except Exception as error:  # a store that is down or has no drift tables: say so, no traceback
        raise click.ClickException(f"reading {config.record.store}: {type(error).__name__}: {error}") from None
    finally:
        store.close()


class _Api:
    """The gateway's /admin/drift API, from its /v1 base URL."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.base = url.rstrip("/").removesuffix("/v1")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def call(self, method: str, path: str, *, or_none_on: int | None = None, **kwargs: Any) -> Any:
        """The JSON answer; None for HTTP ``or_none_on``; any other error status is a clear error."""
        try:
            response = httpx.request(method, self.base + path, headers=self.headers, timeout=120.0, **kwargs)
        except httpx.HTTPError as error:
            raise click.ClickException(f"cannot reach the gateway at {self.base}: {error}") from None
        if response.status_code == or_none_on:
            return None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except Exception:
                message = response.text[:300]
            raise click.ClickException(f"{method} {path}: HTTP {response.status_code}: {message}")
        return response.json()


def _latest(url: str | None, api_key: str | None, config_path: str | None) -> list[dict[str, Any]]:
    if url:
        return list(_Api(url, api_key).call("GET", "/admin/drift/status")["data"])
    from opsgate.drift.history import DriftHistory

    with _local(config_path) as (store, _):
        return DriftHistory(store).latest()


def _history(
    url: str | None, api_key: str | None, config_path: str | None, alias: str | None, tenant: str | None, limit: int
) -> list[dict[str, Any]]:
    if url:
        api = _Api(url, api_key)
        params: dict[str, Any] = {"limit": limit}
        if alias:
            params["alias"] = alias
        if tenant:
            params["tenant"] = tenant
            return list(api.call("GET", "/admin/drift/checks", params=params)["data"])
        # No --tenant: the all-tenant series only (never one tenant's checks mixed in). A tenant key
        # may not read it (403): it gets its own tenant's checks, the only ones it can see.
        page = api.call("GET", "/admin/drift/checks", params={**params, "scope": "global"}, or_none_on=403)
        if page is None:
            page = api.call("GET", "/admin/drift/checks", params=params)
        return list(page["data"])
    from opsgate.drift.history import GLOBAL, DriftHistory

    with _local(config_path) as (store, _):
        return DriftHistory(store).list(alias=alias, tenant=tenant if tenant else GLOBAL, limit=limit)


@click.group("drift")
def drift_group() -> None:
    """Input and output drift per alias: status and reports."""


url_option = gateway_url_option(help="A running gateway's /v1 base URL (else: the store from --config).")
key_option = click.option("--api-key", envvar="OPSGATE_API_KEY", default=None, help="Key for --url.")


@drift_group.command("status")
@url_option
@key_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status(url: str | None, api_key: str | None, config_path: str | None, as_json: bool) -> None:
    """The newest drift check of every alias (and tenant): drifted or not, score, what moved."""
    rows = _latest(url, api_key, config_path)
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        click.echo("no drift checks yet (is drift.enabled set, and has the monitor run?)")
        return
    table = Table("alias", "tenant", "checked", "state", "score", "requests (ref → cur)", "what moved")
    for row in rows:
        state = (
            "[yellow]insufficient[/yellow]"
            if row.get("insufficient")
            else "[bold red]DRIFT[/bold red]"
            if row.get("drifted")
            else "[green]ok[/green]"
        )
        requests = (
            f"{(row.get('reference') or {}).get('requests', '-')} → {(row.get('current') or {}).get('requests', '-')}"
        )
        table.add_row(
            str(row.get("alias")),
            str(row.get("tenant") or "all"),
            _when(row.get("checked_at")),
            state,
            f"{float(row.get('score') or 0):.2f}",
            requests,
            headline(row),
            end_section=False,
        )
    Console().print(table)


@drift_group.command("report")
@click.option("--alias", default=None, help="The alias (default: every alias's newest check, JSON only).")
@click.option("--tenant", default=None, help="A per-tenant check's tenant (default: the all-tenant check).")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None, help="Write here, not stdout.")
@url_option
@key_option
@config_option
def report(
    alias: str | None,
    tenant: str | None,
    fmt: str,
    output: str | None,
    url: str | None,
    api_key: str | None,
    config_path: str | None,
) -> None:
    """The newest drift check of ALIAS as Markdown, HTML (with plots and history) or JSON."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True) as progress:
        progress.add_task("reading drift checks…")
        if alias is None:
            history = _latest(url, api_key, config_path)
        else:
            history = _history(url, api_key, config_path, alias, tenant, HISTORY_FOR_REPORT)
    if not history:
        raise click.ClickException(f"no drift checks{f' of {alias}' if alias else ''} yet")
    if fmt == "json" or (alias is None and fmt != "json"):
        if fmt != "json":
            click.echo("several aliases: --format json (give --alias for md or html)", err=True)
        text = orjson.dumps(history if alias is None else history[0], option=orjson.OPT_INDENT_2).decode()
    else:
        text = _render(fmt, history[0], history)
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as error:
            reason = error.strerror or str(error)
            raise click.BadParameter(f"cannot write {output}: {reason}", param_hint="--output") from None
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text)


def _render(fmt: str, result: dict[str, Any], history: list[dict[str, Any]]) -> str:
    try:
        from opsgate.drift import report as renderers
    except ImportError:  # the surfaces' renderer is not installed: JSON is still a report
        click.echo("drift report renderer unavailable; writing JSON", err=True)
        return orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if fmt == "md":
        return renderers.render_markdown(result)
    return renderers.render_html(result, history)


@drift_group.command("check")
@click.option("--alias", required=True, help="The alias to check now.")
@click.option("--tenant", default=None, help="Check only this tenant's traffic.")
@url_option
@key_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
def check(
    alias: str, tenant: str | None, url: str | None, api_key: str | None, config_path: str | None, as_json: bool
) -> None:
    """Run one drift check of ALIAS now (stored, and fed to drift SLOs). Exit code 3 when it drifted."""
    from opsgate.drift.features import safe_tenant

    if tenant is not None and not isinstance(safe_tenant(tenant), str):
        raise click.BadParameter("must be 1-200 printable characters", param_hint="--tenant")
    if url:
        body: dict[str, Any] = {"alias": alias}
        if tenant:
            body["tenant"] = tenant
        result = _Api(url, api_key).call("POST", "/admin/drift/check", json=body)
    else:
        from opsgate.drift.checker import DriftChecker, WindowError

        with _local(config_path) as (store, config):
            checker = DriftChecker(config, store)
            if not checker.is_configured(alias):
                known = ", ".join(sorted(m.name for m in config.models)[:20]) or "none"
                raise click.BadParameter(
                    f"{alias[:200]!r} is not a model alias in the config (aliases: {known})", param_hint="--alias"
                )
            try:
                result = checker.check(alias, tenant)
            except WindowError as error:
                raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        verdict = "DRIFT" if result["drifted"] else "INSUFFICIENT" if result.get("insufficient") else "ok"
        click.echo(f"{alias}{f' ({tenant})' if tenant else ''}: {verdict} — {headline(result)}")
    if result.get("drifted"):
        raise SystemExit(3)
