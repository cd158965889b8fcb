"""SLO tests run against real stores: a SQLite file and a scratch PostgreSQL schema."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.store.conftest import pg_url, store, store_url

__all__ = ["make_record", "pg_url", "store", "store_url"]


def make_record(ts: float | None = None, **fields: Any) -> dict[str, Any]:
    """A minimal stored record; fields override the defaults (a 200 from model m on deployment m#0)."""
    record: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "ts": time.time() if ts is None else ts,
        "tenant": None,
        "endpoint": "chat",
        "model": "m",
        "deployment": "m#0",
        "status": 200,
        "latency_ms": 100.0,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "cost": 0.001,
    }
    record.update(fields)
    return record
