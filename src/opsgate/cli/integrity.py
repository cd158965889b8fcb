"""``opsgate models manifest write|check``: SHA-256 digests of the local model files a config uses."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.table import Table

from opsgate.cli.config_file import load_config_or_exit
from opsgate.domain.config import GatewayConfig
from opsgate.integrity.digests import digest_files
from opsgate.integrity.manifest import Manifest, ManifestError, build_manifest, compare, deployment_files

stderr = Console(stderr=True)


def _manifest_path(config: GatewayConfig, given: str | None) -> Path:
    path = given or config.integrity.manifest
    if path is None:
        raise click.UsageError("no manifest path: pass --manifest or set integrity.manifest in the config")
    return Path(path)


_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="OPSGATE_CONFIG",
    help="YAML config whose model files to hash (default: the embedded config).",
)
_manifest_option = click.option(
    "--manifest", "manifest_path", type=click.Path(dir_okay=False), help="Default: integrity.manifest."
)


@click.group()
def manifest() -> None:
    """The manifest of SHA-256 digests of local model files."""


@manifest.command()
@_config_option
@_manifest_option
def write(config_path: str | None, manifest_path: str | None) -> None:
    """Hash every local model file the config uses and write the manifest."""
    config = load_config_or_exit(config_path)
    target = _manifest_path(config, manifest_path)
    try:
        built = build_manifest(config)
    except (ManifestError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    built.write(target)
    stderr.print(f"[green]wrote[/green] {target}: {len(built.files)} files")
    for name, digest in sorted(built.files.items()):
        click.echo(f"{digest.sha256}  {name}")


@manifest.command()
@_config_option
@_manifest_option
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def check(config_path: str | None, manifest_path: str | None, as_json: bool) -> None:
    """Re-hash the config's local model files against the manifest; exit 1 on any difference."""
    config = load_config_or_exit(config_path)
    try:
        expected = Manifest.load(_manifest_path(config, manifest_path))
        by_deployment = deployment_files(config)
    except (ManifestError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    files = sorted({p for paths in by_deployment.values() for p in paths})
    problems = compare(expected.files, digest_files(files), files)
    if as_json:
        click.echo(orjson.dumps({"ok": not problems, "files": len(files), "problems": problems}).decode())
    elif problems:
        table = Table("file", "problem", "expected", "actual")
        for problem in problems:
            table.add_row(
                str(problem["path"]),
                str(problem["problem"]),
                str(problem.get("expected") or "")[:16],
                str(problem.get("actual") or "")[:16],
            )
        Console(stderr=True).print(table)
        stderr.print(f"[red]{len(problems)} of {len(files)} model files do not match the manifest[/red]")
    else:
        stderr.print(f"[green]OK[/green]: {len(files)} model files match the manifest")
    raise SystemExit(1 if problems else 0)
