"""The embedded embedding backend: a sentence encoder run in a worker thread."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any

from opsgate.backends.base import EmbeddingBackend
from opsgate.backends.in_process import InProcessBackend
from opsgate.domain.config import SentenceEmbeddingDeployment
from opsgate.domain.context import Chunk, RequestContext
from opsgate.domain.errors import BackendFailure, InvalidRequestError
from opsgate.domain.requests import EmbeddingRequest

log = logging.getLogger("opsgate.backends.embeddings")


class EmbeddedEmbeddingBackend(InProcessBackend, EmbeddingBackend):
    """Serves ``/v1/embeddings`` from an in-process numpy BERT encoder."""

    kind = "embedding"

    def __init__(self, deployment: SentenceEmbeddingDeployment, label: str) -> None:
        super().__init__(label, max_queue=deployment.max_queue, queue_timeout=deployment.queue_timeout)
        self.deployment = deployment
        # Set by the integrity monitor: checks the model files' digests on this thread before loading.
        self.before_load: Callable[[], None] | None = None

    def load(self) -> Any:
        """The encoder, with numpy's thread count capped if configured."""
        from opsgate.backends.minilm import SentenceEncoder, resolve_model_dir

        if self.before_load is not None:
            self.before_load()
        if self.deployment.n_threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(self.deployment.n_threads)
        return SentenceEncoder(resolve_model_dir(self.deployment.model_path))

    async def embed(self, ctx: RequestContext) -> Chunk:
        """Embed every input and answer in the OpenAI shape."""
        body = ctx.body
        assert isinstance(body, EmbeddingRequest)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("Token-id input is not served by this embedding model; send text.", param="input")
        if any(not t for t in texts):
            raise InvalidRequestError("input must not contain empty strings", param="input")
        if self.model is None:
            raise BackendFailure(self.not_loaded_reason())
        dims = self.model.dimensions
        if body.dimensions is not None and body.dimensions != dims:
            raise InvalidRequestError(
                f"This model produces {dims} dimensions; dimensions={body.dimensions} is not supported.",
                param="dimensions",
            )
        async with self.queue.slot():
            started = time.perf_counter()
            try:
                vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self.model.encode, texts
                )
            except Exception as error:
                log.exception("embedding failed on %s", self.label)
                raise BackendFailure(f"embedding failed: {type(error).__name__}") from error
            self.queue.observe_job(time.perf_counter() - started)
        data = []
        for index, vector in enumerate(vectors):
            value: Any = (
                base64.b64encode(vector.astype("<f4").tobytes()).decode()
                if body.encoding_format == "base64"
                else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": value})
        return {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
