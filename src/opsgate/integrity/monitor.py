"""Watches the gateway's local model files and takes a deployment whose files changed out of service.

The gateway builds it (``server/app.py``), with the audit sink it writes refusals to; the model
registry hands it the backends to guard. At load, a deployment's files are hashed on its model
thread before the model is built; they must match the manifest (``integrity.manifest``) or,
without one, become the reference. Every
``check_interval_seconds`` they are hashed again in a worker thread. A mismatch takes the
deployment out of service for the life of the process: the router skips it (falling back, or 503
when nothing is left), the backend itself refuses calls (also those that bypass the router), the
error is logged and written to the audit log, and ``/readyz`` shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from opsgate.backends.base import Backend
from opsgate.backends.in_process import InProcessBackend
from opsgate.domain.config import GatewayConfig, LlamaCppDeployment, SentenceEmbeddingDeployment
from opsgate.domain.errors import GatewayError
from opsgate.domain.pricing import deployment_label
from opsgate.integrity.digests import FileDigest, digest_files
from opsgate.integrity.manifest import Manifest, ManifestError, compare, local_model_files

log = logging.getLogger("opsgate.integrity")
ACTOR = "opsgate-integrity"


class ModelIntegrityError(GatewayError):
    """A deployment's model files do not match their recorded digests, so it does not serve."""

    status = 503
    error_type = "service_unavailable"
    fallback_allowed = True

    def __init__(self, message: str) -> None:
        super().__init__(message, code="model_integrity_failed")


