"""What the in-process model backends share: one worker thread that owns the model, loaded in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opsgate.backends.base import Backend
from opsgate.backends.work_queue import WorkQueue

log = logging.getLogger("opsgate.backends")


class InProcessBackend(Backend):
    """A model in this process: loaded on its own thread at start, used only from that thread.

    One thread, because model objects (llama.cpp contexts) are not thread-safe and FIFO order is
    fairness. ``queue`` bounds how many requests may wait for it.
    """

    def __init__(self, label: str, *, max_queue: int, queue_timeout: float) -> None:
        self.label = label
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{label}")
        self.queue = WorkQueue(f"model {label}", slots=1, max_waiting=max_queue, timeout=queue_timeout)
        self.model: Any = None
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self._loading: asyncio.Future[Any] | None = None

    @abstractmethod
    def load(self) -> Any:
        """Build the model object (runs on the worker thread)."""

    def describe(self) -> dict[str, object]:
        """Extra status once loaded (e.g. the model path)."""
        return {}

    async def start(self) -> None:
        """Begin loading on the worker thread; readiness flips when it is done."""
        started = time.perf_counter()

        def loaded(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                self.load_error = f"{type(error).__name__}: {error}"
                log.error("model %s failed to load: %s", self.label, self.load_error)
                return
            self.model = future.result()
            self.load_seconds = time.perf_counter() - started
            log.info("model %s loaded in %.2fs %s", self.label, self.load_seconds, self.describe())

        self._loading = asyncio.get_running_loop().run_in_executor(self._executor, self.load)
        self._loading.add_done_callback(loaded)

    async def wait_loaded(self) -> None:
        """Wait until loading finished (successfully or not)."""
        if self._loading is not None:
            await asyncio.wait([self._loading])

    async def close(self) -> None:
        """Stop the worker thread after the current job."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def is_ready(self) -> bool:
        """Loaded and usable."""
        return self.model is not None

    def not_loaded_reason(self) -> str:
        """Why the model cannot serve yet."""
        return f"model {self.label} is not loaded: {self.load_error or 'still loading'}"

    def status(self) -> dict[str, object]:
        """Load state and queue depth."""
        state: dict[str, object] = {"ready": self.is_ready(), **self.queue.status()}
        if self.model is not None:
            state.update(self.describe())
        if self.load_error:
            state["error"] = self.load_error
        return state
