"""Helpers for the limits tests: scratch Redis key prefixes, a fake clock, a TCP proxy that can be cut."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import httpx
import redis

from tests.support import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


@contextmanager
def scratch_prefix() -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys (and only they) are deleted afterwards."""
    prefix = f"opsgate-test:{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def redis_keys(prefix: str) -> dict[str, int]:
    """The keys under ``prefix`` and their TTLs."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return {key.decode(): int(client.ttl(key)) for key in client.scan_iter(match=prefix + "*", count=1000)}
    finally:
        client.close()


class Clock:
    """A settable clock for the limiter (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port; ``cut()`` drops every connection and refuses new ones.

    ``delay`` (seconds, settable at any time) holds every chunk that long before passing it on: a slow Redis.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self.delay = 0.0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every connection now and refuse new ones, as a dead Redis would."""

        def drop() -> None:
            self.open = False
            for writer in list(self._writers):
                writer.close()

        self._loop.call_soon_threadsafe(drop)

    def drop(self) -> None:
        """Close every open connection once (done when this returns); new ones are accepted at once.

        What a server restart, a failover, an idle timeout or a NAT does to a client's pooled connections
        while the server itself is healthy.
        """

        async def close_all() -> int:
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            return len(writers)

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(5)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(setattr, self, "open", True)

    def stop(self) -> None:
        async def shutdown() -> None:
            self.open = False
            for writer in list(self._writers):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def spend_until_refused(urls: list[str], workers: int, raw: bytes, price_per_token: float) -> list[float]:
    """``workers`` clients spread over ``urls``, each posting ``raw`` until refused for budget.

    Returns the cost of every answered request, from the usage the answers carry.
    """
    costs: list[float] = []
    statuses: Counter[int] = Counter()
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=workers * 2)) as client:

        async def worker(index: int) -> None:
            url = urls[index % len(urls)] + "/v1/chat/completions"
            for _ in range(1000):
                response = await client.post(url, content=raw, headers=headers)
                statuses[response.status_code] += 1
                if response.status_code != 200:
                    error = response.json()["error"]
                    assert response.status_code == 429 and error["code"] == "budget_exceeded", response.text
                    return
                usage = response.json()["usage"]
                costs.append((usage["prompt_tokens"] + usage["completion_tokens"]) * price_per_token)

        await asyncio.gather(*(worker(i) for i in range(workers)))
    assert statuses[429] == workers
    return costs
