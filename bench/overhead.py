"""Gateway overhead: wrk straight at an instant upstream (nginx) vs wrk through opsgate to the same nginx.

What it does, in one run:
  1. starts nginx (one worker, non-daemon child, temp config) answering POST /v1/chat/completions with a
     fixed chat.completion JSON; then ``opsgate serve`` (one worker, own temp working directory) with
     that nginx as its ``openai`` upstream twice: "opsgate" with the record settings as shipped (the
     durable request log on) and "opsgate-nostore" with ``record: {store: none}`` (``--no-nostore``
     skips it); with ``--litellm``, also the LiteLLM proxy (one worker) on the same upstream;
  2. checks that each chain answers 200 with the expected body, so errors are never benchmarked;
  3. for each connection count (default 1, 8, 32): a warm-up, then a measured wrk run, direct and
     through each proxy, back to back; reports req/s, p50/p99 latency, non-2xx and socket errors,
     the proxy process's CPU use and the CPU other processes on the (shared) machine took meanwhile;
  4. prints Markdown tables and writes bench/results/overhead.json;
  5. with ``--profile S``, samples opsgate with py-spy for S seconds under load and prints the top
     functions (own time), the split by thread and by package.

``--gc-probe`` runs opsgate through bench/_gc_probe.py, which times CPython's garbage collections
and adds their pauses per run to the table; ``--gc-freeze S`` also calls ``gc.freeze()`` S seconds
after start (an experiment: what freezing the start-up heap would change). Neither edits opsgate.

By default the proxy under test is pinned to CPU 0 and nginx + wrk to CPU 1 (``--no-pin`` to turn off),
so the proxy's event loop gets one whole core, as it would in production with one worker.

Run (needs ``apt-get install -y nginx wrk``; ``--profile`` needs ``pip install py-spy`` in the venv):

    .venv/bin/python bench/overhead.py
    .venv/bin/python bench/overhead.py --duration 10 --warmup 2 --connections 1 8 32 --litellm --profile 10
    .venv/bin/python bench/overhead.py --gc-probe              # same sweep, with GC pauses per run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import (
    ROOT,
    VENV_BIN,
    child,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    http,
    machine,
    median,
    pin_to,
    postgres_schema,
    process_tree,
    system_busy_seconds,
    wait_http_ok,
    wait_quiet,
    write_json,
)
from _pyspy import summarise_raw

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
REQUEST_BODY: dict[str, Any] = {
    "model": "fake",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}
# What the task set as the bar, and LiteLLM 1.110.2 (one worker, same setup) as reported to us.
TARGET_RPS = 3000.0
TARGET_ADDED_P50_MS = 1.0
REFERENCE_LITELLM = {"rps_at_8": 112.0, "p50_ms_at_1": 9.7}

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

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {auth}"

done = function(summary, latency, requests)
  io.write(string.format(
    "WRK_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"status_errors\\":%d,\\"connect_errors\\":%d," ..
    "\\"read_errors\\":%d,\\"write_errors\\":%d,\\"timeouts\\":%d,\\"p50_us\\":%.0f,\\"p90_us\\":%.0f," ..
    "\\"p99_us\\":%.0f,\\"max_us\\":%.0f,\\"mean_us\\":%.1f}}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass
class WrkRun:
    """One measured wrk run."""

    target: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    proxy_cpu_pct: float | None
    other_load_pct: float  # CPU (% of one core) used by processes outside this benchmark during the run
    gc_pauses: int | None = None  # with --gc-probe: collections in the proxy during the run (all generations)
    gc_total_ms: float | None = None  # ... their summed pause
    gc_max_ms: float | None = None  # ... and the longest one
    # With the durable log on: journal bytes not yet stored when the run ended (the writer runs at
    # idle priority, so a saturated gateway leaves it behind), and how long it took to catch up.
    backlog_bytes: int | None = None
    catch_up_s: float | None = None


@dataclass
class Target:
    """Something wrk can be pointed at."""

    name: str
    url: str
    pid: int | None = None  # the proxy process whose CPU use is reported (None: direct)
    gc_probe: Path | None = None  # where bench/_gc_probe.py writes GC totals on SIGUSR1
    api_key: str | None = None  # the key wrk sends, when this target has auth on
    runs: list[WrkRun] = field(default_factory=list)


def need(tool: str) -> str:
    """Path of an executable, or exit with the install hint."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        sys.exit(f"{tool} not found: apt-get update && apt-get install -y nginx wrk")
    return path


