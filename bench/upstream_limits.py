"""Per-chunk CPU of the upstream stream relay (and the cache's assembler): this tree beside an earlier one's.

    nice -n 10 .venv/bin/python bench/upstream_limits.py                        # vs 6c0b37b (before aeb4ff4,
    nice -n 10 .venv/bin/python bench/upstream_limits.py --base-ref 04f259b^    #  3232c58, 04f259b) / vs 04f259b^
    git archive 6c0b37b src | tar -x -C /tmp/base && .venv/bin/python bench/upstream_limits.py --base /tmp/base/src

Both trees' ``opsgate`` are imported into this process (``bench/_base_tree.py``), each with its own config
and context classes. Timed: ``UpstreamBackend._relay`` consuming a real ``aiohttp.StreamReader`` fed with
OpenAI chat chunks (~150 bytes each, ``data: {...}\\n\\n``), one event per network read and 64 per read;
``StreamAssembler.add`` (the response cache's per-chunk work, cache on only) on the same chunks; and one
big event (a whole answer in one delta) read in 64 KiB network pieces. Time is this thread's CPU time
(``time.thread_time``); the sides alternate which goes first every round; medians (min-max) of the
rounds and the ratio new/base are reported. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _base_tree import base_src, import_tree  # noqa: E402
from _common import machine, write_json  # noqa: E402

MODULES = ("backends.upstream", "cache.streams", "domain.config", "domain.context")
HEAD = {"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1, "model": "m"}
DONE = b"data: [DONE]\n\n"


class _Protocol:
    """What ``aiohttp.StreamReader`` asks of its protocol (flow control), doing nothing."""

    _reading_paused = False

    def pause_reading(self, *args: object, **kwargs: object) -> None:
        return None

    def resume_reading(self, *args: object, **kwargs: object) -> None:
        return None


class _Response:
    """The part of ``aiohttp.ClientResponse`` the relay uses."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content

    def release(self) -> None:
        return None

    def close(self) -> None:
        return None


def events(count: int) -> list[bytes]:
    """``count`` SSE chat chunks of one short token each, then ``[DONE]``."""
    out = []
    for index in range(count):
        choice = {"index": 0, "delta": {"content": f" tok{index}"}, "logprobs": None, "finish_reason": None}
        out.append(b"data: " + json.dumps({**HEAD, "choices": [choice]}).encode() + b"\n\n")
    out.append(DONE)
    return out


def _relay(tree: dict[str, ModuleType], pieces: list[bytes]) -> AsyncIterator[Any]:
    """The tree's relay over a reader already fed with ``pieces`` (must run inside the event loop)."""
    reader = aiohttp.StreamReader(_Protocol(), 2**18, loop=asyncio.get_running_loop())  # type: ignore[arg-type]
    for piece in pieces:
        reader.feed_data(piece)
    reader.feed_eof()
    deployment = tree["domain.config"].UpstreamDeployment(type="openai", base_url="http://127.0.0.1:9/v1", model="m")
    backend = tree["backends.upstream"].UpstreamBackend(deployment, "up#0")
    response = _Response(reader)
    if "ctx" in inspect.signature(backend._relay).parameters:  # 04f259b passes the request's context
        ctx = tree["domain.context"].RequestContext(endpoint="chat", raw_body=b"", headers={})
        return backend._relay(response, ctx)  # type: ignore[no-any-return]
    return backend._relay(response)  # type: ignore[no-any-return]


async def relay_cpu(tree: dict[str, ModuleType], pieces: list[bytes]) -> tuple[float, int]:
    """(CPU seconds, chunks yielded) of one relay over ``pieces``."""
    relay = _relay(tree, pieces)
    count = 0
    started = time.thread_time()
    async for _ in relay:
        count += 1
    return time.thread_time() - started, count


def assembler_cpu(tree: dict[str, ModuleType], chunks: list[dict[str, Any]]) -> float:
    """CPU us per chunk of the cache's ``StreamAssembler.add``."""
    assembler = tree["cache.streams"].StreamAssembler("chat")
    started = time.thread_time()
    for chunk in chunks:
        assembler.add(chunk)
    return (time.thread_time() - started) / len(chunks) * 1e6


