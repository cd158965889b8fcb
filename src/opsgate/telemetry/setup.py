"""The gateway's telemetry, built from config: the metrics sink and registry, the tracer, their lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import Metric

from opsgate.domain.config import GatewayConfig
from opsgate.telemetry.metrics import (
    RequestMetrics,
    build_registry,
    exposition,
    merge_snapshots,
    request_families,
    state_families,
)

if TYPE_CHECKING:
    from opsgate.telemetry.tracing import Deployment, Tracing

log = logging.getLogger("opsgate.telemetry")
StatusSource = Callable[[], Mapping[str, Any]]
SNAPSHOT_SECONDS = 1.0
# How ``opsgate serve --workers N`` hands its workers (fresh processes that re-read the config) one metrics directory.
METRICS_DIR_ENV = "OPSGATE_METRICS_DIR"


def with_metrics_dir(config: GatewayConfig, directory: str) -> GatewayConfig:
    """``config`` with ``telemetry.metrics.multiprocess_dir`` set to ``directory``."""
    telemetry = config.telemetry
    metrics = telemetry.metrics.model_copy(update={"multiprocess_dir": directory})
    return config.model_copy(update={"telemetry": telemetry.model_copy(update={"metrics": metrics})})


def deployment_labels(config: GatewayConfig, labels: Mapping[str, list[str]]) -> dict[str, Deployment]:
    """Provider and model name per deployment label (``labels``: alias → its deployments' labels, in order)."""
    from opsgate.telemetry.tracing import Deployment

    out: dict[str, Deployment] = {}
    for alias in config.models:
        for deployment, label in zip(alias.deployments, labels.get(alias.name, ()), strict=False):
            model = getattr(deployment, "model", None) or alias.name
            provider = "openai" if deployment.type == "openai" else deployment.type
            out[label] = Deployment(provider, str(model))
    return out


class Telemetry:
    """Metrics (a record sink plus scrape-time gauges) and tracing, each on only when configured."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        deployments: StatusSource,
        backends: StatusSource,
        record: StatusSource | None,
        stages: StatusSource,
        labels: Mapping[str, list[str]],
    ) -> None:
        settings = config.telemetry
        self.metrics: RequestMetrics | None = None
        self.registry = None
        self.snapshot_dir = Path(settings.metrics.multiprocess_dir) if settings.metrics.multiprocess_dir else None
        self._snapshot_task: asyncio.Task[None] | None = None
        if settings.metrics.enabled:
            self.metrics = RequestMetrics(settings.metrics, (m.name for m in config.models))
            self.registry = build_registry(
                self._request_families, lambda: state_families(deployments, backends, record, stages)
            )
        self.tracing: Tracing | None = None
        if settings.tracing.otlp_endpoint:
            from opsgate.telemetry.tracing import Tracing  # the OpenTelemetry SDK loads only when used

            self.tracing = Tracing(settings.tracing, deployment_labels(config, labels))

    def _request_families(self) -> Iterator[Metric]:
        assert self.metrics is not None
        if self.snapshot_dir is None:
            return request_families(self.metrics.series, self.metrics.guard)
        snapshots = [self.metrics.snapshot(), *self._other_workers()]
        series, guard = merge_snapshots(snapshots)
        return request_families(series, guard)

    def _mark_dead(self) -> None:
        # A dead worker's snapshot stays counted (counters never go back) under a name no live worker
        # writes, so a new worker given the same pid cannot overwrite it.
        assert self.snapshot_dir is not None
        for path in self.snapshot_dir.glob("*.json"):
            if path.stem.isdigit() and (int(path.stem) == os.getpid() or not _alive(int(path.stem))):
                with contextlib.suppress(OSError):  # another worker starting now may have marked it first
                    path.rename(path.with_name(f"dead-{path.stem}-{time.time_ns()}.json"))

    def _other_workers(self) -> Iterator[dict[str, Any]]:
        # Every worker's last snapshot, including workers that exited: counters must not go back.
        assert self.snapshot_dir is not None
        own = f"{os.getpid()}.json"
        for path in self.snapshot_dir.glob("*.json"):
            if path.name != own:
                with contextlib.suppress(OSError, ValueError):
                    yield json.loads(path.read_bytes())

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The ``/metrics`` body and content type."""
        assert self.registry is not None
        return exposition(self.registry, accept)

    async def start(self) -> None:
        """Start the multi-worker snapshots, if configured."""
        if self.snapshot_dir is not None and self.metrics is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            self._mark_dead()
            self._snapshot_task = asyncio.create_task(self._snapshots())

    async def stop(self) -> None:
        """Leave a last snapshot and flush the spans still queued."""
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshot_task
            self._write_snapshot()
        if self.tracing is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.tracing.shutdown)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_SECONDS)
            try:
                self._write_snapshot()
            except OSError as error:  # a full disk must not stop the worker; the scrape shows stale numbers
                log.warning("metrics snapshot failed: %s", error)

    def _write_snapshot(self) -> None:
        assert self.snapshot_dir is not None and self.metrics is not None
        path = self.snapshot_dir / f"{os.getpid()}.json"
        scratch = path.with_suffix(".tmp")
        scratch.write_bytes(json.dumps(self.metrics.snapshot()).encode())
        scratch.replace(path)  # atomic: a reader sees the old snapshot or the new one


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
