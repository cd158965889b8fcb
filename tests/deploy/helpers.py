"""What the deploy tests share: a config file for a replica, calls with a request id, reading the store."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import yaml


def write_config(path: Path, upstream_url: str, store: str, journal: Path, **extra: Any) -> Path:
    """A replica's YAML: one chat alias ``up`` and one embedding alias ``emb`` on the paced upstream."""
    deployment = {"type": "openai", "base_url": upstream_url, "model": "m", "timeouts": {"total": 60}}
    data: dict[str, Any] = {
        "models": [
            {"name": "up", "deployments": [deployment]},
            {"name": "emb", "kind": "embedding", "deployments": [{**deployment, "model": "e"}]},
        ],
        "record": {"store": store, "journal_dir": str(journal), "flush_interval_ms": 20},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def chat(client: httpx.Client, url: str, text: str, request_id: str, **body: Any) -> httpx.Response:
    """One chat completion with ``X-Request-Id``; the paced upstream reads ``text`` for its pace."""
    payload = {"model": "up", "messages": [{"role": "user", "content": text}], **body}
    return client.post(url + "/v1/chat/completions", json=payload, headers={"X-Request-Id": request_id})


def stream(client: httpx.Client, url: str, text: str, request_id: str) -> tuple[int, str]:
    """A streamed chat; the status and the whole SSE body (complete only if it ends with [DONE])."""
    payload = {"model": "up", "messages": [{"role": "user", "content": text}], "stream": True}
    with client.stream(
        "POST", url + "/v1/chat/completions", json=payload, headers={"X-Request-Id": request_id}
    ) as response:
        return response.status_code, "".join(response.iter_text())


def metric(url: str, name: str) -> float:
    """The value of an unlabelled sample in the gateway's /metrics (auth off: anyone is the operator)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def stored_request_ids(database: Path) -> set[str]:
    """Client request ids stored in a SQLite request log."""
    with sqlite3.connect(database) as conn:
        return {row[0] for row in conn.execute("SELECT client_request_id FROM requests") if row[0]}
