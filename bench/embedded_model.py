"""Embedded model speed: llama-cpp-python called directly vs the same GGUF streamed through opsgate.

What it does, in one run:
  1. starts ``opsgate serve`` with the embedded default config (SmolLM2-135M Q4_1 on llama.cpp,
     n_threads=1) in its own process and temp working directory (the default config's durable request
     log goes there) and waits for /readyz; reads its RSS;
  2. loads the same GGUF in this process with ``Llama(model_path, n_threads=1, n_threads_batch=1,
     n_ctx=2048, verbose=False)`` (n_threads_batch=1 because the gateway uses 1 for prompts too);
  3. one warm-up of each, then REPS repetitions of each, alternating which goes first, never both at
     once: direct is ``create_chat_completion(stream=True, temperature=0, max_tokens=N)``; gateway is a
     streaming POST /v1/chat/completions with ``stream_options.include_usage``;
  4. per repetition: time to first content token (TTFT, from the call or the request send), and the
     decode rate (tokens after the first / time from the first to the last content token);
  5. prints a Markdown table and writes bench/results/embedded_model.json.

The prompt is fixed, so after the warm-up both sides reuse the prompt's KV cache (llama.cpp prefix
matching): TTFT is then the cost of one decode step plus everything around it, which is what the
gateway can add. The warm-up (cold) TTFTs are reported separately.

Run:

    .venv/bin/python bench/embedded_model.py
    .venv/bin/python bench/embedded_model.py --reps 8 --max-tokens 128
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    VENV_BIN,
    child,
    free_port,
    machine,
    median,
    rss_mib,
    wait_http_ok,
    wait_quiet,
    write_json,
)

PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."
TARGET_RATIO = 0.95
TARGET_TTFT_MS = 5.0


@dataclass
class Rep:
    """One generation."""

    side: str  # "direct" or "gateway"
    index: int  # -1 for the warm-up
    ttft_ms: float
    decode_tps: float
    completion_tokens: int
    total_s: float
    finish_reason: str | None
    text: str


def run_direct(llama: Any, max_tokens: int, index: int) -> Rep:
    """One streamed chat completion straight from llama-cpp-python."""
    messages = [{"role": "user", "content": PROMPT}]
    started = time.perf_counter()
    first = last = None
    pieces: list[str] = []
    finish = None
    for chunk in llama.create_chat_completion(messages, stream=True, temperature=0.0, max_tokens=max_tokens):
        choice = chunk["choices"][0]
        content = choice["delta"].get("content")
        if content:
            now = time.perf_counter()
            first = first or now
            last = now
            pieces.append(content)
        finish = choice.get("finish_reason") or finish
    ended = time.perf_counter()
    if first is None or last is None:
        raise RuntimeError("direct generation produced no content")
    # llama-cpp-python streams carry no usage; each content chunk is one generated token.
    tokens = len(pieces)
    return Rep(
        "direct",
        index,
        (first - started) * 1000.0,
        _rate(tokens, first, last),
        tokens,
        ended - started,
        finish,
        "".join(pieces),
    )


def run_gateway(port: int, max_tokens: int, index: int) -> Rep:
    """One streamed chat completion through the gateway over HTTP (http.client: the lightest client)."""
    body = json.dumps(
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0,
            "max_tokens": max_tokens,
        }
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        started = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}: {response.read()[:500]!r}")
        first = last = None
        pieces: list[str] = []
        usage: dict[str, Any] | None = None
        finish = None
        done = False
        while True:
            line = response.readline()
            if not line:
                break
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"gateway stream error: {chunk['error']}")
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    pieces.append(content)
                finish = choice.get("finish_reason") or finish
            if chunk.get("usage"):
                usage = chunk["usage"]
        ended = time.perf_counter()
    finally:
        conn.close()
    if not done or first is None or last is None or usage is None:
        raise RuntimeError(f"gateway stream incomplete (done={done}, usage={usage}, content={bool(pieces)})")
    tokens = int(usage["completion_tokens"])
    return Rep(
        "gateway",
        index,
        (first - started) * 1000.0,
        _rate(tokens, first, last),
        tokens,
        ended - started,
        finish,
        "".join(pieces),
    )


def _rate(tokens: int, first: float, last: float) -> float:
    """Decode tokens/s: the tokens after the first over the time from the first to the last."""
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def summarise(reps: list[Rep]) -> dict[str, dict[str, float]]:
    """Median, min and max of TTFT and decode rate per side (measured repetitions only)."""
    out: dict[str, dict[str, float]] = {}
    for side in ("direct", "gateway"):
        mine = [r for r in reps if r.side == side and r.index >= 0]
        ttft = [r.ttft_ms for r in mine]
        tps = [r.decode_tps for r in mine]
        out[side] = {
            "reps": len(mine),
            "ttft_ms_median": median(ttft),
            "ttft_ms_min": min(ttft),
            "ttft_ms_max": max(ttft),
            "decode_tps_median": median(tps),
            "decode_tps_min": min(tps),
            "decode_tps_max": max(tps),
            "completion_tokens_median": median([r.completion_tokens for r in mine]),
            "total_s_median": median([r.total_s for r in mine]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=8, help="measured repetitions per side (default 8)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads on both sides (default 1)")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="wait up to this long for the (shared) machine to go idle before measuring",
    )
    parser.add_argument("--output", default="embedded_model.json", help="file name under bench/results/")
    args = parser.parse_args()
    info = machine()  # before the run: the commit and the date the numbers belong to

    from llama_cpp import Llama
    from llama_cpp import __version__ as llama_version

    from opsgate.backends.llama_engine import default_gguf_path

    model_path = default_gguf_path()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-") as tmp_name:
        log = Path(tmp_name) / "opsgate.log"
        argv = [str(VENV_BIN / "opsgate"), "serve", "--port", str(port), "--log-level", "warning"]
        env = {"OPSGATE_LLAMA_THREADS": str(args.threads)}
        # its own working directory: the default config's durable request log lives under ./.opsgate
        with child(argv, env=env, log=log, cwd=Path(tmp_name)) as gateway:
            started = time.perf_counter()
            wait_http_ok(f"http://127.0.0.1:{port}/readyz", gateway, 180, "opsgate", log)
            ready_s = time.perf_counter() - started
            rss_loaded = rss_mib(gateway.pid)
            print(f"gateway ready in {ready_s:.1f}s, RSS {rss_loaded:.0f} MiB", file=sys.stderr)

            own_before = rss_mib(os.getpid())
            llama = Llama(
                model_path=str(model_path),
                n_threads=args.threads,
                n_threads_batch=args.threads,
                n_ctx=2048,
                verbose=False,
            )
            own_loaded = rss_mib(os.getpid())

            if args.wait_quiet > 0:
                # the gateway's idle process and this one are the only load we want from here on
                busy = wait_quiet(15.0, args.wait_quiet)
                print(f"machine busy before measuring: {busy:.0f}% of one core", file=sys.stderr)

            reps: list[Rep] = [run_direct(llama, args.max_tokens, -1), run_gateway(port, args.max_tokens, -1)]
            for index in range(args.reps):
                order = ("direct", "gateway") if index % 2 == 0 else ("gateway", "direct")
                for side in order:
                    rep = (
                        run_direct(llama, args.max_tokens, index)
                        if side == "direct"
                        else run_gateway(port, args.max_tokens, index)
                    )
                    reps.append(rep)
                    print(
                        f"  rep {index} {side:<7} TTFT {rep.ttft_ms:7.1f} ms  {rep.decode_tps:6.1f} tok/s  "
                        f"{rep.completion_tokens} tokens  {rep.finish_reason}",
                        file=sys.stderr,
                    )
            rss_after = rss_mib(gateway.pid)
            hwm = _vm_hwm(gateway.pid)

    stats = summarise(reps)
    direct, gw = stats["direct"], stats["gateway"]
    ratio = gw["decode_tps_median"] / direct["decode_tps_median"]
    ttft_diff = gw["ttft_ms_median"] - direct["ttft_ms_median"]
    measured_texts = {r.text for r in reps if r.index >= 0}
    cold_texts = {r.text for r in reps if r.index < 0}
    same_text = len(measured_texts) == 1 and len(cold_texts) == 1
    warm = {r.side: r.ttft_ms for r in reps if r.index < 0}
    ratio_ok = "met" if ratio >= TARGET_RATIO else "NOT met"
    ttft_ok = "met" if abs(ttft_diff) <= TARGET_TTFT_MS else "NOT met"

    rows = []
    for side, s in stats.items():
        ttft = f"{s['ttft_ms_median']:.1f} ({s['ttft_ms_min']:.1f}-{s['ttft_ms_max']:.1f})"
        tps = f"{s['decode_tps_median']:.1f} ({s['decode_tps_min']:.1f}-{s['decode_tps_max']:.1f})"
        rows.append(
            f"| {side} | {s['reps']:.0f} | {ttft} | {tps} | {s['completion_tokens_median']:.0f} "
            f"| {s['total_s_median']:.2f} |"
        )
    table = "\n".join(
        [
            "| side | reps | TTFT ms median (range) | decode tok/s median (range) | tokens | s per request |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"- gateway/direct decode rate: {ratio:.3f} (target ≥ {TARGET_RATIO:.2f}: {ratio_ok})",
            f"- TTFT difference (gateway - direct, medians, warm prompt cache): {ttft_diff:+.1f} ms "
            f"(target within {TARGET_TTFT_MS:g} ms: {ttft_ok})",
            f"- cold first request (warm-up) TTFT: direct {warm['direct']:.0f} ms, gateway {warm['gateway']:.0f} ms",
            f"- gateway RSS: {rss_loaded:.0f} MiB once ready (SmolLM2 + MiniLM loaded), "
            f"{rss_after:.0f} MiB after the run (peak {hwm:.0f} MiB); "
            f"loading the Llama directly added {own_loaded - own_before:.0f} MiB to the bench process",
            f"- direct and gateway generated the same text: {'yes' if same_text else 'NO'}",
        ]
    )
    print(table)
    result = {
        "benchmark": "embedded_model",
        "machine": info,
        "settings": {
            "reps": args.reps,
            "max_tokens": args.max_tokens,
            "threads": args.threads,
            "prompt": PROMPT,
            "model_path": str(model_path),
            "llama_cpp_python": llama_version,
            "command": " ".join([".venv/bin/python", "bench/embedded_model.py", *sys.argv[1:]]),
        },
        "summary": {
            "direct": direct,
            "gateway": gw,
            "decode_ratio": round(ratio, 4),
            "ttft_diff_ms": round(ttft_diff, 2),
            "cold_ttft_ms": warm,
            "gateway_ready_s": round(ready_s, 2),
            "gateway_rss_mib_ready": round(rss_loaded, 1),
            "gateway_rss_mib_after": round(rss_after, 1),
            "gateway_rss_mib_peak": round(hwm, 1),
            "direct_llama_rss_mib_added": round(own_loaded - own_before, 1),
            "identical_text": same_text,
        },
        "reps": [asdict(r) | {"text": r.text[:80]} for r in reps],
        "markdown": table,
    }
    print(f"\nwrote {write_json(args.output, result).relative_to(ROOT)}", file=sys.stderr)


def _vm_hwm(pid: int) -> float:
    """Peak RSS (VmHWM) of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


if __name__ == "__main__":
    main()
