"""The embedded embedding backend: a sentence encoder run in a worker thread."""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
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

    async def _encode(self, texts: list[str], max_batch: int) -> tuple[Any, int]:
        """Run the encoder on the model's thread; stop it there when this request ends early."""
        await self.queue.acquire()
        cancel = threading.Event()
        started = time.perf_counter()
        try:
            future = asyncio.get_running_loop().run_in_executor(
                self._executor, partial(self.model.encode, texts, max_batch=max_batch, cancelled=cancel)
            )
        except RuntimeError:
            self.queue.release()
            raise BackendFailure(f"model {self.label} is shutting down") from None

        def finished(done: asyncio.Future[tuple[Any, int]]) -> None:
            # The slot is freed when the thread is done, not when the request gave up: the next job
            # must not queue behind work the queue believes is over.
            self.queue.release()
            self.queue.observe_job(time.perf_counter() - started)
            if not done.cancelled():
                done.exception()  # retrieved: a cancelled request's EncodingCancelled is expected

        future.add_done_callback(finished)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()  # timed out or the client left: the encoder stops before its next pass
            raise
        except Exception as error:
            # Client mistakes were answered above before the model was called; what raises here
            # is the model's own failure, and counts against the deployment.
            log.exception("embedding failed on %s", self.label)
            raise BackendFailure(f"embedding failed: {type(error).__name__}") from error

    async def embed(self, ctx: RequestContext) -> Chunk:
        """Embed every input and answer in the OpenAI shape."""
        body = ctx.body
        assert isinstance(body, EmbeddingRequest)
        given = [body.input] if isinstance(body.input, str) else body.input
        texts = [t for t in given if isinstance(t, str)]
        if len(texts) != len(given):
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
        max_batch = self.deployment.max_batch
        if len(texts) > max_batch:
            raise InvalidRequestError(
                f"This embedding model takes at most {max_batch} inputs per request; this one has {len(texts)}.",
                param="input",
                code="too_many_inputs",
            )
        vectors, tokens = await self._encode(texts, max_batch)
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
