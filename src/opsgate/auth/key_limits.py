"""Per-key limits and several worker processes: counted per process unless the counters are shared.

A key's own limits (``POST /admin/keys`` with ``limits``) are counted by the limits stage, in process
memory unless ``limits.redis`` names a shared counter store. With ``--workers N`` each worker would
count alone and admit up to N times the limit, silently. So the gateway refuses to create such a key
in that setup, and warns at start about keys that already carry limits.
"""

from __future__ import annotations

import os

from opsgate.domain.config import GatewayConfig

WORKERS_ENV = "OPSGATE_WORKERS"  # set by ``opsgate serve --workers N`` for its worker processes


def serving_workers(config: GatewayConfig) -> int:
    """How many processes serve: ``opsgate serve --workers`` (passed on in the environment), else the config's."""
    raw = os.environ.get(WORKERS_ENV, "")
    return int(raw) if raw.isascii() and raw.isdigit() and int(raw) > 0 else config.server.workers


def per_process_key_limits(config: GatewayConfig, workers: int | None = None) -> str | None:
    """Why per-key limits would be counted per process (several workers, no shared store), or None."""
    workers = serving_workers(config) if workers is None else workers
    if workers <= 1 or config.limits.redis:
        return None
    return (
        f"The gateway runs {workers} workers without a shared counter store, so a key's limits would be "
        f"counted in each worker's memory, admitting up to {workers} times each limit. Set limits.redis "
        "(a redis:// URL) to share the counters, or serve with --workers 1."
    )
