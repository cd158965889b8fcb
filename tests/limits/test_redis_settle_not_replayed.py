"""A settle whose reply is lost is not sent again (second review of probe-g G1).

The retry on a new connection re-sent a whole script call. Cut after Redis ran a call but before its reply
arrived, a settle (estimate → actual, usually a refund) was applied twice: the counter under-counted and a
tokens-per-minute limit admitted more than it allows. Only calls with no settle amounts are replayed now.
"""

from __future__ import annotations

import asyncio
import secrets

import redis

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits import Demand, Identity, Limiter, RedisCounters


class CutReplyProxy:
    """127.0.0.1:port → Redis; when armed, the next reply from Redis is dropped and both sockets closed."""

    def __init__(self) -> None:
        self.armed = False
        self.cuts = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)

        async def up() -> None:
            try:
                while data := await reader.read(65536):
                    up_writer.write(data)
                    await up_writer.drain()
            except OSError:
                pass

        async def down() -> None:
            try:
                while data := await up_reader.read(65536):
                    if self.armed:  # Redis ran the call: its reply is lost with the connection
                        self.armed = False
                        self.cuts += 1
                        writer.transport.abort()
                        up_writer.close()
                        return
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass

        await asyncio.gather(up(), down())


def test_a_settle_whose_reply_was_lost_is_applied_once() -> None:
    prefix = f"opsgate-test-settle-{secrets.token_hex(4)}:"
    direct = redis.Redis()

    async def run() -> dict[str, object]:
        proxy = CutReplyProxy()
        port = await proxy.start()
        store = RedisCounters(f"redis://127.0.0.1:{port}/0", prefix, probe_interval=30)
        limits = Limiter([LimitRule(per="key", tokens_per_minute=5000)], store, on_store_error="closed")
        await limits.start()
        try:
            reserved = await limits.reserve(Identity(key="k1", user=None, model="m"), Demand(1000, 0.0))
            assert reserved is not None
            await limits.flush()
            proxy.armed = True
            limits.settle(reserved, tokens=100, cost=0.0)  # the estimate of 1000 becomes 100: -900
            await limits.flush()
            assert proxy.cuts == 1
        finally:
            await limits.close()
        keys = [k for k in direct.scan_iter(prefix + "tpm:*") if direct.type(k) == b"string"]
        return {k.decode(): direct.get(k) for k in keys}

    try:
        counters = asyncio.run(run())
    finally:
        for key in direct.scan_iter(prefix + "*"):
            direct.delete(key)
    assert list(counters.values()) == [b"100"], counters  # replayed: -800 (the refund applied twice)
