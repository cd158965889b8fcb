"""What metrics and tracing cost: opsgate with telemetry off, metrics on, and metrics + tracing, side by side.

What it does, in one run (about a minute with the defaults):
  1. starts nginx (bench/overhead.py's instant upstream: a fixed chat.completion JSON) with one more
     location, ``POST /v1/traces`` answering 200, so the traced gateway exports its spans over
     OTLP/HTTP to a real (if silent) receiver; then three ``opsgate serve`` processes (one worker each,
     no request log, so only telemetry differs) in front of it:
       - ``off``: ``telemetry.metrics.enabled: false``, no tracing;
       - ``metrics``: the default (``/metrics`` on), no tracing;
       - ``metrics+tracing``: metrics, and every request traced (``sample_ratio`` 1, stage spans on)
         and exported in batches to nginx;
       - ``metrics+tracing@R``: the same with ``sample_ratio`` R (``--sample-ratio``, default 0.02): the
         other requests still get a trace id (header, record) but no recorded span;
  2. checks each answers 200 with the upstream's body, that ``/metrics`` counts the check request,
     and that the traced one sends ``x-opsgate-trace-id``;
  3. for each connection count (default 8 and 32, the overhead benchmark's load): a warm-up, then a
     measured wrk run against each gateway, back to back, in several rounds (alternating the order,
     so drift cancels out); records req/s, p50/p99, errors, and the gateway's CPU per request;
  4. prints the medians (with the throughput relative to ``off``) and writes bench/results/telemetry.json.

The gateway is pinned to the first CPU, nginx and wrk to the rest (``--no-pin`` to turn off). On a
shared machine read the CPU per request: it does not depend on how busy the neighbours are.

Run (needs ``apt-get install -y nginx wrk``):

    .venv/bin/python bench/telemetry.py
    .venv/bin/python bench/telemetry.py --duration 10 --warmup 2 --rounds 5 --connections 1 8 32
    .venv/bin/python bench/telemetry.py --sample-ratio 0.05     # the sampled variant at 5%
    .venv/bin/python bench/telemetry.py --hooks-only             # just the in-process CPU per request

Before the load runs it also times the telemetry hooks in this process (``hooks``: CPU µs per
request for the metrics sink, an unsampled and a sampled traced request including the protobuf
encoding a real export does): a figure that does not depend on the machine being quiet.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from _common import (
    ROOT,
    child,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    http,
    machine,
    median,
    system_busy_seconds,
    wait_http_ok,
    write_json,
)
from overhead import NGINX_CONF, REQUEST_BODY, UPSTREAM_BODY, WRK_SCRIPT, need, plan_cpus, run_wrk

# One more nginx location: a stand-in OTLP collector that accepts every export.
TRACES_LOCATION = "        location = /v1/traces { return 200 ''; }\n"
OPSGATE = Path(sys.executable).parent / "opsgate"  # the opsgate of the venv running this script


@contextmanager
def nginx_upstream(tmp: Path, cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """nginx answering the fixed chat completion and accepting OTLP exports; yields its base URL and pid."""
    port = free_port()
    body = json.dumps(UPSTREAM_BODY, separators=(",", ":"))
    conf_text = NGINX_CONF.format(tmp=tmp, port=port, body=body)
    marker = "        location = /healthz"
    conf_text = conf_text.replace(marker, TRACES_LOCATION + marker)
    conf = tmp / "nginx.conf"
    conf.write_text(conf_text)
    log = tmp / "nginx.out"
    argv = [need("nginx"), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")]
    with child(argv, cpus=cpus, log=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_http_ok(base + "/healthz", proc, 15, "nginx", log)
        yield base, proc.pid


def telemetry_settings(name: str, base: str) -> dict[str, Any]:
    """The ``telemetry`` config of each gateway under test (``metrics+tracing@0.1``: sample ratio 0.1)."""
    if name == "off":
        return {"metrics": {"enabled": False}}
    if name == "metrics":
        return {"metrics": {"enabled": True}}
    sample_ratio = float(name.partition("@")[2] or 1.0)
    return {
        "metrics": {"enabled": True},
        "tracing": {"otlp_endpoint": base + "/v1/traces", "sample_ratio": sample_ratio, "stage_spans": True},
    }


@contextmanager
def gateway(name: str, base: str, cpus: set[int] | None, tmp: Path) -> Iterator[tuple[int, int]]:
    """``opsgate serve`` with ``name``'s telemetry; yields its port and pid."""
    port = free_port()
    config = {
        "server": {"host": "127.0.0.1", "port": port},
        "models": [
            {
                "name": "fake",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "deployments": [{"type": "openai", "base_url": base + "/v1", "model": "fake-model"}],
            }
        ],
        "record": {"store": None},
        "telemetry": telemetry_settings(name, base),
    }
    safe = name.replace("+", "-").replace("@", "-")
    path = tmp / f"{safe}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp / f"{safe}.log"
    argv = [str(OPSGATE), "serve", "--config", str(path), "--log-level", "warning"]
    with child(argv, cpus=cpus, log=log, cwd=tmp) as proc:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60, name, log)
        yield port, proc.pid


