"""The embedded embedding backend: a sentence encoder run in a worker thread."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opsgate.backends.base import EmbeddingBackend
from opsgate.backends.work_queue import WorkQueue
from opsgate.domain.config import SentenceEmbeddingDeployment
from opsgate.domain.context import Chunk, RequestContext
from opsgate.domain.errors import BackendFailure, InvalidRequestError
from opsgate.domain.requests import EmbeddingRequest

log = logging.getLogger("opsgate.backends.embeddings")


class EmbeddedEmbeddingBackend(EmbeddingBackend):
    """Serves ``/v1/embeddings`` from an in-process numpy BERT encoder."""

    def __init__(self, deployment: SentenceEmbeddingDeployment, label: str) -> None:
        self.deployment = deployment
        self.label = label
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{label}")
        self.queue = WorkQueue(
            f"model {label}", slots=1, max_waiting=deployment.max_queue, timeout=deployment.queue_timeout
        )
        self._encoder: Any = None
        self._load_error: str | None = None
        self._loading: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        """Load the encoder in the worker thread."""
        loop = asyncio.get_running_loop()

        def load() -> Any:
            from opsgate.backends.minilm import SentenceEncoder, resolve_model_dir

            if self.deployment.n_threads:
                from threadpoolctl import threadpool_limits

                threadpool_limits(self.deployment.n_threads)
            return SentenceEncoder(resolve_model_dir(self.deployment.model_path))

        def loaded(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                self._load_error = f"{type(error).__name__}: {error}"
                log.error("embedding model %s failed to load: %s", self.label, self._load_error)
            else:
                self._encoder = future.result()

        self._loading = loop.run_in_executor(self._executor, load)
        self._loading.add_done_callback(loaded)

    async def wait_loaded(self) -> None:
        """Wait until loading finished (successfully or not)."""
        if self._loading is not None:
            await asyncio.wait([self._loading])

    async def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def is_ready(self) -> bool:
        """Loaded and usable."""
        return self._encoder is not None

    def status(self) -> dict[str, object]:
        """Load state and queue depth."""
        state: dict[str, object] = {"ready": self.is_ready(), **self.queue.status()}
        if self._load_error:
            state["error"] = self._load_error
        return state

    async def embed(self, ctx: RequestContext) -> Chunk:
        """Embed every input and answer in the OpenAI shape."""
        body = ctx.body
        assert isinstance(body, EmbeddingRequest)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError("Token-id input is not served by this embedding model; send text.", param="input")
        if any(not t for t in texts):
            raise InvalidRequestError("input must not contain empty strings", param="input")
        if self._encoder is None:
            raise BackendFailure(f"embedding model {self.label} is not loaded: {self._load_error or 'still loading'}")
        dims = self._encoder.dimensions
        if body.dimensions is not None and body.dimensions != dims:
            raise InvalidRequestError(
                f"This model produces {dims} dimensions; dimensions={body.dimensions} is not supported.",
                param="dimensions",
            )
        async with self.queue.slot():
            started = time.perf_counter()
            try:
                vectors, tokens = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._encoder.encode, texts
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
