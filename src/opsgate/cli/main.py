"""The ``opsgate`` command line: serve, chat, models, config check, version."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from opsgate import __version__
from opsgate.cli.config_file import load_config_or_exit
from opsgate.cli.lazy import LazyGroup
from opsgate.cli.options import gateway_url_option

if TYPE_CHECKING:
    from opsgate.domain.config import GatewayConfig

# Imported when they run: each pulls in its own heavy libraries (statsmodels, scipy, the OpenAI SDK...).
SUBCOMMANDS = {
    "logs": "opsgate.cli.logs:logs",
    "usage": "opsgate.cli.logs:usage",
    "audit": "opsgate.cli.audit:audit",
    "keys": "opsgate.cli.keys:keys",
    "load": "opsgate.cli.load:load",
    "redteam": "opsgate.cli.redteam:redteam",
    "slo": "opsgate.cli.slo:slo",
    "errors": "opsgate.cli.errors:errors",
    "eval": "opsgate.cli.evals:eval_group",
    "migrate": "opsgate.cli.migrate:migrate",
    "prompts": "opsgate.cli.releases:prompts",
    "release": "opsgate.cli.releases:release",
    "experiment": "opsgate.cli.releases:experiment",
    "drift": "opsgate.cli.drift:drift_group",
    "sentinel": "opsgate.cli.sentinel:sentinel_group",
    "bias": "opsgate.cli.bias:bias_group",
}

console = Console(stderr=True)


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
@click.version_option(__version__, prog_name="opsgate")
def cli() -> None:
    """opsgate: one OpenAI-compatible gateway for every LLM call."""


@cli.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="OPSGATE_CONFIG",
    help="YAML config file (default: the embedded SmolLM2 + MiniLM config).",
)
@click.option("--host", envvar="OPSGATE_HOST", default=None, help="Interface to bind (default from config: 127.0.0.1).")
@click.option("--port", envvar="OPSGATE_PORT", type=int, default=None, help="Port (default from config: 8080).")
@click.option(
    "--workers", envvar="OPSGATE_WORKERS", type=int, default=None, help="Worker processes; each loads its own models."
)
@click.option(
    "--log-level", envvar="OPSGATE_LOG_LEVEL", default=None, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--tls-cert",
    envvar="OPSGATE_TLS_CERT",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM certificate (chain): serve HTTPS.",
)
@click.option(
    "--tls-key", envvar="OPSGATE_TLS_KEY", type=click.Path(exists=True, dir_okay=False), help="PEM key for --tls-cert."
)
@click.option(
    "--drain-delay",
    envvar="OPSGATE_DRAIN_DELAY_SECONDS",
    type=float,
    default=0.0,
    show_default=True,
    help="On SIGTERM: seconds of readiness 503 (still serving) before the listener closes.",
)
@click.option(
    "--drain-timeout",
    envvar="OPSGATE_DRAIN_TIMEOUT_SECONDS",
    type=float,
    default=30.0,
    show_default=True,
    help="Then: seconds in-flight requests and streams get to finish.",
)
def serve(
    config_path: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    log_level: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    drain_delay: float,
    drain_timeout: float,
) -> None:
    """Run the gateway (HTTPS with --tls-cert and --tls-key; settings also from OPSGATE_* variables)."""
    import uvicorn

    from opsgate.auth.key_limits import WORKERS_ENV
    from opsgate.cli.migrate import check_schema_or_exit
    from opsgate.cli.serve_checks import prepare_metrics_dir
    from opsgate.pipeline.limits import workers_problem
    from opsgate.server.http_limits import http_protocol
    from opsgate.server.logs import configure_logging

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")

    config = load_config_or_exit(config_path)
    server = config.server
    host = host or server.host
    port = server.port if port is None else port
    workers = workers or server.workers
    level = log_level or server.log_level
    configure_logging(level)
    _check_exposure(config, host)
    problem = workers_problem(config, workers)
    if problem:
        raise click.ClickException(problem)
    check_schema_or_exit(config)  # a schema migrated by a newer release: refuse, with the reason
    scheme = "https" if tls_cert else "http"
    console.print(
        f"opsgate {__version__} on {scheme}://{host}:{port}/v1  models: "
        f"{', '.join(m.name for m in config.models)}  workers: {workers}"
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": level,
        "access_log": False,
        "loop": "uvloop",
        "http": http_protocol(server.max_header_bytes, server.header_timeout_seconds),  # httptools, heads bounded
        "timeout_graceful_shutdown": drain_timeout,
        # X-Forwarded-For from trusted peers is the client's address (server.forwarded_allow_ips).
        "proxy_headers": True,
    }
    if server.forwarded_allow_ips is not None:  # else uvicorn's: $FORWARDED_ALLOW_IPS, or 127.0.0.1
        options["forwarded_allow_ips"] = list(server.forwarded_allow_ips)
    if tls_cert and tls_key:
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)  # uvicorn's defaults: TLS 1.2+, no client certs
    if workers > 1:
        # Workers are fresh processes: they read config and log level from the environment.
        if config_path:
            os.environ["OPSGATE_CONFIG"] = os.path.abspath(config_path)
        os.environ["OPSGATE_LOG_LEVEL"] = level
        os.environ[WORKERS_ENV] = str(workers)  # each worker knows it is one of several (auth/key_limits.py)
        metrics_dir = prepare_metrics_dir(config)  # one /metrics for all workers, not whichever takes the scrape
        try:
            uvicorn.run(
                "opsgate.server.app:app_from_env",
                factory=True,
                workers=workers,
                timeout_worker_healthcheck=server.worker_healthcheck_seconds,
                **options,
            )
        finally:
            if metrics_dir is not None and not config.telemetry.metrics.multiprocess_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)  # the temporary one made for this run
    else:
        from opsgate.server.app import create_app
        from opsgate.server.drain import DrainingServer

        app = create_app(config, config_path=config_path)
        reloader = app.state.reloader
        DrainingServer(
            uvicorn.Config(app, **options),
            app.state.lifecycle,
            drain_delay=drain_delay,
            on_reload=lambda: reloader.reload("SIGHUP"),
        ).run()


def _check_exposure(config: GatewayConfig, host: str) -> None:
    """Refuse to serve without auth on a reachable address; say how to get a key either way."""
    from opsgate.cli.serve_checks import exposure_problem

    auth = config.auth
    if auth.enabled:
        console.print(
            "auth: on. Create keys with [bold]opsgate keys create --tenant NAME --role developer[/bold] "
            "(or POST /admin/keys with the admin key)."
        )
        return
    problem = exposure_problem(config, host)
    if problem:
        raise click.ClickException(problem)
    console.print(
        "[bold yellow]auth: OFF[/bold yellow] (local use only: anyone on this machine can call models and read "
        "records). For keys: set auth.enabled and auth.admin_key, then run opsgate keys create."
    )


@cli.command()
@click.argument("prompt")
@click.option("-m", "--model", default="smollm2", show_default=True)
@click.option("-s", "--system", default=None, help="System message.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@click.option("--temperature", type=float, default=None)
@gateway_url_option(help="A running gateway's base URL (e.g. http://127.0.0.1:8080/v1); in-process when left out.")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None, help="Key for a running gateway.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="OPSGATE_CONFIG",
    help="Config for the in-process gateway.",
)
def chat(
    prompt: str,
    model: str,
    system: str | None,
    max_tokens: int,
    temperature: float | None,
    url: str | None,
    api_key: str | None,
    config_path: str | None,
) -> None:
    """Send one prompt and stream the answer to the terminal."""
    from opsgate.cli.chat import chat_in_process, chat_over_http

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if temperature is not None:
        body["temperature"] = temperature
    out = sys.stdout
    if url:
        code = asyncio.run(chat_over_http(url, api_key, body, out, console))
    else:
        logging.basicConfig(level="WARNING")
        code = asyncio.run(chat_in_process(load_config_or_exit(config_path), body, out, console))
    raise SystemExit(code)


@cli.group(cls=LazyGroup, lazy_subcommands={"manifest": "opsgate.cli.integrity:manifest"}, invoke_without_command=True)
@gateway_url_option(help="A running gateway's /v1 base URL (else: from config).")
@click.option("--api-key", envvar="OPSGATE_API_KEY", default=None)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="OPSGATE_CONFIG")
@click.pass_context
def models(ctx: click.Context, url: str | None, api_key: str | None, config_path: str | None) -> None:
    """List the model aliases (``opsgate models manifest …``: their file digests)."""
    from opsgate.cli.chat import fetch_models

    if ctx.invoked_subcommand is not None:
        return

    rows: list[dict[str, Any]]
    if url:
        rows = asyncio.run(fetch_models(url, api_key))
    else:
        config = load_config_or_exit(config_path)
        rows = [
            {
                "id": m.name,
                "kind": m.kind,
                "description": m.description,
                "deployments": ", ".join(d.type for d in m.deployments),
            }
            for m in config.models
        ]
    table = Table("model", "kind", "deployments", "description")
    for row in rows:
        table.add_row(
            row["id"],
            str(row.get("kind") or ""),
            str(row.get("deployments") or ""),
            str(row.get("description") or ""),
        )
    Console().print(table)


@cli.group()
def config() -> None:
    """Work with config files."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path: str) -> None:
    """Validate PATH and say what it configures (exit 2 and every problem if it is wrong, or if
    ``opsgate serve`` would refuse it as it stands)."""
    from opsgate.cli.config_file import exit_listing_problems
    from opsgate.cli.serve_checks import serve_problems
    from opsgate.domain.urls import redact_url

    loaded = load_config_or_exit(path)
    refused = serve_problems(loaded)
    if refused:
        exit_listing_problems("config (opsgate serve would refuse it)", path, refused)
    table = Table("model", "kind", "deployment", "where")
    for alias in loaded.models:
        for index, deployment in enumerate(alias.deployments):
            where = getattr(deployment, "base_url", None) or getattr(deployment, "model_path", None) or "bundled"
            table.add_row(alias.name if index == 0 else "", str(alias.kind), deployment.type, redact_url(str(where)))
    Console().print(table)
    console.print(
        f"[green]OK[/green] {path}: {len(loaded.models)} models, listening on {loaded.server.host}:{loaded.server.port}"
    )


@config.command("schema")
def config_schema() -> None:
    """Print the config's JSON Schema (for editor completion, e.g. yaml-language-server's $schema)."""
    import orjson

    from opsgate.domain.config import GatewayConfig

    click.echo(orjson.dumps(GatewayConfig.model_json_schema(), option=orjson.OPT_INDENT_2).decode())


@cli.command()
def version() -> None:
    """Print versions of opsgate and its engines."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    click.echo(f"opsgate {__version__}")
    for package in ("llama-cpp-python", "starlette", "uvicorn", "aiohttp", "pydantic"):
        try:
            click.echo(f"{package} {package_version(package)}")
        except PackageNotFoundError:
            click.echo(f"{package} not installed")


if __name__ == "__main__":
    cli()