def check(name: str, port: int) -> None:
    """One request: 200 with the upstream's body; metrics count it where on; a trace header where traced."""
    url = f"http://127.0.0.1:{port}"
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(REQUEST_BODY).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200 or json.loads(response.read()) != UPSTREAM_BODY:
            raise SystemExit(f"{name}: unexpected answer")
        traced = response.headers.get("x-opsgate-trace-id") is not None
    if traced != name.startswith("metrics+tracing"):
        raise SystemExit(f"{name}: trace header {'present' if traced else 'missing'}")
    status, raw = http("GET", url + "/metrics")
    counted = status == 200 and b"opsgate_requests_total{" in raw  # off: 404
    if counted != (name != "off"):
        raise SystemExit(f"{name}: /metrics {'counts requests' if counted else 'does not count requests'}")


def measure(
    wrk: str, script: Path, url: str, pid: int, connections: int, args: argparse.Namespace, cpus: set[int] | None
) -> dict[str, Any]:
    """A warm-up, then one measured wrk run, with the gateway's CPU per request and everyone else's load."""
    run_wrk(wrk, script, url, connections, args.warmup, cpus)
    cpu_before, own_before = cpu_seconds(pid), cpu_seconds(os.getpid()) + children_cpu_seconds()
    busy_before = system_busy_seconds()
    data = run_wrk(wrk, script, url, connections, args.duration, cpus)
    wall = data["duration_us"] / 1e6
    gateway_cpu = cpu_seconds(pid) - cpu_before
    own = cpu_seconds(os.getpid()) + children_cpu_seconds() - own_before
    requests = max(1, data["requests"])
    return {
        "connections": connections,
        "rps": data["requests"] / wall,
        "p50_ms": data["p50_us"] / 1000.0,
        "p99_ms": data["p99_us"] / 1000.0,
        "requests": data["requests"],
        "errors": data["status_errors"]
        + data["connect_errors"]
        + data["read_errors"]
        + data["write_errors"]
        + data["timeouts"],
        "gateway_cpu_us_per_request": gateway_cpu / requests * 1e6,
        # nginx is outside ``own``: its share shows here too, so this is an upper bound on neighbours
        "other_load_pct": max(0.0, (system_busy_seconds() - busy_before - own - gateway_cpu) / wall * 100.0),
    }


def hook_costs(n: int = 3000) -> dict[str, float]:
    """CPU µs per request of the telemetry hooks alone, in this process (export thread included)."""
    import asyncio

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from opsgate.domain.context import JsonResult, RequestContext
    from opsgate.domain.requests import ChatCompletionRequest
    from opsgate.domain.telemetry_config import MetricsConfig, TracingConfig
    from opsgate.telemetry.metrics import RequestMetrics
    from opsgate.telemetry.tracing import Deployment, Tracing

    class EncodeOnly(SpanExporter):
        """Does the exporter's CPU work (protobuf encoding) without the network."""

        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    record = {"endpoint": "chat", "model": "fake", "deployment": "fake#0", "status": 200, "tenant": None}
    record |= {"latency_ms": 3.2, "prompt_tokens": 12, "completion_tokens": 7, "cost": 2.6e-05, "cached": False}
    record |= {"tags": {"attempts": 1}}
    metrics = RequestMetrics(MetricsConfig(), ["fake"])
    start = time.process_time()
    for _ in range(n):
        metrics.write(record)
    out = {"metrics_sink_us": (time.process_time() - start) / n * 1e6}
    body = ChatCompletionRequest.model_validate(REQUEST_BODY)

    async def noop() -> None:
        return None

    for name, ratio in (("tracing_unsampled_us", 0.0), ("tracing_sampled_us", 1.0)):
        config = TracingConfig(otlp_endpoint="http://127.0.0.1:9/v1/traces", sample_ratio=ratio)
        tracing = Tracing(config, {"fake#0": Deployment("openai", "fake-model")}, exporter=EncodeOnly())

        async def requests(tracing: Tracing = tracing) -> None:
            for _ in range(n):
                ctx = RequestContext(endpoint="chat", raw_body=b"", headers={}, body=body, deployment="fake#0")
                tracing.begin(ctx)
                await tracing.attempt(ctx, "fake#0", 0, noop())
                tracing.finish(ctx, JsonResult(dict(UPSTREAM_BODY)))

        start = time.process_time()
        asyncio.run(requests())
        tracing.provider.force_flush()
        out[name] = (time.process_time() - start) / n * 1e6
        tracing.shutdown()
    return {k: round(v, 1) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, alternating the order of the gateways")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--sample-ratio", type=float, default=0.02, help="the sampled tracing variant's ratio")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--hooks-only", action="store_true", help="only time the hooks in process; no load runs")
    args = parser.parse_args()
    hooks = hook_costs()
    print(f"telemetry hooks, CPU µs per request in process: {hooks}", file=sys.stderr)
    if args.hooks_only:
        return
    wrk = need("wrk")
    gateway_cpus, load_cpus = plan_cpus(not args.no_pin)
    names = ["off", "metrics", "metrics+tracing", f"metrics+tracing@{args.sample_ratio:g}"]
    runs: list[dict[str, Any]] = []
    info = machine()
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-telemetry-") as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        script = tmp / "wrk.lua"
        script.write_text(WRK_SCRIPT.format(body=json.dumps(REQUEST_BODY), auth=""))  # auth is off here
        base, _nginx_pid = stack.enter_context(nginx_upstream(tmp, load_cpus))
        started = {name: stack.enter_context(gateway(name, base, gateway_cpus, tmp)) for name in names}
        for name, (port, _pid) in started.items():
            check(name, port)
        order = list(started.items())
        for round_ in range(args.rounds):
            for connections in args.connections:
                for name, (port, pid) in order if round_ % 2 == 0 else list(reversed(order)):
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    run = measure(wrk, script, url, pid, connections, args, load_cpus)
                    runs.append(run | {"telemetry": name, "round": round_ + 1})
                    print(
                        f"  round {round_ + 1} c={connections:<3} {name:<16} {run['rps']:>8,.0f} req/s  "
                        f"p50 {run['p50_ms']:6.3f} ms  CPU {run['gateway_cpu_us_per_request']:5.0f} µs/req  "
                        f"errors {run['errors']}  other load {run['other_load_pct']:.0f}%",
                        file=sys.stderr,
                    )
    report(runs, names, args, info, gateway_cpus, load_cpus, hooks)


