"""Live config reload under load: a bad file is refused with the reason, a good one swapped with no dropped request."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from opsgate.domain.config import load_config
from opsgate.server.app import create_app
from tests.deploy.helpers import chat, metric, stream, write_config
from tests.deploy.processes import Replica
from tests.deploy.upstream import PacedUpstream
from tests.support import ServerThread, free_port, wait_until


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[PacedUpstream, PacedUpstream]]:
    old, new = PacedUpstream(free_port(), tag="old").start(), PacedUpstream(free_port(), tag="new").start()
    yield old, new
    old.stop()
    new.stop()


class Load:
    """Threads sending chats and streams until stopped; every answer kept."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[int, str]] = []
        self.errors: list[str] = []
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._run, i) for i in range(threads)]

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=30) as client:
            for n in range(100_000):
                if self.stop.is_set():
                    return
                try:
                    if n % 3 == 0:
                        status, body = stream(client, self.url, "chunks=4 gap=0.02", f"s-{worker}-{n}")
                        self.answers.append((status, body))
                    else:
                        response = chat(client, self.url, "delay=0.02", f"c-{worker}-{n}")
                        self.answers.append((response.status_code, response.text))
                except httpx.HTTPError as error:
                    self.errors.append(f"{type(error).__name__}: {error}")

    def finish(self) -> None:
        self.stop.set()
        for future in self.futures:
            future.result(60)
        self.pool.shutdown()

    def tags_since(self, index: int) -> set[str]:
        return {tag for status, body in self.answers[index:] for tag in ("old", "new") if f"{tag}" in body}


def test_reload_under_load(tmp_path: Path, upstreams: tuple[PacedUpstream, PacedUpstream]) -> None:
    old, new = upstreams
    path = tmp_path / "gw.yaml"
    store = f"sqlite:///{tmp_path}/requests.db"
    write_config(path, old.base_url, store, tmp_path / "journal")
    server = ServerThread(create_app(load_config(path), config_path=str(path))).start("/readyz")
    load = Load(server.url)
    try:
        with httpx.Client(timeout=60) as client:
            assert wait_until(lambda: len(load.answers) > 20, 30)
            # A stream that spans the swap finishes on the old generation.
            with ThreadPoolExecutor(1) as one:
                spanning = one.submit(stream, client, server.url, "chunks=30 gap=0.05", "spanning")
                # 1. Invalid file: refused with the reason; the old config keeps serving.
                path.write_text(yaml.safe_dump({"models": [{"name": "up", "deployments": [{"type": "openai"}]}]}))
                refused = client.post(server.url + "/admin/config/reload")
                assert refused.status_code == 422, refused.text
                assert refused.json()["result"] == "refused"
                assert any("base_url" in p for p in refused.json()["problems"])
                # 2. A section that needs a restart: refused, naming it.
                write_config(path, new.base_url, store, tmp_path / "journal", server={"port": 1})
                fixed = client.post(server.url + "/admin/config/reload")
                assert fixed.status_code == 422 and fixed.json()["problems"][0].startswith("server: changed")
                # Background services are built once: their sections are restart-only too.
                write_config(path, new.base_url, store, tmp_path / "journal", drift={"enabled": True})
                drift = client.post(server.url + "/admin/config/reload")
                assert drift.status_code == 422 and drift.json()["problems"][0].startswith("drift: changed")
                before = len(load.answers)
                assert wait_until(lambda: len(load.answers) > before + 10, 30)
                assert load.tags_since(before) == {"old"}
                # 3. A good file: applied; new requests see it.
                write_config(path, new.base_url, store, tmp_path / "journal")
                applied = client.post(server.url + "/admin/config/reload")
                assert applied.status_code == 200, applied.text
                body = applied.json()
                assert body["result"] == "applied" and body["generation"] == 2 and body["audited"] is True
                assert "models[0].deployments[0].base_url" in body["changed"]
                after = len(load.answers)
                assert wait_until(lambda: len(load.answers) > after + 20, 30)
                assert load.tags_since(after + 8) == {"new"}  # a few started before the swap
                status, spanning_body = spanning.result(30)
                assert status == 200 and "old" in spanning_body and spanning_body.rstrip().endswith("[DONE]")
            audit = client.get(server.url + "/admin/audit", params={"limit": 50}).json()["data"]
            reloads = [e for e in audit if e["action"] == "config_reload"]
            assert [e["details"]["result"] for e in reloads][:3] == ["applied", "refused", "refused"]
            assert metric(server.url, "opsgate_config_generation") == 2
    finally:
        load.finish()
        server.stop()
    assert load.errors == []
    assert [status for status, _ in load.answers if status != 200] == []
    assert len(load.answers) > 60


def test_sighup_reloads_a_real_process(tmp_path: Path, upstreams: tuple[PacedUpstream, PacedUpstream]) -> None:
    old, new = upstreams
    path = write_config(tmp_path / "gw.yaml", old.base_url, "none", tmp_path / "journal")
    replica = Replica(path, free_port(), tmp_path / "replica.log").start()
    try:
        with httpx.Client(timeout=30) as client:
            assert "old" in chat(client, replica.url, "x", "before").text
            path.write_text("models: [")  # broken YAML: refused, old config still serves
            replica.signal(signal.SIGHUP)
            assert wait_until(lambda: metric(replica.url, 'opsgate_config_reloads_total{result="refused"}') == 1, 30)
            assert "old" in chat(client, replica.url, "x", "still-old").text
            write_config(path, new.base_url, "none", tmp_path / "journal")
            replica.signal(signal.SIGHUP)
            assert wait_until(lambda: metric(replica.url, "opsgate_config_generation") == 2, 30)
            assert "new" in chat(client, replica.url, "x", "after").text
    finally:
        replica.stop()
    assert "invalid YAML" in (tmp_path / "replica.log").read_text()
