"""What evaluation costs: harness throughput, scorer throughput, and online sampling's gateway overhead.

What it does, in one run (a few minutes with the defaults):
  1. starts the fake upstream (tests/fake_upstream.py, instant answers) in its own process and an
     ``opsgate serve`` in front of it (SQLite request log on);
  2. harness: a dataset of ``--items`` (1,000) is run at ``--concurrency`` (32) with the
     deterministic scorers (exact, contains, regex, bleu, chrf, rouge_l, json_valid, length,
     refusal), results stored per item in SQLite, through the running gateway (``--base-url``
     mode) and through an in-process gateway (ASGITransport, the CLI's default); items/s for each;
  3. scorers: each scorer alone over 1,000 samples, scores/s;
  4. online sampling: two more gateways, identical except ``eval.online`` (off, and on at the
     default sample share 0.02 with the default scorers), measured side by side with wrk in
     alternating rounds: req/s and gateway CPU per request, and the difference;
  5. prints the tables and writes bench/results/evals.json.

Run (needs ``apt-get install -y wrk``):

    .venv/bin/python bench/evals.py
    .venv/bin/python bench/evals.py --items 1000 --concurrency 32 --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from _common import VENV_BIN, child, cpu_seconds, free_port, machine, median, wait_http_ok, write_json
from limits import fake_upstream
from overhead import WRK_SCRIPT, need, plan_cpus, run_wrk

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from opsgate.domain.config import parse_config
from opsgate.evals.client import gateway_client
from opsgate.evals.dataset import parse_item
from opsgate.evals.runner import RunSettings, execute
from opsgate.evals.scoring import Sample, ScorerRegistry
from opsgate.evals.store import EvalStore
from opsgate.store.record_log import open_store

console = Console(width=130)
# Variants of the "on" gateway that isolate a cost (``--diagnostic NAME``).
DIAGNOSTICS: dict[str, dict[str, Any]] = {
    "sink only (sample 0)": {"sample": 0.0},
    "no scorers": {"scorers": []},
    "cheap scorers": {"scorers": ["refusal", "json_valid", "length"]},
}
SCORERS = ("exact", "contains", r"regex:\w+", "bleu", "chrf", "rouge_l", "json_valid", "length", "refusal")
REQUEST = '{"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}'


def config_for(upstream: str, port: int, tmp: Path, name: str, online: bool | dict[str, Any]) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "models": [
            {
                "name": "fake",
                "price": {"input_per_million": 1.0, "output_per_million": 2.0},
                "deployments": [{"type": "openai", "base_url": upstream, "model": "fake-model"}],
            }
        ],
        "record": {"store": f"sqlite:///{tmp}/{name}.db", "journal_dir": str(tmp / f"{name}-journal")},
        "eval": {"online": online if isinstance(online, dict) else {"enabled": online}},
    }


@contextmanager
def gateway(
    upstream: str, tmp: Path, name: str, online: bool | dict[str, Any], cpus: set[int] | None
) -> Iterator[tuple[int, int]]:
    port = free_port()
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config_for(upstream, port, tmp, name, online)))
    log = tmp / f"{name}.log"
    argv = [str(VENV_BIN / "opsgate"), "serve", "--config", str(path), "--log-level", "warning"]
    with child(argv, cpus=cpus, log=log, cwd=tmp) as proc:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, 60, name, log)
        yield port, proc.pid


def items(n: int) -> list[Any]:
    # The fake upstream answers "Hello from upstream" to everything; references make scorers work.
    return [parse_item({"prompt": f"Say hello, number {i}.", "reference": "Hello from upstream"}) for i in range(n)]


async def harness(
    url: str | None, config: dict[str, Any] | None, tmp: Path, n: int, concurrency: int
) -> dict[str, Any]:
    store = EvalStore(open_store(f"sqlite:///{tmp}/harness-{time.monotonic_ns()}.db"))
    dataset, _ = store.save_dataset(None, "bench", items(n))
    run_id = store.create_run(None, "fake", dataset_id=dataset.id)
    registry = ScorerRegistry(extra=[])
    scorers = [registry.build(s) for s in SCORERS]
    settings = RunSettings(model="fake", max_tokens=16, concurrency=concurrency)
    parsed = parse_config(config) if config is not None else None
    async with gateway_client(base_url=url, config=parsed, connections=concurrency * 2) as client:
        started = time.perf_counter()
        outcome = await execute(client, store, run_id, None, settings, scorers, store.dataset_items(dataset.id))
        seconds = time.perf_counter() - started
    stored = len(store.finished_keys(run_id))
    return {
        "items": n,
        "ok": outcome.ok,
        "failed": outcome.failed,
        "stored": stored,
        "seconds": round(seconds, 3),
        "items_per_s": round(n / seconds, 1),
    }


async def scorer_speed(n: int) -> dict[str, float]:
    registry = ScorerRegistry(extra=[])
    sample = Sample(items(1)[0], "Hello from the upstream model, here is a short answer.")
    out = {}
    for spec in (*SCORERS, "toxicity", "pii_leak"):
        scorer = registry.build(spec)
        await scorer.score(sample)  # warm (imports, caches)
        started = time.perf_counter()
        for _ in range(n):
            await scorer.score(sample)
        out[spec] = round(n / (time.perf_counter() - started), 1)
    return out


def sink_cost(tmp: Path, n: int = 200_000) -> dict[str, float]:
    """The online evaluator's own costs, measured directly: ``write`` per record on the request path,
    and scoring + storing per sample in its worker (process CPU time, so other load does not count)."""
    from opsgate.domain.eval_config import OnlineEvalConfig
    from opsgate.evals.online import OnlineEvaluator

    store = EvalStore(open_store(f"sqlite:///{tmp}/sink.db"))
    config = OnlineEvalConfig(enabled=True, sample=0.02, max_per_second=1e9, queue_size=10**6)
    evaluator = OnlineEvaluator(config, lambda: store, {"fake"})

    async def measure() -> dict[str, float]:
        await evaluator.start()
        assert evaluator._task is not None
        evaluator._task.cancel()  # measure write() alone; the batch below is scored explicitly
        record = {
            "id": "r",
            "model": "fake",
            "status": 200,
            "endpoint": "chat",
            "tenant": None,
            "ts": time.time(),
            "input_text": "Say hello.",
            "output_text": "Hello from upstream, nice to meet you.",
            "response": '{"content": "Hello", "logprobs": {"tokens": 3, "mean": -0.2, "min": -0.5}}',
        }
        started = time.process_time()
        for _ in range(n):
            evaluator.write(record)
        write_us = (time.process_time() - started) / n * 1e6
        assert evaluator.queue is not None
        batch = [dict(record, id=f"r{i}") for i in range(min(evaluator.queue.qsize(), 2000))]
        started = time.process_time()
        for start in range(0, len(batch), 256):
            await evaluator.score_batch(batch[start : start + 256])
        sample_us = (time.process_time() - started) / len(batch) * 1e6
        return {
            "write_us_per_record": round(write_us, 3),
            "score_and_store_us_per_sample": round(sample_us, 1),
            "samples_measured": len(batch),
        }

    return asyncio.run(measure())


def online_overhead(args: argparse.Namespace, upstream: str, tmp: Path, stack: ExitStack) -> dict[str, Any]:
    wrk = need("wrk")
    proxy_cpus, load_cpus = plan_cpus(not args.no_pin)
    script = tmp / "wrk.lua"
    script.write_text(WRK_SCRIPT.format(body=REQUEST, auth="none"))
    gateways = {
        "online off": stack.enter_context(gateway(upstream, tmp, "off", False, proxy_cpus)),
        "online on (0.02)": stack.enter_context(gateway(upstream, tmp, "on", True, proxy_cpus)),
        **{
            f"diagnostic: {name}": stack.enter_context(
                gateway(upstream, tmp, f"diag-{index}", {"enabled": True, **DIAGNOSTICS[name]}, proxy_cpus)
            )
            for index, name in enumerate(args.diagnostic)
        },
    }
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
    for round_index in range(args.rounds):
        order = list(gateways) if round_index % 2 == 0 else list(reversed(gateways))
        for name in order:
            port, pid = gateways[name]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            run_wrk(wrk, script, url, args.connections, args.warmup, load_cpus)
            cpu_before = cpu_seconds(pid)
            data = run_wrk(wrk, script, url, args.connections, args.duration, load_cpus)
            cpu = cpu_seconds(pid) - cpu_before
            rps = data["requests"] / (data["duration_us"] / 1e6)
            runs[name].append(
                {
                    "rps": rps,
                    "cpu_us_per_request": cpu / max(1, data["requests"]) * 1e6,
                    "p99_ms": data["p99_us"] / 1000,
                    "errors": data["status_errors"],
                }
            )
    out: dict[str, Any] = {}
    for name, values in runs.items():
        out[name] = {key: round(median([v[key] for v in values]), 2) for key in values[0]}
        out[name]["rounds"] = values
    # Paired by round (the two runs of a round are back to back), so the machine's drift cancels.
    pairs = list(zip(runs["online off"], runs["online on (0.02)"], strict=True))
    out["throughput_change_pct"] = round((median([on["rps"] / off["rps"] for off, on in pairs]) - 1) * 100, 2)
    out["cpu_per_request_change_pct"] = round(
        (median([on["cpu_us_per_request"] / off["cpu_us_per_request"] for off, on in pairs]) - 1) * 100, 2
    )
    out["throughput_change_pct_per_round"] = [round((on["rps"] / off["rps"] - 1) * 100, 1) for off, on in pairs]
    out["cpu_change_pct_per_round"] = [
        round((on["cpu_us_per_request"] / off["cpu_us_per_request"] - 1) * 100, 1) for off, on in pairs
    ]
    out["samples_scored"] = sampled(gateways["online on (0.02)"][0])
    return out


def sampled(port: int) -> dict[str, Any]:
    """The online evaluator's counters from the gateway's /readyz."""
    from _common import http

    status, body = http("GET", f"http://127.0.0.1:{port}/readyz")
    data = json.loads(body) if status in (200, 503) else {}
    return dict(data.get("eval_online") or {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--scorer-samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--skip-online", action="store_true")
    parser.add_argument("--skip-harness", action="store_true")
    parser.add_argument("--diagnostic", action="append", default=[], choices=sorted(DIAGNOSTICS))
    args = parser.parse_args()
    results: dict[str, Any] = {"machine": machine(), "settings": vars(args)}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="opsgate-bench-evals-")))
        upstream, _ = stack.enter_context(fake_upstream(None, tmp))
        if not args.skip_harness:
            with gateway(upstream, tmp, "harness", False, None) as (port, _pid):
                http_mode = [
                    asyncio.run(harness(f"http://127.0.0.1:{port}/v1", None, tmp, args.items, args.concurrency))
                    for _ in range(2)
                ]
            in_process = [
                asyncio.run(
                    harness(None, config_for(upstream, 0, tmp, f"inproc{i}", False), tmp, args.items, args.concurrency)
                )
                for i in range(2)
            ]
            results["harness"] = {"base_url": http_mode, "in_process": in_process}
            results["scorers_per_s"] = asyncio.run(scorer_speed(args.scorer_samples))
        results["online_sink"] = sink_cost(tmp)
        if not args.skip_online:
            results["online"] = online_overhead(args, upstream, tmp, stack)
    table = Table("mode", "items", "ok", "stored", "seconds", "items/s", title="harness (best of 2)")
    for mode, values in results.get("harness", {}).items():
        best = max(values, key=lambda v: v["items_per_s"])
        table.add_row(
            mode,
            str(best["items"]),
            str(best["ok"]),
            str(best["stored"]),
            str(best["seconds"]),
            str(best["items_per_s"]),
        )
    console.print(table)
    scorers = Table("scorer", "scores/s", title="scorer throughput (one thread)")
    for name, rate in results.get("scorers_per_s", {}).items():
        scorers.add_row(name, f"{rate:,.0f}")
    console.print(scorers)
    if "online" in results:
        online = Table("gateway", "req/s", "CPU µs/request", "p99 ms", "errors", title="online sampling overhead")
        for name in [k for k in results["online"] if k.startswith(("online", "diagnostic"))]:
            row = results["online"][name]
            online.add_row(
                name,
                f"{row['rps']:.0f}",
                f"{row['cpu_us_per_request']:.0f}",
                f"{row['p99_ms']:.1f}",
                str(row["errors"]),
            )
        console.print(online)
        console.print(
            f"throughput change {results['online']['throughput_change_pct']:+.2f}%, CPU per request "
            f"{results['online']['cpu_per_request_change_pct']:+.2f}%"
        )
    path = write_json("evals.json", results)
    sink = results["online_sink"]
    console.print(
        f"online sink: write() {sink['write_us_per_record']:.2f} µs per record; scoring + storing "
        f"{sink['score_and_store_us_per_sample']:.0f} µs per sample -> at 0.02: "
        f"{sink['write_us_per_record'] + 0.02 * sink['score_and_store_us_per_sample']:.1f} µs per request"
    )
    if "online" in results:
        off_cpu = results["online"]["online off"]["cpu_us_per_request"]
        added = sink["write_us_per_record"] + 0.02 * sink["score_and_store_us_per_sample"]
        results["online"]["estimated_cpu_overhead_pct"] = round(added / off_cpu * 100, 2)
        console.print(f"= {added / off_cpu:.2%} of the gateway's {off_cpu:.0f} µs CPU per request (estimated)")
        console.print(
            f"per round: throughput {results['online']['throughput_change_pct_per_round']}, "
            f"CPU/request {results['online']['cpu_change_pct_per_round']}; scored {results['online']['samples_scored']}"
        )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
