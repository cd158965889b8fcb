"""CPU cost of the body-shape check (pipeline/body_shape.py): this tree's validation path beside an earlier one's.

    nice -n 10 .venv/bin/python bench/body_shape.py                        # vs 65e5484^ (no shape check)
    nice -n 10 .venv/bin/python bench/body_shape.py --base-ref 7ff3943^    # vs the check with byte counts
    git archive 65e5484^ src | tar -x -C /tmp/base && .venv/bin/python bench/body_shape.py --base /tmp/base/src

Both trees' ``opsgate`` are imported into this process (``bench/_base_tree.py``). A side's path is what
ValidationStage does with the raw body: its ``BodyShape.check`` when the tree has one (65e5484 added it),
then ``model_validate_json`` and ``check_values``. A refused body stops at the refusal. "check alone" is
``BodyShape.check`` by itself. Time is this thread's CPU time (``time.thread_time``) per call, a batch of
calls per round; the sides alternate which goes first; the median of the rounds is reported, with the
ratio new/base. The machine is shared: read the ratios, not the absolute times.

Bodies: a 1 KB chat and a 30 KB agent chat (60 messages, 20 tools), accepted; 300k token ids of
embeddings and 4 MB of prose full of ``, [ {`` (the check's worst accepted case); the probe's five 4 MB
structure-heavy shapes, refused by the new check (the base validated them whole).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
from rich.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _base_tree import base_src, import_tree  # noqa: E402
from _common import machine, write_json  # noqa: E402

MODULES = ("domain.requests", "domain.errors", "pipeline.validation")
Call = Callable[[], None]


def _fill(prefix: bytes, item: bytes, suffix: bytes, size: int = 4 * 1024 * 1024 - 1024) -> bytes:
    count = (size - len(prefix) - len(suffix)) // (len(item) + 1)
    return prefix + b",".join([item] * count) + suffix


def bodies() -> list[tuple[str, bytes, str, int, int]]:
    """(label, body, endpoint, calls per round, rounds) for each case."""
    one_kb = orjson.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "You are a careful assistant. " * 6},
                {
                    "role": "user",
                    "content": "Summarise the following notes, briefly: " + "lorem ipsum dolor sit amet, " * 25,
                },
            ],
            "temperature": 0.2,
            "max_tokens": 200,
            "metadata": {"team": "search"},
        }
    )
    tool = {"type": "object", "properties": {"a": {"type": "string"}}}
    agent = orjson.dumps(
        {
            "model": "m",
            "messages": [
                {"role": "user" if i % 2 else "assistant", "content": f"step {i}: " + "x y z, " * 60} for i in range(60)
            ],
            "tools": [{"type": "function", "function": {"name": f"t{i}", "parameters": tool}} for i in range(20)],
        }
    )
    ids = "[" + ",".join(["1234"] * 150) + "]"
    embeddings = ('{"model":"m","input":[' + ",".join([ids] * 2000) + "]}").encode()
    prose = b'{"model":"m","messages":[{"role":"user","content":"' + b"a, b [c] {d}, " * 290_000 + b'"}]}'
    chat = b'{"model":"m","messages":[{"role":"user","content":"x"}],'
    metadata = chat + b'"metadata":{' + b",".join(b'"%x":""' % i for i in range(380_000)) + b"}}"
    return [
        ("1 KB chat (accepted)", one_kb, "chat", 2000, 15),
        ("30 KB agent chat, 60 messages, 20 tools (accepted)", agent, "chat", 200, 11),
        ("embeddings, 2,000 x 150 token ids (accepted)", embeddings, "embedding", 1, 5),
        ("4 MB prose full of , [ { (accepted)", prose, "chat", 1, 5),
        (
            "4 MB: 140k content parts (refused)",
            _fill(b'{"model":"m","messages":[{"role":"user","content":[', b'{"type":"text","text":"a"}', b"]}]}"),
            "chat",
            1,
            3,
        ),
        (
            "4 MB: 62k+ tools (refused)",
            _fill(chat + b'"tools":[', b'{"type":"function","function":{"name":"f"}}', b"]}"),
            "chat",
            1,
            3,
        ),
        (
            "4 MB: 140k messages (refused)",
            _fill(b'{"model":"m","messages":[', b'{"role":"user","content":"a"}', b"]}"),
            "chat",
            1,
            3,
        ),
        ("4 MB: 380k metadata keys (refused)", metadata, "chat", 1, 3),
        ("4 MB: empty arrays in an extra field (refused)", _fill(chat + b'"x":[', b"[]", b"]}"), "chat", 1, 3),
    ]


class Side:
    """One tree's validation path: its shape check (if it has one), then pydantic and check_values."""

    def __init__(self, modules: dict[str, ModuleType], shape: ModuleType | None, config: ModuleType | None) -> None:
        requests, validation = modules["domain.requests"], modules["pipeline.validation"]
        self.models = {"chat": requests.ChatCompletionRequest, "embedding": requests.EmbeddingRequest}
        self.check_values = validation.check_values
        self.refusal: type[Exception] = modules["domain.errors"].InvalidRequestError
        self.shape = shape.BodyShape(config.BodyShapeConfig()) if shape and config else None

    def path(self, raw: bytes, endpoint: str) -> Call:
        def run() -> None:
            try:
                if self.shape is not None:
                    self.shape.check(raw, endpoint)
                self.check_values(self.models[endpoint].model_validate_json(raw))
            except Exception:  # a refusal (400) ends the path, as in ValidationStage
                return

        return run

    def check_alone(self, raw: bytes, endpoint: str) -> Call | None:
        shape = self.shape
        if shape is None:
            return None

        def run() -> None:
            try:
                shape.check(raw, endpoint)
            except self.refusal:
                return

        return run


