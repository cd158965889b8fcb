"""Embedding prompts for the semantic cache, through any embedding alias of the gateway.

The call goes through the alias's backend with a small ``RequestContext``, the same way a client's
``/v1/embeddings`` request would, so the embedded MiniLM and an upstream embedding model both work.
"""

from __future__ import annotations

import logging

import numpy as np

from opsgate.backends.registry import ModelRegistry
from opsgate.cache.store import Vector
from opsgate.domain.context import RequestContext
from opsgate.domain.requests import EmbeddingRequest

log = logging.getLogger("opsgate.cache")


class Embedder:
    """Turns a prompt into a unit vector with the embedding alias ``alias``."""

    def __init__(self, registry: ModelRegistry, alias: str) -> None:
        self.registry = registry
        self.alias = alias
        self.errors = 0

    async def embed(self, text: str) -> Vector | None:
        """The prompt's unit vector, or None when no deployment of the alias could embed it (logged)."""
        request = EmbeddingRequest(model=self.alias, input=text)
        ctx = RequestContext(endpoint="embedding", raw_body=b"", headers={}, body=request)
        failure: Exception | None = None
        for backend in self.registry.deployments(self.alias):
            try:
                answer = await backend.embed(ctx)
                vector = np.asarray(answer["data"][0]["embedding"], dtype=np.float32)
            except Exception as error:  # a semantic lookup is an optimisation: never fail the request
                failure = error
                continue
            norm = float(np.linalg.norm(vector))
            if norm == 0.0 or not np.isfinite(norm):
                return None
            return vector / norm
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("semantic cache: embedding with %s failed (%d so far): %s", self.alias, self.errors, failure)
        return None