def report(
    runs: list[dict[str, Any]],
    names: list[str],
    args: argparse.Namespace,
    info: dict[str, Any],
    gcpus: set[int] | None,
    lcpus: set[int] | None,
    hooks: dict[str, float],
) -> None:
    """Print medians over rounds against ``off`` and write bench/results/telemetry.json."""
    summary: list[dict[str, Any]] = []
    for connections in args.connections:
        for name in names:
            mine = [r for r in runs if r["telemetry"] == name and r["connections"] == connections]
            keys = ("rps", "p50_ms", "p99_ms", "gateway_cpu_us_per_request", "other_load_pct")
            row = {key: median([r[key] for r in mine]) for key in keys}
            summary.append(
                {"telemetry": name, "connections": connections, "rounds": len(mine), **row}
                | {"errors": sum(r["errors"] for r in mine)}
            )
    base = {r["connections"]: r for r in summary if r["telemetry"] == "off"}
    lines = [
        "| connections | telemetry | req/s | vs off | p50 ms | p99 ms | CPU µs/req | +CPU µs/req | CPU vs off"
        " | errors |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary:
        off = base[row["connections"]]
        row["rps_vs_off"] = row["rps"] / off["rps"]
        row["added_cpu_us_per_request"] = row["gateway_cpu_us_per_request"] - off["gateway_cpu_us_per_request"]
        # Throughput a saturated single worker loses = the added CPU share of each request.
        row["cpu_vs_off"] = row["gateway_cpu_us_per_request"] / off["gateway_cpu_us_per_request"]
        lines.append(
            f"| {row['connections']} | {row['telemetry']} | {row['rps']:,.0f} | {row['rps_vs_off']:.3f} "
            f"| {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['gateway_cpu_us_per_request']:.0f} "
            f"| {row['added_cpu_us_per_request']:+.0f} | {row['cpu_vs_off']:.3f} | {row['errors']} |"
        )
    table = "\n".join(lines)
    print(table)
    if any(r["errors"] for r in summary):
        print("some runs had errors: their numbers do not count", file=sys.stderr)
    path = write_json(
        "telemetry.json",
        {
            "benchmark": "telemetry",
            "machine": info,
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "rounds": args.rounds,
                "connections": args.connections,
                "sample_ratio": args.sample_ratio,
                "gateway_cpus": sorted(gcpus) if gcpus else None,
                "load_cpus": sorted(lcpus) if lcpus else None,
                "request_body": REQUEST_BODY,
                "command": " ".join([".venv/bin/python", "bench/telemetry.py", *sys.argv[1:]]),
            },
            "hooks_cpu_us_per_request": hooks,
            "summary": summary,
            "runs": runs,
            "markdown": table,
        },
    )
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
