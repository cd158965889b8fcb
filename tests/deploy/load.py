"""Steady client load through the balancer: threads sending chats and streams, every outcome kept by id."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.deploy.helpers import chat, stream


@dataclass
class Outcome:
    """One request: its id, and whether the client got a complete answer (or the error it got)."""

    request_id: str
    ok: bool
    error: str = ""
    started: float = 0.0
    ended: float = 0.0


@dataclass
class SteadyLoad:
    """``threads`` clients in a loop until ``finish``; each request bounded by its own timeout."""

    url: str
    threads: int = 4
    prefix: str = "r"
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(self.threads)
        self._futures = [self._pool.submit(self._run, i) for i in range(self.threads)]

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=60) as client:
            n = 0
            while not self._stop.is_set() and n < 100_000:
                request_id = f"{self.prefix}-{worker}-{n}"
                started = time.monotonic()
                try:
                    if n % 4 == 0:
                        status, body = stream(client, self.url, "chunks=6 gap=0.03", request_id)
                        ok, error = status == 200 and body.rstrip().endswith("[DONE]"), f"{status} {body[-200:]}"
                    else:
                        response = chat(client, self.url, "delay=0.03", request_id)
                        ok, error = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                self.outcomes.append(Outcome(request_id, ok, "" if ok else error, started, time.monotonic()))
                n += 1

    def count(self) -> int:
        return len(self.outcomes)

    def finish(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(120)
        self._pool.shutdown()

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def acknowledged(self) -> set[str]:
        return {o.request_id for o in self.outcomes if o.ok}
