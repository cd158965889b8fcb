"""Active health checks: a deployment that fails them goes to the back of the routing order."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from opsgate.backends.upstream import tls_option
from opsgate.routing.deployment import DeploymentHandle

log = logging.getLogger("opsgate.routing.health")


class HealthChecker:
    """Polls ``GET base_url + path`` for each upstream deployment that configures ``health_check``."""

    def __init__(self, handles: list[DeploymentHandle]) -> None:
        self.handles = [
            h
            for h in handles
            if h.health_check is not None
            and hasattr(h.backend, "deployment")
            and hasattr(h.backend.deployment, "base_url")
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """One polling task per checked deployment."""
        if not self.handles:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._poll(h), name=f"health-{h.label}") for h in self.handles]

    async def close(self) -> None:
        """Stop polling."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def check(self, handle: DeploymentHandle) -> None:
        """Run one check and update the handle."""
        assert self._session is not None and handle.health_check is not None
        deployment = handle.backend.deployment  # type: ignore[attr-defined]
        url = deployment.base_url + handle.health_check.path
        headers = {}
        if deployment.api_key is not None:
            headers["Authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"
        try:
            timeout = aiohttp.ClientTimeout(total=handle.health_check.timeout_seconds)
            tls = tls_option(deployment)  # the same certificate checks as the deployment's own calls
            async with self._session.get(url, headers=headers, timeout=timeout, ssl=tls) as response:
                ok = response.status < 500
                error = None if ok else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, error = False, type(exc).__name__
        if ok != handle.healthy:
            log.warning(
                "deployment %s is %s%s", handle.label, "healthy" if ok else "unhealthy", f" ({error})" if error else ""
            )
        handle.healthy = ok
        handle.health_error = error

    async def _poll(self, handle: DeploymentHandle) -> None:
        assert handle.health_check is not None
        while True:
            await self.check(handle)
            await asyncio.sleep(handle.health_check.interval_seconds)
