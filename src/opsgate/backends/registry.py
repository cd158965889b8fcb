"""Builds the backends for every configured deployment and keeps them by alias."""

from __future__ import annotations

import asyncio
import logging

from opsgate.backends.base import Backend
from opsgate.domain.config import (
    GatewayConfig,
    LlamaCppDeployment,
    ModelAlias,
    SentenceEmbeddingDeployment,
    UpstreamDeployment,
)
from opsgate.domain.pricing import deployment_label
from opsgate.integrity.monitor import IntegrityMonitor

log = logging.getLogger("opsgate.backends")


def build_backend(alias: ModelAlias, index: int) -> Backend:
    """The backend for ``alias.deployments[index]``; heavy imports happen only for what is used."""
    deployment = alias.deployments[index]
    label = deployment_label(alias.name, index)
    if isinstance(deployment, LlamaCppDeployment):
        from opsgate.backends.embedded_llama import EmbeddedLlamaBackend

        return EmbeddedLlamaBackend(deployment, label)
    if isinstance(deployment, SentenceEmbeddingDeployment):
        from opsgate.backends.embedded_embeddings import EmbeddedEmbeddingBackend

        return EmbeddedEmbeddingBackend(deployment, label)
    assert isinstance(deployment, UpstreamDeployment)
    from opsgate.backends.upstream import UpstreamBackend

    return UpstreamBackend(deployment, label, kind=alias.kind or "chat")


class ModelRegistry:
    """Every alias's deployments, started and closed together."""

    def __init__(self, config: GatewayConfig, integrity: IntegrityMonitor | None = None) -> None:
        self.aliases = {alias.name: alias for alias in config.models}
        self.backends: dict[str, list[Backend]] = {
            alias.name: [build_backend(alias, i) for i in range(len(alias.deployments))] for alias in config.models
        }
        # The gateway's monitor (server/app.py builds it with its audit sink); a bare one for tools and
        # tests. It hooks each local model's load: a digest mismatch takes that deployment out of service.
        self.integrity = integrity if integrity is not None else IntegrityMonitor(config)
        self.integrity.guard(self.all())

    def deployments(self, alias: str) -> list[Backend]:
        """The backends serving ``alias``, in config order."""
        return self.backends[alias]

    def all(self) -> list[Backend]:
        """Every backend."""
        return [backend for backends in self.backends.values() for backend in backends]

    async def start(self) -> None:
        """Start every backend; a failure is logged and shown in readiness, never fatal."""
        for backend in self.all():
            try:
                await backend.start()
            except Exception:
                log.exception("backend %s failed to start", backend.label)
        await self.integrity.start()

    async def wait_loaded(self) -> None:
        """Wait for in-process models to finish loading (for tests and ``chat`` in-process)."""
        waits = [backend.wait_loaded() for backend in self.all() if hasattr(backend, "wait_loaded")]
        await asyncio.gather(*waits)

    async def close(self) -> None:
        """Close every backend."""
        await self.integrity.close()
        for backend in self.all():
            try:
                await backend.close()
            except Exception:
                log.exception("backend %s failed to close", backend.label)

    def is_ready(self) -> bool:
        """Every alias has at least one ready deployment."""
        return all(any(b.is_ready() for b in backends) for backends in self.backends.values())

    def status(self) -> dict[str, dict[str, object]]:
        """Per-deployment status for ``/readyz``."""
        return {backend.label: backend.status() for backend in self.all()}