def plan_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(proxy CPUs, load CPUs): two disjoint cores when pinning and at least two are usable."""
    usable = sorted(os.sched_getaffinity(0))
    if not pin or len(usable) < 2:
        return None, None
    return {usable[0]}, set(usable[1:])


def run_wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: float, cpus: set[int] | None
) -> dict[str, Any]:
    """Run wrk once and return the numbers from the script's ``done`` hook."""
    argv = [
        wrk,
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    result = subprocess.run(argv, capture_output=True, text=True, preexec_fn=pin_to(cpus), timeout=seconds + 30)
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
            return data
    raise RuntimeError(f"wrk gave no result (rc={result.returncode}):\n{result.stdout}\n{result.stderr}")


def measure(
    wrk: str,
    script: Path,
    target: Target,
    connections: int,
    seconds: float,
    warmup: float,
    cpus: set[int] | None,
    own_pids: list[int],
) -> WrkRun:
    """Warm up, then one measured wrk run at ``connections``.

    Besides wrk's numbers it records the proxy's CPU use and how much CPU processes outside this
    benchmark took meanwhile (the machine is shared: a busy neighbour shows up there).
    """
    if warmup > 0:
        run_wrk(wrk, script, target.url, connections, warmup, cpus)
    gc_before = read_gc_probe(target)
    proxy_before = cpu_seconds(target.pid) if target.pid else 0.0
    own_before = sum(cpu_seconds(pid) for pid in own_pids) + children_cpu_seconds()
    busy_before = system_busy_seconds()
    wall_before = time.monotonic()
    data = run_wrk(wrk, script, target.url, connections, seconds, cpus)
    wall = time.monotonic() - wall_before
    own = sum(cpu_seconds(pid) for pid in own_pids) + children_cpu_seconds() - own_before
    other_pct = max(0.0, (system_busy_seconds() - busy_before - own) / wall * 100.0)
    cpu_pct = (cpu_seconds(target.pid) - proxy_before) / wall * 100.0 if target.pid else None
    gc_after = read_gc_probe(target)
    gc_delta: dict[str, Any] = {}
    if gc_before is not None and gc_after is not None:
        gens = [str(g) for g in range(3)]
        gc_delta = {
            "gc_pauses": sum(gc_after[g]["count"] - gc_before[g]["count"] for g in gens),
            "gc_total_ms": sum(gc_after[g]["total_ms"] - gc_before[g]["total_ms"] for g in gens),
            "gc_max_ms": max(gc_after[g]["max_ms"] for g in gens),
        }
    backlog, catch_up = wait_for_journal(target)
    duration_s = data["duration_us"] / 1e6
    return WrkRun(
        target=target.name,
        connections=connections,
        rps=data["requests"] / duration_s,
        p50_ms=data["p50_us"] / 1000.0,
        p90_ms=data["p90_us"] / 1000.0,
        p99_ms=data["p99_us"] / 1000.0,
        max_ms=data["max_us"] / 1000.0,
        requests=data["requests"],
        non_2xx=data["status_errors"],
        socket_errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        proxy_cpu_pct=cpu_pct,
        other_load_pct=other_pct,
        backlog_bytes=backlog,
        catch_up_s=catch_up,
        **gc_delta,
    )


def wait_for_journal(target: Target, timeout: float = 120.0) -> tuple[int | None, float | None]:
    """The journal backlog right after a run and the seconds until it is stored (None: no durable log).

    Waiting also means every run starts with the writer idle, as the first one did.
    """
    readyz = target.url.split("/v1/")[0] + "/readyz"
    started = time.monotonic()
    backlog: int | None = None
    while time.monotonic() - started < timeout:
        try:
            body = httpx.get(readyz, timeout=5).json()
        except ValueError:
            return None, None  # not an opsgate (the direct upstream, LiteLLM)
        record = body.get("record") if isinstance(body, dict) else None
        if not record or "pending_bytes" not in record:
            return None, None
        pending = int(record["pending_bytes"])
        backlog = pending if backlog is None else backlog
        if pending == 0:
            return backlog, time.monotonic() - started
        time.sleep(0.05)
    return backlog, None


def read_gc_probe(target: Target) -> dict[str, Any] | None:
    """Ask the probed gateway for its GC totals (SIGUSR1) and read them; None without a probe."""
    if target.gc_probe is None or target.pid is None:
        return None
    target.gc_probe.unlink(missing_ok=True)
    os.kill(target.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5.0
    while not target.gc_probe.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the GC probe did not answer SIGUSR1")
        time.sleep(0.01)
    data: dict[str, Any] = json.loads(target.gc_probe.read_text())["generations"]
    return data


def check_answer(target: Target, exact: bool) -> None:
    """One request through ``target``: it must be a 200 with the upstream's answer, or we stop here."""
    headers = {"Content-Type": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    status, raw = http("POST", target.url, json.dumps(REQUEST_BODY).encode(), headers)
    if status != 200:
        raise SystemExit(f"{target.name}: expected 200, got {status}: {raw[:500]!r}")
    body = json.loads(raw)
    if exact and body != UPSTREAM_BODY:
        raise SystemExit(f"{target.name}: body differs from the upstream's:\n{body}")
    content = body.get("choices", [{}])[0].get("message", {}).get("content")
    if content != UPSTREAM_CONTENT or not body.get("usage"):
        raise SystemExit(f"{target.name}: unexpected answer: {body}")


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
        + (f"auth: {{enabled: true, admin_key: '{uuid.uuid4().hex}'}}\n" if auth else "")
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
        yield Target(name, base + "/v1/chat/completions", pid=proc.pid, gc_probe=probe_out, api_key=api_key)


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


def profile_gateway(
    wrk: str,
    script: Path,
    target: Target,
    connections: int,
    seconds: float,
    cpus: set[int] | None,
    tmp: Path,
    gil: bool = False,
) -> dict[str, Any]:
    """Sample the gateway with py-spy under wrk load: top functions by own and total time, by thread.

    With ``gil`` only the thread holding the GIL is sampled (py-spy --gil): who keeps the GIL.
    """
    py_spy = VENV_BIN / "py-spy"
    if not py_spy.exists():
        raise SystemExit(f"{py_spy} not found: {VENV_BIN}/pip install py-spy")
    assert target.pid is not None
    raw = tmp / "profile.txt"
    spy = subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(target.pid),
            "--duration",
            str(round(seconds)),
            "--rate",
            "200",
            "--nonblocking",
            "--threads",
            *(["--gil"] if gil else []),
            "--format",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=pin_to(cpus),
    )
    time.sleep(0.5)
    load = run_wrk(wrk, script, target.url, connections, seconds, cpus)
    _, err = spy.communicate(timeout=seconds + 60)
    if not raw.exists():
        raise RuntimeError(f"py-spy wrote no profile: {err.decode(errors='replace')}")
    summary = summarise_raw(raw, ROOT / "bench" / "results" / f"overhead-profile-{target.name}.txt")
    return {
        "target": target.name,
        "connections": connections,
        "seconds": seconds,
        "gil_only": gil,
        "rps_while_sampled": load["requests"] / (load["duration_us"] / 1e6),
        **summary,
        "collapsed_stacks": str(Path(summary["collapsed_stacks"]).relative_to(ROOT)),
    }


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the table ('-' for none)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def aggregate(runs: list[WrkRun]) -> WrkRun:
    """One row from several rounds: the median of each number (counts are summed)."""
    if len(runs) == 1:
        return runs[0]
    cpu = [r.proxy_cpu_pct for r in runs if r.proxy_cpu_pct is not None]
    return WrkRun(
        target=runs[0].target,
        connections=runs[0].connections,
        rps=median([r.rps for r in runs]),
        p50_ms=median([r.p50_ms for r in runs]),
        p90_ms=median([r.p90_ms for r in runs]),
        p99_ms=median([r.p99_ms for r in runs]),
        max_ms=max(r.max_ms for r in runs),
        requests=sum(r.requests for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        proxy_cpu_pct=median(cpu) if cpu else None,
        other_load_pct=median([r.other_load_pct for r in runs]),
        gc_pauses=None if runs[0].gc_pauses is None else sum(r.gc_pauses or 0 for r in runs),
        gc_total_ms=None if runs[0].gc_total_ms is None else sum(r.gc_total_ms or 0.0 for r in runs),
        gc_max_ms=None if runs[0].gc_max_ms is None else max(r.gc_max_ms or 0.0 for r in runs),
        backlog_bytes=None if runs[0].backlog_bytes is None else max(r.backlog_bytes or 0 for r in runs),
        catch_up_s=None if any(r.catch_up_s is None for r in runs) else max(r.catch_up_s or 0.0 for r in runs),
    )


def backlog_cell(run: WrkRun) -> str:
    """'backlog KiB / catch-up s' for a run with the durable log, '-' without."""
    if run.backlog_bytes is None:
        return "-"
    catch_up = "not within 120 s" if run.catch_up_s is None else f"{run.catch_up_s:.2f}"
    return f"{run.backlog_bytes / 1024:,.0f} / {catch_up}"


def report(targets: list[Target], connections: list[int]) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and the summary numbers."""
    rows = {(t.name, c): aggregate([r for r in t.runs if r.connections == c]) for t in targets for c in connections}
    lines = [
        "| connections | target | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU % | other load % "
        "| journal backlog after run KiB / catch-up s (worst round) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with_gc = any(r.gc_pauses is not None for r in rows.values())
    if with_gc:
        lines[0] += " GC pauses in proxy: count / total ms / longest ms |"
        lines[1] += "---:|"
    for c in connections:
        for t in targets:
            r = rows[(t.name, c)]
            gc_cell = (
                f" {r.gc_pauses} / {r.gc_total_ms:.0f} / {r.gc_max_ms:.1f} |"
                if r.gc_pauses is not None and r.gc_total_ms is not None and r.gc_max_ms is not None
                else " - |"
            )
            lines.append(
                f"| {c} | {t.name} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 3)} | {fmt(r.p99_ms, 3)} | {r.non_2xx} "
                f"| {r.socket_errors} | {fmt(r.proxy_cpu_pct, 0)} | {fmt(r.other_load_pct, 0)} | {backlog_cell(r)} |"
                + (gc_cell if with_gc else "")
            )
    summary: dict[str, Any] = {"per_proxy": {}}
    lines += [
        "",
        "| proxy | connections | added p50 ms (proxy - direct) | throughput ratio (proxy / direct) |",
        "|---|---:|---:|---:|",
    ]
    for t in targets:
        if t.name == "direct":
            continue
        per: dict[str, Any] = {}
        for c in connections:
            direct, proxied = rows[("direct", c)], rows[(t.name, c)]
            added = proxied.p50_ms - direct.p50_ms
            ratio = proxied.rps / direct.rps
            per[str(c)] = {
                "added_p50_ms": round(added, 3),
                "throughput_ratio": round(ratio, 4),
                "rps": round(proxied.rps, 1),
            }
            lines.append(f"| {t.name} | {c} | {added:.3f} | {ratio:.3f} |")
        summary["per_proxy"][t.name] = per
    checks = []
    for name, gw in summary["per_proxy"].items():
        if not name.startswith("opsgate"):
            continue
        if "1" in gw:
            ok = gw["1"]["added_p50_ms"] <= TARGET_ADDED_P50_MS
            checks.append(
                f"{name}: added p50 at 1 connection {gw['1']['added_p50_ms']:.3f} ms "
                f"(target ≤ {TARGET_ADDED_P50_MS:g} ms: {'met' if ok else 'NOT met'})"
            )
        high = [c for c in connections if 8 <= c <= 32]
        if high:
            worst = min(gw[str(c)]["rps"] for c in high)
            ok = worst >= TARGET_RPS
            checks.append(
                f"{name}: lowest req/s at 8-32 connections {worst:,.0f} "
                f"(target ≥ {TARGET_RPS:,.0f}: {'met' if ok else 'NOT met'})"
            )
    checks.append(
        f"reference LiteLLM 1.110.2 (reported): {REFERENCE_LITELLM['rps_at_8']:g} req/s at 8 connections, "
        f"{REFERENCE_LITELLM['p50_ms_at_1']:g} ms p50 at 1 connection"
    )
    summary["checks"] = checks
    lines += [""] + [f"- {c}" for c in checks]
    return "\n".join(lines), summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each run (default 2)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=1, help="repeat the whole sweep; the table shows medians")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes to cores")
    parser.add_argument(
        "--no-nostore",
        dest="nostore",
        action="store_false",
        help="skip the second opsgate run with the durable request log off (record.store: none)",
    )
    parser.add_argument("--litellm", action="store_true", help="also measure the LiteLLM proxy (one worker)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run opsgate with the request log in PostgreSQL at URL (a scratch schema, dropped after)",
    )
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"))
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the sweep, sample opsgate with py-spy for this long under load",
    )
    parser.add_argument("--profile-connections", type=int, default=32)
    parser.add_argument(
        "--profile-target",
        choices=["opsgate", "opsgate-nostore"],
        default="opsgate",
        help="which opsgate run to sample (default: opsgate, the shipped config)",
    )
    parser.add_argument("--profile-gil", action="store_true", help="py-spy --gil: sample only the GIL holder")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wait up to this long for the (shared) machine to go idle before measuring",
    )
    parser.add_argument(
        "--gc-probe",
        action="store_true",
        help="run opsgate through bench/_gc_probe.py and report its garbage-collection pauses per run",
    )
    parser.add_argument(
        "--gc-freeze",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="experiment (implies --gc-probe): gc.freeze() the gateway's heap this long after start",
    )
    parser.add_argument(
        "--auth", action="store_true", help="run the main opsgate target with auth on (a real key from its store)"
    )
    parser.add_argument(
        "--writer-process",
        action="store_true",
        help="also run opsgate with the log on and record.writer: process (the writer in its own process)",
    )
    parser.add_argument(
        "--writer-cpus",
        choices=["proxy", "load"],
        default="proxy",
        help="with --writer-process, where the writer process runs: on the proxy's pinned core (inherited; default) "
        "or moved to the nginx+wrk core(s), as on a machine with a spare core",
    )
    parser.add_argument(
        "--writer-thread-spare-core",
        action="store_true",
        help="also run opsgate with the log on and its writer thread moved to the nginx+wrk core(s): the thread "
        "writer on a machine with a core to spare, where the kernel would put it",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run opsgate (log off) from another checkout's src/ directory, side by side: "
        "e.g. `git worktree add /tmp/base v0.1 && ... --baseline-src /tmp/base/src`",
    )
    parser.add_argument("--output", default="overhead.json", help="file name under bench/results/")
    args = parser.parse_args()
    info = machine()  # before the run: the commit and the date the numbers belong to

    wrk = need("wrk")
    proxy_cpus, load_cpus = plan_cpus(args.pin)
    targets_count = 2 + args.nostore + args.litellm + bool(args.postgres) + args.writer_process
    targets_count += args.baseline_src is not None
    total = args.rounds * len(args.connections) * targets_count * (args.duration + args.warmup)
    print(
        f"overhead benchmark: ~{total / 60:.1f} min of load; proxy CPUs {proxy_cpus}, nginx+wrk CPUs {load_cpus}",
        file=sys.stderr,
    )

    with tempfile.TemporaryDirectory(prefix="opsgate-bench-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        script = tmp / "chat.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY), auth=""))
        upstream, nginx_pid = stack.enter_context(nginx_upstream(tmp, load_cpus))
        direct = Target("direct", upstream + "/chat/completions")
        probe = args.gc_probe or args.gc_freeze > 0
        writer_cpus = load_cpus if args.writer_cpus == "load" else None
        gateway = stack.enter_context(
            opsgate_gateway(
                tmp,
                upstream,
                proxy_cpus,
                gc_probe=probe,
                gc_freeze=args.gc_freeze,
                auth=args.auth,
            )
        )
        if gateway.api_key:  # every target gets the header; only the gateway with auth on checks it
            script.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY), auth=gateway.api_key))
        targets = [direct, gateway]
        if args.nostore:
            nostore = opsgate_gateway(
                tmp,
                upstream,
                proxy_cpus,
                name="opsgate-nostore",
                record_store=False,
                gc_probe=probe,
                gc_freeze=args.gc_freeze,
            )
            targets.append(stack.enter_context(nostore))
        if args.baseline_src is not None:
            baseline = opsgate_gateway(
                tmp, upstream, proxy_cpus, name="baseline-nostore", record_store=False, source=args.baseline_src
            )
            targets.append(stack.enter_context(baseline))
        if args.writer_thread_spare_core:
            spare = opsgate_gateway(tmp, upstream, proxy_cpus, name="opsgate-spare-core", writer_thread_cpus=load_cpus)
            targets.append(stack.enter_context(spare))
        if args.writer_process:
            separate = opsgate_gateway(
                tmp, upstream, proxy_cpus, name="opsgate-process", writer="process", writer_cpus=writer_cpus
            )
            targets.append(stack.enter_context(separate))
        if args.postgres:
            schema = stack.enter_context(postgres_schema(args.postgres))
            pg = opsgate_gateway(tmp, upstream, proxy_cpus, name="opsgate-postgres", store_url=schema)
            targets.append(stack.enter_context(pg))
        if args.litellm:
            targets.append(stack.enter_context(litellm_proxy(tmp, upstream, proxy_cpus, args.litellm_venv)))

        check_answer(direct, exact=True)
        for t in targets[1:]:
            # opsgate relays the upstream's JSON unchanged; LiteLLM rebuilds it (content and usage must match)
            check_answer(t, exact=t.name.startswith(("opsgate", "baseline")))
        print("answers verified: 200 with the upstream's body through every chain", file=sys.stderr)
        own_pids = [os.getpid(), nginx_pid] + [t.pid for t in targets if t.pid]
        if args.wait_quiet > 0:
            busy = wait_quiet(15.0, args.wait_quiet)
            print(f"machine busy before the sweep: {busy:.0f}% of one core", file=sys.stderr)

        for round_no in range(args.rounds):
            for c in args.connections:
                for t in targets:
                    run = measure(wrk, script, t, c, args.duration, args.warmup, load_cpus, own_pids)
                    t.runs.append(run)
                    print(
                        f"  round {round_no + 1} c={c:<3} {t.name:<8} {run.rps:>9,.0f} req/s  "
                        f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  non-2xx {run.non_2xx}  "
                        f"errors {run.socket_errors}  other load {run.other_load_pct:.0f}%",
                        file=sys.stderr,
                    )

        profile = None
        if args.profile > 0:
            sampled = next((t for t in targets if t.name == args.profile_target), None)
            if sampled is None:
                raise SystemExit(f"--profile-target {args.profile_target} was not run (see --no-nostore)")
            profile = profile_gateway(
                wrk, script, sampled, args.profile_connections, args.profile, load_cpus, tmp, args.profile_gil
            )

    table, summary = report(targets, args.connections)
    print(table)
    if profile:
        print(
            f"\npy-spy{' --gil' if profile['gil_only'] else ''} on {profile['target']} at "
            f"{profile['connections']} connections ({profile['samples']} samples, "
            f"{profile['rps_while_sampled']:,.0f} req/s while sampled). Top own time:"
        )
        for entry in profile["top_own"][:12]:
            print(f"  {entry['pct']:5.1f}%  {entry['function']}")
        print("Samples by thread:")
        for entry in profile["by_thread"]:
            print(f"  {entry['pct']:5.1f}%  {entry['function']}")
        print("Own time by package:")
        for entry in profile["own_by_package"]:
            print(f"  {entry['pct']:5.1f}%  {entry['function']}")
    result = {
        "benchmark": "overhead",
        "machine": info,
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "rounds": args.rounds,
            "gc_probe": args.gc_probe or args.gc_freeze > 0,
            "gc_freeze_s": args.gc_freeze,
            "wrk_threads": 1,
            "pinned": bool(proxy_cpus),
            "proxy_cpus": sorted(proxy_cpus or []),
            "load_cpus": sorted(load_cpus or []),
            "nginx": subprocess.run([need("nginx"), "-v"], capture_output=True, text=True).stderr.strip(),
            "auth": args.auth,
            "writer_cpus": args.writer_cpus,
            "command": " ".join([".venv/bin/python", "bench/overhead.py", *sys.argv[1:]]),
        },
        "request_body": REQUEST_BODY,
        "runs": [asdict(r) for t in targets for r in t.runs],
        "summary": summary,
        "reference_litellm_reported": REFERENCE_LITELLM,
        "profile": profile,
        "markdown": table,
    }
    print(f"\nwrote {write_json(args.output, result).relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