class AuditSink(Protocol):
    """Where the monitor writes its audit entries (``server/audit_sink.py``); blocking."""

    def append(self, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
        """Append one entry to the audit chain."""


@runtime_checkable
class LoadGuarded(Protocol):
    """A backend that calls ``before_load`` on its model thread before it builds the model."""

    before_load: Callable[[], None] | None


@dataclass
class DeploymentIntegrity:
    """What is known about one deployment's files."""

    label: str
    files: list[Path] | None = None
    reference: dict[str, FileDigest] | None = None
    source: str | None = None  # "manifest" or "first_load"
    last_checked: float | None = None
    checks: int = 0
    refused: str | None = None

    def status(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {
            "ok": self.refused is None,
            "reference": self.source,
            "files": len(self.files or []),
            "last_checked": self.last_checked,
            "checks": self.checks,
            "error": self.refused,
        }


def _summary(problems: list[dict[str, object]]) -> str:
    first = problems[0]
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first['path']}: {first['problem']}{more}"


class IntegrityMonitor:
    """Model-file digests for every local deployment of one gateway process."""

    def __init__(self, config: GatewayConfig, audit: AuditSink | None = None) -> None:
        self.config = config
        self.settings = config.integrity
        self.audit = audit
        self.backends: dict[str, Backend] = {}
        self.deployments: dict[str, DeploymentIntegrity] = {}
        self._manifest: Manifest | ManifestError | None = None
        self._lock = threading.Lock()  # models load on their own threads, concurrently
        self._tasks: list[asyncio.Task[None]] = []

    def guard(self, backends: Iterable[Backend]) -> None:
        """Hook each local deployment's load among ``backends`` (the registry's, built from the same config)."""
        self.backends = {backend.label: backend for backend in backends}
        if not self.settings.enabled:
            return
        config, backends_by_label = self.config, self.backends
        for alias in config.models:
            for index, deployment in enumerate(alias.deployments):
                label = deployment_label(alias.name, index)
                local = isinstance(deployment, SentenceEmbeddingDeployment) or (
                    isinstance(deployment, LlamaCppDeployment) and not deployment.hf_repo
                )
                backend = backends_by_label.get(label)
                if local and isinstance(backend, LoadGuarded):
                    self.deployments[label] = DeploymentIntegrity(label)
                    backend.before_load = functools.partial(self.verify_at_load, label)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic checks."""
        if self.deployments:
            self._tasks.append(asyncio.create_task(self._periodic(), name="integrity-checks"))

    async def close(self) -> None:
        """Stop the background work."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # -- queries ------------------------------------------------------------------------------------

    def refusal(self, label: str) -> str | None:
        """Why ``label`` is out of service, or None when it may serve."""
        state = self.deployments.get(label)
        return state.refused if state is not None else None

    def status(self, label: str) -> dict[str, Any] | None:
        """``label``'s integrity state, or None when it has no local files."""
        state = self.deployments.get(label)
        return state.status() if state is not None else None

    # -- checks -------------------------------------------------------------------------------------

    def _expected(self, state: DeploymentIntegrity) -> tuple[dict[str, FileDigest] | None, str | None]:
        """The digests to compare with, and an error when the manifest itself is unusable."""
        if self.settings.manifest is None:
            return state.reference, None
        with self._lock:
            if self._manifest is None:
                try:
                    self._manifest = Manifest.load(self.settings.manifest)
                except ManifestError as error:
                    self._manifest = error
        if isinstance(self._manifest, ManifestError):
            return None, str(self._manifest)
        return self._manifest.files, None

    def _files(self, state: DeploymentIntegrity) -> list[Path]:
        if state.files is None:
            deployment = self._deployment(state.label)
            state.files = local_model_files(deployment) or []
        return state.files

    def _deployment(self, label: str) -> Any:
        alias, index = label.rsplit("#", 1)
        model = self.config.alias(alias)
        assert model is not None
        return model.deployments[int(index)]

    def verify_at_load(self, label: str) -> None:
        """Hash ``label``'s files before its model is built (on its model thread); raise on mismatch."""
        state = self.deployments[label]
        started = time.perf_counter()
        files = self._files(state)
        actual = digest_files(files)
        expected, manifest_error = self._expected(state)
        if manifest_error is not None:
            if self._take_out(state, manifest_error, "load"):
                self._audit_refusal(state, "load", [])
            raise ModelIntegrityError(f"deployment {label} refused: model integrity check failed: {manifest_error}")
        if expected is None:  # no manifest: this load's digests are the reference from now on
            if any(digest is None for digest in actual.values()):
                return  # let the loader report the missing file in its own words
            state.reference = {name: digest for name, digest in actual.items() if digest is not None}
            state.source = "first_load"
        else:
            problems = compare(expected, actual, files)
            if problems:
                if self._take_out(state, _summary(problems), "load"):
                    self._audit_refusal(state, "load", problems)
                raise ModelIntegrityError(
                    f"deployment {label} refused: model integrity check failed: {_summary(problems)}"
                )
            state.source = "manifest"
        state.last_checked = time.time()
        state.checks += 1
        log.info("model files of %s verified in %.2fs (%s)", label, time.perf_counter() - started, state.source)

    async def check_now(self) -> dict[str, list[dict[str, object]]]:
        """Re-hash every verified deployment's files now (in a worker thread); problems by label."""
        found: dict[str, list[dict[str, object]]] = {}
        for state in list(self.deployments.values()):
            if state.refused is not None or state.source is None:
                continue  # already out of service, or never loaded
            files = self._files(state)
            actual = await asyncio.to_thread(digest_files, files)
            expected, manifest_error = self._expected(state)
            problems: list[dict[str, object]] = (
                [{"path": self.settings.manifest, "problem": manifest_error}]
                if manifest_error is not None
                else compare(expected or {}, actual, files)
            )
            state.last_checked = time.time()
            state.checks += 1
            if problems:
                found[state.label] = problems
                if self._take_out(state, _summary(problems), "periodic"):
                    await asyncio.to_thread(self._audit_refusal, state, "periodic", problems)
        return found

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.check_interval_seconds)
            try:
                await self.check_now()
            except Exception:  # a failed round must not end the checks
                log.exception("model integrity check failed")

    # -- refusing -----------------------------------------------------------------------------------

    def _take_out(self, state: DeploymentIntegrity, reason: str, phase: str) -> bool:
        """Take the deployment out of service and log it; False if it already was."""
        if state.refused is not None:
            return False
        state.refused = reason
        log.error("MODEL INTEGRITY FAILURE: deployment %s is out of service (%s check): %s", state.label, phase, reason)
        backend = self.backends.get(state.label)
        if isinstance(backend, InProcessBackend):
            # The backend refuses every caller, also those that bypass the router (the semantic cache).
            backend.model = None
            backend.load_error = f"model integrity check failed: {reason}"
        return True

    def _audit_refusal(self, state: DeploymentIntegrity, phase: str, problems: list[dict[str, object]]) -> None:
        details = {"phase": phase, "reason": state.refused, "files": problems}
        self._audit(
            "model_integrity_failed", state.label, {**details, "host": socket.gethostname(), "pid": os.getpid()}
        )

    def _audit(self, action: str, target: str, details: dict[str, Any]) -> None:
        if self.audit is None:
            return  # no record store: the error log is the record
        try:
            self.audit.append(ACTOR, action, target, details)
        except Exception:  # the refusal stands even if the audit log is unreachable
            log.exception("could not write the %s audit entry for %s", action, target)
