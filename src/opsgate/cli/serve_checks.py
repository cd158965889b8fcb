"""What ``opsgate serve`` refuses, said once so ``opsgate config check`` reports the same, and the
multi-worker set-up ``serve`` does before it forks (one metrics directory for every worker)."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path

from opsgate.domain.config import GatewayConfig
from opsgate.pipeline.limits import workers_problem
from opsgate.telemetry.setup import METRICS_DIR_ENV


def is_loopback(host: str) -> bool:
    """Whether ``host`` binds only this machine: an IP literal in 127/8 or ``::1``, or exactly ``localhost``.

    Other names are not resolved: ``127.evil.example`` is a name, and a name can point anywhere.
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


def exposure_problem(config: GatewayConfig, host: str) -> str | None:
    """Auth off on an address other machines can reach (unless another proxy authenticates)."""
    if config.auth.enabled or is_loopback(host) or config.auth.allow_remote_without_auth:
        return None
    return (
        f"auth is off and --host {host} is reachable from other machines. Turn auth on "
        "(auth.enabled: true, auth.admin_key: ${OPSGATE_ADMIN_KEY}) or, only behind another authenticating "
        "proxy, set auth.allow_remote_without_auth: true."
    )


def serve_problems(config: GatewayConfig, host: str | None = None, workers: int | None = None) -> list[str]:
    """Everything ``serve`` would refuse to start with (host and workers default to the config's)."""
    found = [
        exposure_problem(config, host or config.server.host),
        workers_problem(config, workers or config.server.workers),
    ]
    return [problem for problem in found if problem is not None]


def prepare_metrics_dir(config: GatewayConfig) -> Path | None:
    """For several workers: the directory their metrics snapshots meet in, emptied of an earlier run's.

    ``telemetry.metrics.multiprocess_dir`` when set, else a fresh private temporary directory, so that
    any worker's ``/metrics`` answers for all of them without configuration. None when metrics are off.
    """
    metrics = config.telemetry.metrics
    if not metrics.enabled:
        return None
    if metrics.multiprocess_dir:
        directory = Path(metrics.multiprocess_dir)
        directory.mkdir(parents=True, exist_ok=True)
        # A previous run's counters would be added to this run's: clean at start, as prometheus_client asks.
        for stale in [*directory.glob("*.json"), *directory.glob("*.tmp")]:
            stale.unlink(missing_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="opsgate-metrics-"))
    os.environ[METRICS_DIR_ENV] = str(directory)
    return directory