def load(src: Path) -> Side:
    """The validation path of the tree under ``src``."""
    try:
        modules = import_tree(src, (*MODULES, "pipeline.body_shape", "domain.body_shape_config"))
    except ModuleNotFoundError:  # before 65e5484: no shape check
        modules = import_tree(src, MODULES)
    return Side(modules, modules.get("pipeline.body_shape"), modules.get("domain.body_shape_config"))


def per_call_us(call: Call, reps: int) -> float:
    started = time.thread_time()
    for _ in range(reps):
        call()
    return (time.thread_time() - started) / reps * 1e6


def measure(sides: dict[str, Side], progress: Progress) -> dict[str, Any]:
    """Median per-call CPU (us) of each side's path and check alone, per body, and the ratios."""
    cases = bodies()
    task = progress.add_task("bodies", total=len(cases))
    out: dict[str, Any] = {}
    for label, raw, endpoint, reps, rounds in cases:
        calls: dict[str, Call] = {}
        for name, side in sides.items():
            calls[f"{name} path"] = side.path(raw, endpoint)
            alone = side.check_alone(raw, endpoint)
            if alone is not None:
                calls[f"{name} check alone"] = alone
        for call in calls.values():
            call()  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in calls}
        load_before = os.getloadavg()[0]
        for index in range(rounds):
            order = list(calls) if index % 2 else list(reversed(calls))
            for name in order:
                samples[name].append(per_call_us(calls[name], reps))
        row: dict[str, Any] = {"bytes": len(raw), "calls_x_rounds": f"{reps} x {rounds}"}
        row.update({name: round(statistics.median(values), 2) for name, values in samples.items()})
        row["new/base path"] = round(row["new path"] / row["base path"], 3)
        row["load_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        out[label] = row
        progress.console.print(f"{label}: {json.dumps(row)}")
        progress.advance(task)
    return out


def table(result: dict[str, Any]) -> str:
    """A Markdown table, one row per body, times in us (ms from 1,000 us)."""

    def show(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value / 1000:.1f} ms" if value >= 1000 else f"{value:.1f} us"

    lines = [
        f"| body | bytes | base ({result['base']}) path | new path | base check alone | new check alone | new/base |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, row in result["bodies"].items():
        lines.append(
            f"| {label} | {row['bytes']:,} | {show(row['base path'])} | {show(row['new path'])}"
            f" | {show(row.get('base check alone'))} | {show(row['new check alone'])} | {row['new/base path']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, help="src/ of the tree to compare with (unpacked by git archive)")
    parser.add_argument("--base-ref", help="a commit to unpack and compare with when --base is not given")
    parser.add_argument("--new", type=Path, default=ROOT / "src", help="src/ of the tree measured")
    parser.add_argument("--output", default="body_shape.json", help="file name under bench/results/")
    args = parser.parse_args()
    src, label = base_src(args.base, args.base_ref, "65e5484^")
    sides = {"base": load(src), "new": load(args.new)}
    gc.collect()
    gc.freeze()  # as the gateway does after start-up
    with Progress() as progress:
        result = {"machine": machine(), "base": label, "bodies": measure(sides, progress)}
    path = write_json(args.output, result)
    print(table(result))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
