"""CPU per request by thread (event loop vs record writer) of opsgate gateways, trees side by side.

Run: .venv/bin/python bench/_overhead_threads.py --baseline-src /tmp/base/src [--rounds 3 --seconds 5 --connections 8]

Each round drives every gateway (this tree, and the checkout at ``--baseline-src``, both with the
request log on as shipped) with wrk in turn, waits until the journal is stored, and reads each
thread's CPU time from /proc: the loop's and the writer's microseconds per request. CPU time, not
req/s, so a busy shared machine disturbs it less. Pinned like bench/overhead.py (gateway CPU 0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _common import write_json
from _overhead_targets import nginx_upstream, opsgate_gateway
from overhead import REQUEST_BODY, WRK_SCRIPT, plan_cpus, run_wrk, wait_for_journal

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (threads of one name summed)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        # Python 3.11 does not name OS threads: the loop is the main thread, the record writer the
        # one at SCHED_IDLE (store/writer.py), unless its watchdog raised it for the moment.
        name = "loop" if task.name == str(pid) else "writer" if _idle(int(task.name)) else "other"
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


def _idle(tid: int) -> bool:
    try:
        return os.sched_getscheduler(tid) == os.SCHED_IDLE
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--baseline-src", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--output", default="thread-cpu.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    proxy_cpus, load_cpus = plan_cpus(True)
    wrk = "wrk"
    rows: dict[str, list[dict[str, float]]] = {"this tree": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="opsgate-thread-cpu-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        script = tmp / "chat.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY), auth=""))
        upstream, _ = stack.enter_context(nginx_upstream(tmp, load_cpus))
        targets = {
            "this tree": stack.enter_context(opsgate_gateway(tmp, upstream, proxy_cpus, name="opsgate")),
            "baseline": stack.enter_context(
                opsgate_gateway(tmp, upstream, proxy_cpus, name="baseline", source=args.baseline_src)
            ),
        }
        for round_no in range(args.rounds):
            for name, target in targets.items():
                assert target.pid is not None
                run_wrk(wrk, script, target.url, args.connections, 1, load_cpus)  # warm-up
                wait_for_journal(target)
                before = thread_cpu(target.pid)
                data = run_wrk(wrk, script, target.url, args.connections, args.seconds, load_cpus)
                wait_for_journal(target)  # the writer's work for these requests is done too
                after = thread_cpu(target.pid)
                requests = data["requests"]
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                loop = delta.get("loop", 0.0)
                writer = delta.get("writer", 0.0)
                other = sum(delta.values()) - loop - writer
                row = {
                    "requests": requests,
                    "rps": requests / (data["duration_us"] / 1e6),
                    "loop_us": loop / requests * 1e6,
                    "writer_us": writer / requests * 1e6,
                    "other_us": other / requests * 1e6,
                }
                rows[name].append(row)
                print(
                    f"round {round_no + 1} {name:9} {row['rps']:7,.0f} req/s  loop {row['loop_us']:5.0f} us/req  "
                    f"writer {row['writer_us']:5.0f} us/req  other threads {row['other_us']:4.0f}",
                    file=sys.stderr,
                )
    load_after = os.getloadavg()
    print("| tree | loop CPU us/request | writer CPU us/request | req/s | (medians) |")
    print("|---|---:|---:|---:|---|")
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("loop_us", "writer_us", "rps")}
        print(f"| {name} | {med['loop_us']:.0f} | {med['writer_us']:.0f} | {med['rps']:,.0f} | |")
    print(f"- load average before {load_before}, after {load_after}")
    write_json(args.output, {"rows": rows, "loadavg_before": load_before, "loadavg_after": load_after})


if __name__ == "__main__":
    main()
