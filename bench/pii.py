"""PII scanner: recall and precision per kind on the Faker sets, and what a scan costs per 1 KB and 32 KB,
for each name recogniser (``ner: fast`` and ``ner: spacy``) side by side.

Accuracy: span scoring (``tests/guard/pii_scoring.py``) on ``pii_faker_dev.jsonl`` (tuned on),
``pii_faker_holdout.jsonl`` (not tuned on, but looked at by earlier work) and
``pii_blind_holdout.jsonl`` (written before the fast recogniser's first result, never tuned on),
per kind and per group, with 95% Wilson intervals from scipy;
plus the structured-identifier splits of ``make_pii_sets.py``. False alarms on benign prose: the
names, places and organisations found per KB of the standard library's docstrings, which hold
almost none (Python, GNU, Unicode are organisations to the model — and to a redactor).
Ablation: the named kinds with the model alone (no cue words, legal forms or kind corrections),
and with the patterns alone (no model).

Speed: p50/p99 of ``PiiScanner.scan`` on 1 KB and 32 KB of text with PII (Faker sentences) and
without (docstrings), for the input default (every kind, NER included), the output default (no
names) and patterns only; with names, also for a text the model read before (a chat's history and
system prompt come with every turn: their chunks' entities are remembered, by digest). Also the
model's load time and resident memory. Writes
``bench/results/pii.json``. About a minute.

Run: ``.venv/bin/python bench/pii.py``.

Cost only, this tree beside an earlier commit (``git archive`` of it into a scratch folder), the trees
taking turns ``--rounds`` times, each in its own process (``bench/_pii_cost.py``: a new text every scan;
warm and cold word caches)::

    nice -n 10 .venv/bin/python bench/pii.py --cost-only --baseline-ref 244f249 --rounds 2

Accuracy only, on a labelled file with per-row ``source`` (``tests/data/guard/pii_outside.jsonl``: text
written by others, never tuned on), per source and pooled, under three span rules (``--data``)::

    nice -n 10 .venv/bin/python bench/pii.py --data tests/data/guard/pii_outside.jsonl --ner fast,spacy
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.guard.datasets import pii_rows, stdlib_paragraphs  # noqa: E402
from tests.guard.pii_scoring import MARKED, NAMED, STRUCTURED, faker_rows, group, rate, score  # noqa: E402

from _pii_cost import fill  # noqa: E402  (bench/ is the script's directory)
from opsgate.domain.guard_config import PII_ENTITIES, PiiScannerConfig  # noqa: E402
from opsgate.guard import pii as pii_module  # noqa: E402
from opsgate.guard.base import ScanContext, Vault  # noqa: E402
from opsgate.guard.pii import NerChoice, PiiDetector, PiiScanner  # noqa: E402
from opsgate.guard.pii_fast import FastNameRecognizer  # noqa: E402
from opsgate.guard.pii_ner import NER_KINDS, NameRecognizer  # noqa: E402

# Ends a span may carry in one labelling convention and not another.
_TRIM = " \t\n.,;:!?\"'()[]"


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in _TRIM:
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def _cover(start: int, end: int, spans: list[tuple[int, int]]) -> float:
    return sum(max(0, min(end, b) - max(start, a)) for a, b in spans) / max(1, end - start)


def outside_accuracy(detector: PiiDetector, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per source (and ``pooled``), per kind: recall, and precision where the source labels every entity.

    Rules: ``standard`` as ``score()`` (same kind, half of the characters covered); ``strict`` (same
    kind, the same span once spaces and punctuation at either end are trimmed); ``lenient`` (the value
    is hidden whatever kind found it; a finding is wrong only if it is mostly outside every labelled and
    unmapped span). A finding counts toward precision only if its kind is one the source labels."""
    rules = ("standard", "strict", "lenient")
    counts: dict[tuple[str, str, str], list[int]] = {}  # (source, kind, rule) -> [recalled, labelled, correct, found]
    misses: dict[str, list[str]] = {}
    false_alarms: dict[str, list[str]] = {}

    def add(source: str, kind: str, rule: str, at: int, hit: bool) -> None:
        for scope in (source, "pooled"):
            cell = counts.setdefault((scope, kind, rule), [0, 0, 0, 0])
            cell[at] += int(hit)
            cell[at + 1] += 1

    for row in rows:
        text, source = str(row["text"]), str(row["source"])
        found = detector.find(text)
        gold = [(str(e["kind"]), int(e["start"]), int(e["end"])) for e in row["entities"]]
        other = [(int(u["start"]), int(u["end"])) for u in row.get("unmapped", [])]
        for kind, start, end in gold:
            same = [(f.start, f.end) for f in found if f.kind == kind]
            hits = {
                "standard": _cover(start, end, same) >= 0.5,
                "strict": _trimmed(text, start, end) in {_trimmed(text, a, b) for a, b in same},
                "lenient": _cover(start, end, [(f.start, f.end) for f in found]) >= 0.5,
            }
            for rule in rules:
                add(source, kind, rule, 0, hits[rule])
            if not hits["standard"]:
                misses.setdefault(source, []).append(f"{kind} {text[start:end]!r} in {text[:160]!r}")
        if not row.get("labels_complete"):
            continue
        for f in found:
            if f.kind not in row["kinds_labelled"]:
                continue
            same = [(a, b) for kind, a, b in gold if kind == f.kind]
            hits = {
                "standard": _cover(f.start, f.end, same) >= 0.5,
                "strict": _trimmed(text, f.start, f.end) in {_trimmed(text, a, b) for a, b in same},
                "lenient": _cover(f.start, f.end, [(a, b) for _, a, b in gold] + other) >= 0.5,
            }
            for rule in rules:
                add(source, f.kind, rule, 2, hits[rule])
            if not hits["standard"]:
                false_alarms.setdefault(source, []).append(f"{f.kind} {f.value!r} in {text[:160]!r}")

    report: dict[str, Any] = {}
    for (scope, kind, rule), (recalled, labelled, correct, found_n) in sorted(counts.items()):
        cell = report.setdefault(scope, {}).setdefault(kind, {})
        if labelled:
            cell[f"recall_{rule}"] = rate(recalled, labelled)
        if found_n:
            cell[f"precision_{rule}"] = rate(correct, found_n)
    for scope in list(report):
        for name, members in (("named", NAMED), ("structured", STRUCTURED)):
            for rule in rules:
                cells = [counts.get((scope, k, rule), [0, 0, 0, 0]) for k in members]
                recalled, labelled, correct, found_n = (sum(c[i] for c in cells) for i in range(4))
                cell = report[scope].setdefault(f"group:{name}", {})
                if labelled:
                    cell[f"recall_{rule}"] = rate(recalled, labelled)
                if found_n:
                    cell[f"precision_{rule}"] = rate(correct, found_n)
    return {"scores": report, "misses": misses, "false_alarms": false_alarms}


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SPLITS = ("dev", "holdout", "blind")


