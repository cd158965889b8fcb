"""What the overhead benchmark measures: the nginx upstream, opsgate gateways (as shipped and variants), a bare
Starlette + aiohttp proxy, LiteLLM."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import ROOT, VENV_BIN, child, free_port, process_tree, wait_http_ok
from _overhead_report import Target


def need(tool: str) -> str:
    """Path of an executable, or exit with the install hint."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        sys.exit(f"{tool} not found: apt-get update && apt-get install -y nginx wrk")
    return path


UPSTREAM_CONTENT = "Hello from the benchmark upstream."
UPSTREAM_BODY: dict[str, Any] = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "fake-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": UPSTREAM_CONTENT},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
}
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            limit_except POST {{ deny all; }}
            default_type application/json;
            return 200 '{body}';
        }}
        location = /healthz {{ return 200 'ok'; }}
    }}
}}
"""


@contextmanager
def nginx_upstream(tmp: Path, cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """nginx on a free port answering the fixed chat completion; yields its /v1 base URL and master pid."""
    nginx = need("nginx")
    port = free_port()
    body = json.dumps(UPSTREAM_BODY, separators=(",", ":"))
    assert "'" not in body and "$" not in body  # nginx return text: no quote or variable in it
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, body=body))
    log = tmp / "nginx.out"
    with child(
        [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")], cpus=cpus, log=log
    ) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + "/healthz", proc, 15, "nginx", log)
        yield base + "/v1", proc.pid


def create_key(config: Path, home: Path) -> str:
    """A service key in the store ``config`` names (opened from ``home``, as the gateway will); its secret."""
    from opsgate.auth.key_store import KeySpec, KeyStore
    from opsgate.domain.config import load_config
    from opsgate.store.record_log import open_store

    loaded = load_config(config)
    assert loaded.record.store is not None
    cwd = os.getcwd()
    os.chdir(home)  # the default store URL is relative to the gateway's working directory
    try:
        store = open_store(loaded.record.store)
        created = KeyStore(store).create(KeySpec(tenant="bench", role="service", name="overhead"), "bench")
        store.close()
    finally:
        os.chdir(cwd)
    return created.secret


@contextmanager
def opsgate_gateway(
    tmp: Path,
    upstream: str,
    cpus: set[int] | None,
    *,
    name: str = "opsgate",
    record_store: bool = True,
    store_url: str | None = None,
    gc_probe: bool = False,
    gc_freeze: float = 0.0,
    auth: bool = False,
    writer: str | None = None,
    writer_cpus: set[int] | None = None,
    writer_thread_cpus: set[int] | None = None,
    source: Path | None = None,
) -> Iterator[Target]:
    """``opsgate serve`` (one worker) in front of ``upstream``, run in its own temp directory.

    ``writer`` sets ``record.writer`` (thread/process; None: as shipped). With ``writer_cpus`` the
    record writer process (a child of the gateway, which inherits its pinning) is moved to those CPUs.

    With ``record_store`` the config leaves ``record`` at its defaults (the durable request log:
    journal + SQLite under the working directory, here a temp one); without, it sets
    ``record: {store: none}``. Through bench/_gc_probe.py when ``gc_probe`` is set. With ``auth_key``,
    auth is on and a service key is created in the gateway's store before it starts (``Target.api_key``).
    """
    port = free_port()
    admin_key = uuid.uuid4().hex
    home = tmp / name
    home.mkdir()
    config = home / "opsgate.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "models:\n"
        "  - name: fake\n"
        "    deployments:\n"
        "      - type: openai\n"
        f"        base_url: {upstream}\n"
        "        model: fake-model\n"
        "        api_key: sk-test\n"
        + _record_yaml(record_store, store_url, writer)
        + (f"auth: {{enabled: true, admin_key: '{admin_key}'}}\n" if auth else "")
    )
    api_key = create_key(config, home) if auth else None
    log = home / "opsgate.log"
    probe_out = home / "gc-probe.json" if gc_probe else None
    launcher = [str(VENV_BIN / "python"), str(ROOT / "bench" / "_gc_probe.py")] if gc_probe else []
    env = {"OPSGATE_GC_PROBE_OUT": str(probe_out), "OPSGATE_GC_FREEZE": str(gc_freeze)} if gc_probe else {}
    if source is not None:  # another checkout's src/ (e.g. the previous release) with this venv's packages
        env["PYTHONPATH"] = str(source)
    argv = [
        *(launcher or [str(VENV_BIN / "opsgate")]),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with child(argv, cpus=cpus, env=env, log=log, cwd=home) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + "/readyz", proc, 60, name, log)
        if writer_cpus:
            pin_writer(proc.pid, writer_cpus)
        if writer_thread_cpus:
            pin_writer_thread(proc.pid, writer_thread_cpus)
        if gc_freeze > 0:
            time.sleep(gc_freeze + 0.5)  # let the probe freeze the start-up heap first
        yield Target(
            name,
            base + "/v1/chat/completions",
            pid=proc.pid,
            gc_probe=probe_out,
            api_key=api_key,
            admin_key=admin_key if auth else None,
        )


def _record_yaml(record_store: bool, store_url: str | None, writer: str | None) -> str:
    """The config's ``record`` line (empty: the shipped defaults)."""
    fields = [] if record_store else ["store: none"]
    if store_url:
        fields.append(f"store: '{store_url}'")
    if writer:
        fields.append(f"writer: {writer}")
    return f"record: {{{', '.join(fields)}}}\n" if fields else ""


