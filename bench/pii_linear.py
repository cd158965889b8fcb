"""Probe-guard finding 5: PII input scan CPU on the probe's hostile inputs, two trees side by side in one process.

    git worktree add /tmp/pii-base 2aca9cd
    nice -n 10 .venv/bin/python bench/pii_linear.py --base /tmp/pii-base/src --new src [--runs 5]

Each sample scans the same new text (a unique suffix, so the digest cache never answers) with both trees in
alternating order; thread CPU time; median of --runs samples per (family, size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pii_ab import _tree

FAMILIES = {
    "1-2-3-… (dashes)": "1-2-3-4-5-6-7-8-9-0-",
    "1.2.3.… (dots)": "1.2.3.4.5.6.7.8.",
    "1 2 3 … (spaces)": "1 2 3 4 5 6 7 8 9 0 ",
    "12-34-56-…": "12-34-56-78-90-",
    "1/2/3/…": "1/2/3/4/",
    "(12) 34 (56) …": "(12) 34 (56) ",
    "1+2+3+…": "1+2+3+4+",
    "+1 (555) 01-23-4 (phone near-miss)": "+1 (555) 01-23-4 ",
    "4111-1111-1111-1112- (card dashes)": "4111-1111-1111-1112-",
    "4111 1111 1111 1112 (card near-miss)": "4111 1111 1111 1112 ",
    "GB82 WEST 1234 5698 7654 33 (IBAN near-miss)": "GB82 WEST 1234 5698 7654 33 ",
    "a.b.c.d.e@f.g.h.i.j@ (email near-miss)": "a.b.c.d.e@f.g.h.i.j@ ",
    "a-1-a-1-…": "a-1-",
    "unicode mix (probe p3: fullwidth, zero-width, Arabic digits)": (
        "\u00c4 \uff49\uff47\uff4e\uff4f\uff52\uff45 \u200b\u0661\u0662\u0663 "
    ),
    "zero-width/fullwidth emails (finding 8)": "j\u200ba\u200bn\u200be\uff20x\u00ad.org ",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    trees = {"base": _tree(args.base), "new": _tree(args.new)}
    scanners = {}
    for label, tree in trees.items():
        config = tree["domain.guard_config"].PiiScannerConfig(scanner="pii", reversible=True, ner="fast")
        scanners[label] = tree["guard.pii"].PiiScanner(config)

    def scan(label: str, text: str) -> float:
        base = trees[label]["guard.base"]
        started = time.thread_time()
        scanners[label].scan(text, base.ScanContext("input", vault=base.Vault()))
        return (time.thread_time() - started) * 1000

    print("| input | size | base ms | new ms | base/new |")
    print("|---|---:|---:|---:|---:|")
    sample = 0
    for name, unit in FAMILIES.items():
        for size in (4096, 16384, 32768):
            times: dict[str, list[float]] = {"base": [], "new": []}
            for index in range(args.runs):
                sample += 1
                tail = f" zq{sample}x"
                text = (unit * (size // len(unit) + 1))[: size - len(tail)] + tail
                for label in ("base", "new") if index % 2 else ("new", "base"):
                    times[label].append(scan(label, text))
            base, new = statistics.median(times["base"]), statistics.median(times["new"])
            print(f"| {name} | {size // 1024} KB | {base:.1f} | {new:.1f} | {base / new:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