def accuracy(detector: PiiDetector, structured_sets: bool = True) -> dict[str, Any]:
    """Per-kind and per-group recall/precision on the three Faker splits."""
    report: dict[str, Any] = {}
    for split in SPLITS:
        tallies = score(detector, faker_rows(split))
        kinds = {
            k: {"recall": rate(t.recalled, t.labelled), "precision": rate(t.correct, t.found)}
            for k, t in tallies.items()
        }
        groups = {}
        for name, members in (("structured", STRUCTURED), ("named", NAMED), ("marked", MARKED)):
            t = group(tallies, members)
            groups[name] = {"recall": rate(t.recalled, t.labelled), "precision": rate(t.correct, t.found)}
        report[split] = {"kinds": dict(sorted(kinds.items())), "groups": groups}
    if not structured_sets:
        return report
    structured_only = PiiDetector([e for e in PII_ENTITIES if e not in NER_KINDS], ["US", "GB", "DE", "FR"])
    for split in ("dev", "test", "holdout"):
        found = expected = correct = 0
        for row in pii_rows(split):
            want = {(e["kind"], e["value"]) for e in row["entities"]}  # type: ignore[attr-defined]
            got = {(f.kind, f.value) for f in structured_only.find(str(row["text"]))}
            found, expected, correct = found + len(got), expected + len(want), correct + len(want & got)
        report[f"structured_sets_{split}"] = {"recall": rate(correct, expected), "precision": rate(correct, found)}
    return report