def pin_writer(gateway_pid: int, cpus: set[int], timeout: float = 15.0) -> None:
    """Move the gateway's record writer process (``opsgate.store.writer_process``) to ``cpus``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in process_tree(gateway_pid)[1:]:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"opsgate.store.writer_process" in cmdline:
                os.sched_setaffinity(pid, cpus)
                return
        time.sleep(0.1)
    raise SystemExit("no record writer process found under the gateway (record.writer: process?)")


def pin_writer_thread(gateway_pid: int, cpus: set[int], timeout: float = 15.0) -> None:
    """Move the gateway's record writer thread (the one running SCHED_IDLE) to ``cpus``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task in Path(f"/proc/{gateway_pid}/task").iterdir():
            try:
                if os.sched_getscheduler(int(task.name)) == os.SCHED_IDLE:
                    os.sched_setaffinity(int(task.name), cpus)
                    return
            except OSError:
                continue
        time.sleep(0.1)
    raise SystemExit("no SCHED_IDLE record writer thread found in the gateway")


@contextmanager
def bare_proxy(tmp: Path, upstream: str, cpus: set[int] | None) -> Iterator[Target]:
    """bench/_bare_proxy.py (Starlette + one aiohttp session, uvicorn as opsgate runs it) before ``upstream``."""
    port = free_port()
    log = tmp / "bare.log"
    argv = [str(VENV_BIN / "python"), str(ROOT / "bench" / "_bare_proxy.py"), upstream, str(port)]
    with child(argv, cpus=cpus, log=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + "/healthz", proc, 60, "bare", log)
        yield Target("bare", base + "/v1/chat/completions", pid=proc.pid)


@contextmanager
def litellm_proxy(tmp: Path, upstream: str, cpus: set[int] | None, venv: Path) -> Iterator[Target]:
    """The LiteLLM proxy (one worker, no database) in front of ``upstream``."""
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        raise SystemExit(f"{exe} not found: python3 -m venv {venv} && {venv}/bin/pip install 'litellm[proxy]'")
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake\n"
        "    litellm_params:\n"
        "      model: openai/fake-model\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-test\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
    )
    log = tmp / "litellm.log"
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        # opsgate has no auth yet; run LiteLLM without a master key too, like for like.
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
    }
    argv = [
        str(exe),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with child(argv, cpus=cpus, env=env, log=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + "/health/liveliness", proc, 180, "litellm", log)
        yield Target("litellm", base + "/v1/chat/completions", pid=proc.pid)
