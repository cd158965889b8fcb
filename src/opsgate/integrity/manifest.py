"""The model manifest: the SHA-256 of every local model file the config uses, as a JSON file.

    {"version": 1, "created": 1735689600.0,
     "files": {"/abs/path/model.gguf": {"sha256": "…", "size": 142000000}}}

Paths are stored resolved and absolute; a relative path in a hand-written manifest is read
relative to the manifest's directory.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from opsgate.domain.config import (
    GatewayConfig,
    LlamaCppDeployment,
    SentenceEmbeddingDeployment,
    UpstreamDeployment,
)
from opsgate.domain.pricing import deployment_label
from opsgate.integrity.digests import FileDigest, digest_files

MANIFEST_VERSION = 1
Deployment = LlamaCppDeployment | SentenceEmbeddingDeployment | UpstreamDeployment


class ManifestError(Exception):
    """A manifest that cannot be read or is not in the expected shape."""


@dataclass
class Manifest:
    """Expected digests by resolved path."""

    files: dict[str, FileDigest] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read a manifest file (``ManifestError`` if it is missing or malformed)."""
        path = Path(path).expanduser()
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise ManifestError(f"cannot read model manifest {path}: {error}") from None
        if (
            not isinstance(data, dict)
            or data.get("version") != MANIFEST_VERSION
            or not isinstance(data.get("files"), dict)
        ):
            raise ManifestError(f"{path} is not a version {MANIFEST_VERSION} opsgate model manifest")
        files: dict[str, FileDigest] = {}
        for name, entry in data["files"].items():
            try:
                digest = FileDigest(str(entry["sha256"]).lower(), int(entry["size"]))
            except (KeyError, TypeError, ValueError):
                raise ManifestError(f"{path}: entry for {name} needs sha256 and size") from None
            resolved = Path(name).expanduser()
            if not resolved.is_absolute():
                resolved = path.parent / resolved
            files[str(resolved.resolve())] = digest
        return cls(files, float(data.get("created") or 0.0))

    def write(self, path: str | Path) -> None:
        """Write atomically (temp file, then rename), so a reader never sees half a manifest."""
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "version": MANIFEST_VERSION,
            "created": self.created,
            "files": {name: {"sha256": d.sha256, "size": d.size} for name, d in sorted(self.files.items())},
        }
        temp = path.with_name(path.name + ".tmp")
        temp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        os.replace(temp, path)


def local_model_files(deployment: Deployment) -> list[Path] | None:
    """The local files a deployment loads, resolved; None when it loads nothing local (upstream, hub)."""
    if isinstance(deployment, LlamaCppDeployment):
        if deployment.hf_repo:
            return None
        if deployment.model_path:
            return [Path(deployment.model_path).expanduser().resolve()]
        from opsgate.backends.llama_engine import default_gguf_path  # imports llama.cpp: only when used

        return [default_gguf_path().resolve()]
    if isinstance(deployment, SentenceEmbeddingDeployment):
        if deployment.model_path is None:
            from opsgate.backends.minilm import default_minilm_dir

            directory = default_minilm_dir()
        else:
            directory = Path(deployment.model_path).expanduser()
            if not directory.is_dir():
                return None  # a hub name: fetched into the hub cache, not a file we manage
        return sorted(
            p.resolve()
            for p in directory.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
        )
    return None


def deployment_files(config: GatewayConfig) -> dict[str, list[Path]]:
    """Local model files per deployment label (``alias#index``, as the registry names them)."""
    out: dict[str, list[Path]] = {}
    for alias in config.models:
        for index, deployment in enumerate(alias.deployments):
            files = local_model_files(deployment)
            if files is not None:
                out[deployment_label(alias.name, index)] = files
    return out


def build_manifest(config: GatewayConfig) -> Manifest:
    """Hash every local model file of ``config`` (blocking)."""
    paths = sorted({p for files in deployment_files(config).values() for p in files})
    files: dict[str, FileDigest] = {}
    for name, digest in digest_files(paths).items():
        if digest is None:
            raise ManifestError(f"cannot read model file {name}")
        files[name] = digest
    return Manifest(files)


def compare(
    expected: dict[str, FileDigest], actual: dict[str, FileDigest | None], files: list[Path]
) -> list[dict[str, object]]:
    """One problem per file that is missing, unreadable, unlisted or changed (empty: all match)."""
    problems: list[dict[str, object]] = []
    for path in files:
        name = str(path)
        want, have = expected.get(name), actual.get(name)
        if want is None:
            problems.append({"path": name, "problem": "not in the manifest", "actual": have and have.sha256})
        elif have is None:
            problems.append({"path": name, "problem": "missing or unreadable", "expected": want.sha256})
        elif have != want:
            problems.append(
                {"path": name, "problem": "digest mismatch", "expected": want.sha256, "actual": have.sha256}
            )
    return problems