def ablation(ner: NerChoice) -> dict[str, Any]:
    """Named-kind recall/precision of the parts: the model alone, and the patterns without the model."""
    out: dict[str, Any] = {}

    def measure(label: str, detector: PiiDetector) -> None:
        for split in SPLITS:
            t = group(score(detector, faker_rows(split)), NAMED)
            out[f"{label} / {split}"] = {"recall": rate(t.recalled, t.labelled), "precision": rate(t.correct, t.found)}

    with (
        mock.patch.object(pii_module, "find_cued_names", lambda text: []),
        mock.patch.object(pii_module, "find_organisations", lambda text: []),
        mock.patch.object(pii_module, "correct_kind", lambda text, finding, allowed, extend=True: finding),
    ):
        measure(
            "model and address patterns, no cue words or legal forms",
            PiiDetector(PII_ENTITIES, ner_budget_s=60, ner=ner),
        )
    if ner == "fast":
        without_model = PiiDetector(PII_ENTITIES, ner="off")
        measure("no model (ner: off): address patterns, legal forms and cue words", without_model)
    return out


def prose_false_alarms(detector: PiiDetector, paragraphs: list[str]) -> dict[str, Any]:
    """Names, places and organisations found in docstrings (no personal data), per KB."""
    counts: dict[str, int] = {}
    chars = 0
    for paragraph in paragraphs:
        chars += len(paragraph)
        for finding in detector.find(paragraph):
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
    kb = chars / 1024
    return {"kb": round(kb, 1), "per_kb": {k: round(v / kb, 3) for k, v in sorted(counts.items())}}


def timings(scanner: PiiScanner, text: str, runs: int, direction: str, seen: bool = False) -> dict[str, float]:
    """p50/p99/max milliseconds of one scan; ``seen``: the model has read the text before (chat history)."""
    samples: list[float] = []
    cpu: list[float] = []
    names = scanner.detector.names
    spacy = names if isinstance(names, NameRecognizer) else None
    if spacy is not None and seen:
        spacy.find(text, budget_s=600.0)  # the whole text read once, past any budget
    for _ in range(runs):
        if spacy is not None and not seen:
            spacy.model.seen.clear()  # a text the model has not read before
        context = ScanContext("input", vault=Vault()) if direction == "input" else ScanContext("output")
        started, cpu_started = time.perf_counter(), time.thread_time()
        scanner.scan(text, context)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - cpu_started) * 1000)
    return _summary(samples, cpu)


def _summary(samples: list[float], cpu: list[float]) -> dict[str, float]:
    """Wall-clock p50/p99/max, and the same for this thread's CPU time: on a shared machine the wall
    clock also counts the time other processes held the core, the CPU time does not."""
    samples, cpu = sorted(samples), sorted(cpu)
    at = min(len(samples) - 1, int(len(samples) * 0.99))
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[at], 3),
        "max_ms": round(samples[-1], 3),
        "cpu_p50_ms": round(statistics.median(cpu), 3),
        "cpu_p99_ms": round(cpu[at], 3),
        "runs": len(samples),
    }