def _summary(samples: dict[str, list[float]], digits: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        name: {
            "median": round(statistics.median(v), digits),
            "min": round(min(v), digits),
            "max": round(max(v), digits),
        }
        for name, v in samples.items()
    }
    if len(samples) == 2:
        row["new/base"] = round(row["new"]["median"] / row["base"]["median"], 3)
    return row


async def measure(
    trees: dict[str, dict[str, ModuleType]], chunks: int, rounds: int, progress: Progress
) -> dict[str, Any]:
    """Per-chunk relay and assembler CPU, then the big events, each side every round."""
    stream = events(chunks)
    parsed = [json.loads(event[6:]) for event in stream[:-1]]
    cases = {
        "relay, one event per network read (us/chunk)": stream,
        "relay, 64 events per network read (us/chunk)": [
            b"".join(stream[i : i + 64]) for i in range(0, len(stream), 64)
        ],
    }
    out: dict[str, Any] = {}
    task = progress.add_task("per chunk", total=rounds)
    samples: dict[str, dict[str, list[float]]] = {label: {"base": [], "new": []} for label in [*cases, "assembler"]}
    for index in range(rounds):
        order = ["base", "new"] if index % 2 else ["new", "base"]
        for label, pieces in cases.items():
            for name in order:
                seconds, count = await relay_cpu(trees[name], pieces)
                samples[label][name].append(seconds / count * 1e6)
        for name in order:
            samples["assembler"][name].append(assembler_cpu(trees[name], parsed))
        progress.advance(task)
    for label, values in samples.items():
        key = "cache assembler add, cache on (us/chunk)" if label == "assembler" else label
        out[key] = _summary(values, 2)
        progress.console.print(f"{key}: {json.dumps(out[key])}")
    for size in (400_000, 16_000_000):
        choice = {"index": 0, "delta": {"content": "x" * size}, "finish_reason": None}
        line = b"data: " + json.dumps({**HEAD, "choices": [choice]}).encode() + b"\n\n"
        pieces = [line[i : i + 65536] for i in range(0, len(line), 65536)] + [DONE]
        big: dict[str, list[float]] = {}
        for index in range(5):
            for name in ["base", "new"] if index % 2 else ["new", "base"]:
                try:
                    seconds, _ = await relay_cpu(trees[name], pieces)
                except Exception as error:  # before 04f259b: aiohttp's LineTooLong past 512 KiB
                    big.pop(name, None)
                    out.setdefault("refused", {})[f"{size:,} bytes, {name}"] = type(error).__name__
                    continue
                big.setdefault(name, []).append(seconds * 1e3)
        key = f"one {size:,}-byte event (ms)"
        out[key] = _summary(big, 3)
        progress.console.print(f"{key}: {json.dumps(out[key])}")
    return out


def table(result: dict[str, Any]) -> str:
    """A Markdown table of the medians (min-max) and the ratio."""
    lines = [f"| case | base ({result['base']}) | new | new/base |", "|---|---|---|---|"]
    for label, row in result["cases"].items():
        if label == "refused":
            continue
        cells = [
            f"{row[name]['median']} ({row[name]['min']}-{row[name]['max']})" if name in row else "refused"
            for name in ("base", "new")
        ]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {row.get('new/base', '-')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="src/ of the tree to compare with (unpacked by git archive)")
    parser.add_argument("--base-ref", help="a commit to unpack and compare with when --base is not given")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree measured")
    parser.add_argument("--chunks", type=int, default=20_000, help="chunks per stream")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--output", default="upstream_limits.json", help="file name under bench/results/")
    args = parser.parse_args()
    src, label = base_src(args.base, args.base_ref, "6c0b37b")
    trees = {"base": import_tree(src, MODULES), "new": import_tree(args.new, MODULES)}
    gc.collect()
    gc.freeze()  # as the gateway does after start-up
    with Progress() as progress:
        cases = asyncio.run(measure(trees, args.chunks, args.rounds, progress))
    result = {"machine": machine(), "base": label, "chunks": args.chunks, "rounds": args.rounds, "cases": cases}
    path = write_json(args.output, result)
    print(table(result))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
