"""Gateway overhead: wrk straight at an instant upstream (nginx) vs wrk through opsgate to the same nginx.

What it does, in one run:
  1. starts nginx (one worker, non-daemon child, temp config) answering POST /v1/chat/completions with a
     fixed chat.completion JSON; then ``opsgate serve`` (one worker, own temp working directory) with
     that nginx as its ``openai`` upstream twice: "opsgate" with the record settings as shipped (the
     durable request log on) and "opsgate-nostore" with ``record: {store: none}`` (``--no-nostore``
     skips it); with ``--bare``, also bench/_bare_proxy.py (a ~30-line Starlette + aiohttp proxy, uvicorn
     run as opsgate runs it: the floor a Python proxy of this stack sets); with ``--litellm``, also the
     LiteLLM proxy (one worker) on the same upstream;
  2. checks that each chain answers 200 with the expected body, so errors are never benchmarked;
  3. for each connection count (default 1, 8, 32): a warm-up, then a measured wrk run, direct and
     through each proxy, back to back; reports req/s, p50/p99 latency, non-2xx and socket errors,
     the proxy process's CPU use and the CPU other processes on the (shared) machine took meanwhile;
  4. prints Markdown tables (with ``--bare``: each opsgate's req/s as a % of the bare proxy's) and
     writes bench/results/overhead.json;
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
    .venv/bin/python bench/overhead.py --bare --auth --rounds 3  # opsgate as a % of a bare proxy
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
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from _common import (
    ROOT,
    VENV_BIN,
    children_cpu_seconds,
    cpu_seconds,
    http,
    machine,
    pin_to,
    postgres_schema,
    system_busy_seconds,
    wait_quiet,
    write_json,
)
from _overhead_report import REFERENCE_LITELLM, Target, WrkRun, report
from _overhead_targets import (
    UPSTREAM_BODY,
    UPSTREAM_CONTENT,
    bare_proxy,
    litellm_proxy,
    need,
    nginx_upstream,
    opsgate_gateway,
)
from _pyspy import summarise_raw

REQUEST_BODY: dict[str, Any] = {
    "model": "fake",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}
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
            # with auth on, /readyz shows the record's state only to an operator (public: ready or not)
            headers = {"Authorization": f"Bearer {target.admin_key}"} if target.admin_key else {}
            body = httpx.get(readyz, headers=headers, timeout=5).json()
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
    if not py_spy.exists():  # else one on PATH (e.g. ``pip install --target /tmp/pyspy py-spy``, its bin/ on PATH)
        found = shutil.which("py-spy")
        if found is None:
            raise SystemExit(f"{py_spy} not found: {VENV_BIN}/pip install py-spy (or put a py-spy on PATH)")
        py_spy = Path(found)
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


def fmt_load(load: tuple[float, float, float]) -> str:
    """A load average triple as '1.23 / 2.34 / 3.45'."""
    return " / ".join(f"{x:.2f}" for x in load)


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
        "--bare",
        action="store_true",
        help="also measure bench/_bare_proxy.py (Starlette + aiohttp, no auth/log) and report opsgate as a %% of it",
    )
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
        nargs="+",
        choices=["opsgate", "opsgate-nostore", "baseline-nostore", "baseline", "bare"],
        default=["opsgate"],
        help="which runs to sample, one after the other (default: opsgate, the shipped config)",
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
    parser.add_argument(
        "--baseline-log",
        action="store_true",
        help="with --baseline-src, also run that checkout with the request log on as shipped ('baseline'); "
        "with --auth, auth on too (its key is made by this tree's key store code)",
    )
    parser.add_argument("--output", default="overhead.json", help="file name under bench/results/")
    args = parser.parse_args()
    info = machine()  # before the run: the commit and the date the numbers belong to
    load_before = os.getloadavg()  # the machine is shared: what else ran, before and after

    wrk = need("wrk")
    proxy_cpus, load_cpus = plan_cpus(args.pin)
    targets_count = 2 + args.nostore + args.bare + args.litellm + bool(args.postgres) + args.writer_process
    targets_count += (args.baseline_src is not None) * (1 + args.baseline_log)
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
        if args.bare:
            targets.append(stack.enter_context(bare_proxy(tmp, upstream, proxy_cpus)))
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
            if args.baseline_log:
                # With --auth, auth on as in the main target: auth + log + metrics against auth + log + metrics.
                logged = opsgate_gateway(
                    tmp, upstream, proxy_cpus, name="baseline", source=args.baseline_src, auth=args.auth
                )
                targets.append(stack.enter_context(logged))
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

        # A target with its own key (a second gateway with auth on) gets its own wrk script.
        scripts = {t.name: script for t in targets}
        for t in targets:
            if t.api_key and t.api_key != gateway.api_key:
                scripts[t.name] = tmp / f"chat-{t.name}.lua"
                scripts[t.name].write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY), auth=t.api_key))
        check_answer(direct, exact=True)
        for t in targets[1:]:
            # opsgate relays the upstream's JSON unchanged; LiteLLM rebuilds it (content and usage must match)
            check_answer(t, exact=t.name.startswith(("opsgate", "baseline", "bare")))
        print("answers verified: 200 with the upstream's body through every chain", file=sys.stderr)
        own_pids = [os.getpid(), nginx_pid] + [t.pid for t in targets if t.pid]
        if args.wait_quiet > 0:
            busy = wait_quiet(15.0, args.wait_quiet)
            print(f"machine busy before the sweep: {busy:.0f}% of one core", file=sys.stderr)

        for round_no in range(args.rounds):
            for c in args.connections:
                for t in targets:
                    run = measure(wrk, scripts[t.name], t, c, args.duration, args.warmup, load_cpus, own_pids)
                    t.runs.append(run)
                    print(
                        f"  round {round_no + 1} c={c:<3} {t.name:<8} {run.rps:>9,.0f} req/s  "
                        f"p50 {run.p50_ms:7.3f} ms  p99 {run.p99_ms:7.3f} ms  non-2xx {run.non_2xx}  "
                        f"errors {run.socket_errors}  other load {run.other_load_pct:.0f}%",
                        file=sys.stderr,
                    )

        profiles: list[dict[str, Any]] = []
        for name in args.profile_target if args.profile > 0 else []:
            sampled = next((t for t in targets if t.name == name), None)
            if sampled is None:
                raise SystemExit(f"--profile-target {name} was not run (see --no-nostore, --baseline-src, --bare)")
            profiles.append(
                profile_gateway(
                    wrk,
                    scripts[sampled.name],
                    sampled,
                    args.profile_connections,
                    args.profile,
                    load_cpus,
                    tmp,
                    args.profile_gil,
                )
            )

    load_after = os.getloadavg()
    table, summary = report(targets, args.connections)
    table += f"\n- load average (1/5/15 min) before: {fmt_load(load_before)}; after: {fmt_load(load_after)}"
    print(table)
    for profile in profiles:
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
            "bare": args.bare,
            "writer_cpus": args.writer_cpus,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
            "command": " ".join([".venv/bin/python", "bench/overhead.py", *sys.argv[1:]]),
        },
        "request_body": REQUEST_BODY,
        "runs": [asdict(r) for t in targets for r in t.runs],
        "summary": summary,
        "reference_litellm_reported": REFERENCE_LITELLM,
        "profile": profiles[0] if len(profiles) == 1 else (profiles or None),
        "markdown": table,
    }
    print(f"\nwrote {write_json(args.output, result)}", file=sys.stderr)


if __name__ == "__main__":
    main()