def main() -> None:
    """Measure and write bench/results/pii.json."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="scans per 1 KB case (32 KB: a tenth)")
    parser.add_argument("--ner", default="fast,spacy", help="recognisers to compare, comma-separated")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "pii.json")
    parser.add_argument("--cost-only", action="store_true", help="only the input default's cost (bench/_pii_cost.py)")
    parser.add_argument("--baseline-ref", help="with --cost-only: also measure this commit, taking turns")
    parser.add_argument("--rounds", type=int, default=1, help="with --cost-only: turns per tree")
    parser.add_argument("--data", type=Path, help="only accuracy on this jsonl, per row 'source' (outside data)")
    args = parser.parse_args()
    if args.data:
        rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
        result = {
            ner: outside_accuracy(PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"], ner_budget_s=60.0, ner=ner), rows)
            for ner in args.ner.split(",")
        }
        output = args.output if args.output.name != "pii.json" else args.output.with_name("pii_outside.json")
        output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(json.dumps({ner: r["scores"] for ner, r in result.items()}, indent=2, ensure_ascii=False))
        return
    if args.cost_only:
        result = cost_side_by_side(args.runs, args.baseline_ref, args.rounds)
        output = args.output if args.output.name != "pii.json" else args.output.with_name("pii_cost.json")
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(cost_table(result))
        return
    choices: list[NerChoice] = [c for c in ("fast", "spacy") if c in args.ner.split(",")]

    report: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    scanners: dict[str, PiiScanner] = {}
    for ner in choices:
        rss_before = _rss_mib()
        started = time.perf_counter()
        scanners[ner] = PiiScanner(PiiScannerConfig(scanner="pii", reversible=True, ner=ner))
        report[f"{ner}_load_s"] = round(time.perf_counter() - started, 2)
        report[f"{ner}_max_rss_growth_mib"] = round(_rss_mib() - rss_before, 1)
    patterns = PiiScanner(PiiScannerConfig(scanner="pii", entities=[e for e in PII_ENTITIES if e not in NER_KINDS]))

    paragraphs = stdlib_paragraphs()[:400]
    for index, ner in enumerate(choices):
        detector = PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"], ner_budget_s=5.0, ner=ner)
        report[f"accuracy_{ner}"] = accuracy(detector, structured_sets=index == 0)
        report[f"ablation_named_{ner}"] = ablation(ner)
        report[f"prose_false_alarms_{ner}"] = prose_false_alarms(detector, paragraphs)

    pii_text = [str(row["text"]) for row in faker_rows("dev")]
    cases = {
        "pii_1kb": fill(pii_text, 1024),
        "pii_32kb": fill(pii_text, 32 * 1024),
        "prose_1kb": fill(paragraphs, 1024),
        "prose_32kb": fill(paragraphs, 32 * 1024),
    }
    speed: dict[str, Any] = {}
    for name, text in cases.items():
        runs = args.runs if name.endswith("1kb") else max(10, args.runs // 10)
        row: dict[str, Any] = {}
        for label, scanner in scanners.items():
            row[f"input_default_{label}"] = timings(scanner, text, runs, "input")
            if label == "spacy":
                row["input_default_spacy_seen_before"] = timings(scanner, text, runs, "input", seen=True)
        row["output_default_no_names"] = timings(patterns, text, runs, "output")
        row["patterns_only"] = timings(patterns, text, runs, "input")
        if "fast" in scanners:
            names = scanners["fast"].detector.names
            assert isinstance(names, FastNameRecognizer)
            row["fast_recogniser_alone"] = _alone(names, text, runs)
        speed[name] = row
    report["speed"] = speed
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _cost(src: Path, runs: int) -> dict[str, Any]:
    """``bench/_pii_cost.py`` in its own process, with ``src`` first on the path."""
    env = {"PYTHONPATH": str(src), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_pii_cost.py"), "--runs", str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def cost_side_by_side(runs: int, baseline_ref: str | None, rounds: int) -> dict[str, Any]:
    """The input default's scan cost here and at ``baseline_ref``, taking turns; load average before each."""
    out: dict[str, Any] = {"machine": platform.machine(), "rounds": []}
    with tempfile.TemporaryDirectory() as scratch:
        trees = [("this tree", ROOT / "src")]
        if baseline_ref:
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", baseline_ref, "src"], capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
            trees.append((f"baseline {baseline_ref}", Path(scratch) / "src"))
        for _ in range(rounds):
            for label, src in trees:
                load = [round(x, 2) for x in os.getloadavg()]
                out["rounds"].append({"tree": label, "load_average": load, "cost": _cost(src, runs)})
    return out


def cost_table(result: dict[str, Any]) -> str:
    """Markdown: CPU and wall p50 / p99 (ms) per case, one column per tree and round."""
    rounds = result["rounds"]
    header = [f"{r['tree']} (load {r['load_average'][0]})" for r in rounds]
    lines = ["| case | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
    for case in rounds[0]["cost"]:
        for kind, prefix in (("CPU", "cpu_"), ("wall", "")):
            cells = []
            for r in rounds:
                cell = r["cost"].get(case)
                cells.append(f"{cell[prefix + 'p50_ms']:.2f} / {cell[prefix + 'p99_ms']:.2f}" if cell else "—")
            lines.append(f"| {case}, {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _alone(names: FastNameRecognizer, text: str, runs: int) -> dict[str, float]:
    """p50/p99 of the fast recogniser by itself (its share of the scanner's time)."""
    samples: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.thread_time()
        names.find(text)
        samples.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - cpu_started) * 1000)
    return _summary(samples, cpu)


if __name__ == "__main__":
    main()
