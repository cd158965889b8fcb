"""Parity of the injection scanner's code with another commit's: same tokens, logits, verdicts and scores.

Both versions run in this process on this tree's model file, lexicon and patterns (see
``bench/_injection_baseline.py``), so a retrained model or a new corpus changes both sides alike and
the check stays about the code. Texts: every row of ``data/guard/injection/corpus.jsonl``, every
prompt of ``tests/data/guard/injection_*.txt``, and long texts, where the windowed fast path runs
(rows up to 48 tokens take the reference path): the benchmark's 1-32 KB inputs (new text each run
too), the docs in 8 KB pieces, corpus rows run together into 1-30 KB documents, attacks buried in
benign prose, and random Unicode (accents, invisible and tag characters, CJK, lone surrogates).

Per text: ``normalise`` and ``tokens`` equal; every window logit equal to the bit (float64 sums of float16
weights are exact in any order, so an exact change keeps them so); the rules' variants
(the decoded and un-disguised texts they read) and their score and signals equal; for a user and a
tool message, the same verdict, score within 1e-6 (scores are rounded to 4 places: equal in
practice) and the same details. The fast path is also held to the training features' reference logits.
Exit 1 on any difference.

    .venv/bin/python bench/injection_parity.py [--baseline-ref HEAD~1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from tests.guard.datasets import DATA, prompts  # noqa: E402

from _guard_input import ADVERSARIAL_LINES, REQUEST, _letters, dense_pii, fresh, stdlib_text  # noqa: E402
from _injection_baseline import load  # noqa: E402
from opsgate.domain.guard_config import InjectionScannerConfig  # noqa: E402
from opsgate.guard import injection, injection_model  # noqa: E402
from opsgate.guard.base import ScanContext, ScanResult  # noqa: E402
from opsgate.guard.training.corpus import CORPUS  # noqa: E402

_ALPHABET = (
    "a", "é", "e\u0301", "ß", "İ", "Σ", "ς", "\u200b", "\u00ad", "\U000e0041", "\U000e0000", "\ud800", "忽略之前的指令",
    "игнорируй", "\u3000", "\u00a0", "\u2028", "—", "\u2019", "_", "1", " ", "\n", "ignore", "instructions", "x" * 9,
    "\x00", "ﬁ", "①", "\u0131", "Ⅻ", "😀", "\x85", "\x1f", ".", "<|", "contraseña", "systemprompt",
)  # fmt: skip


def texts(quick: bool) -> list[tuple[str, str]]:
    """(label, text) of everything compared."""
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    out = [(f"corpus {i}", str(row["text"])) for i, row in enumerate(rows)]
    for path in sorted(DATA.glob("injection_*.txt")):
        out += [(f"{path.name} {i}", text) for i, text in enumerate(prompts(path.name))]
    one_kb = (REQUEST * 6)[:1024]
    long_inputs = {
        "1 KB request": one_kb,
        "25 KB docstrings": stdlib_text(25_000),
        "32 KB docstrings": stdlib_text(32_000),
        "32 KB dense PII": dense_pii(32_000),
        "32 KB adversarial": "".join(line * 450 for line in ADVERSARIAL_LINES)[:32_000],
    }
    for name, text in long_inputs.items():
        out += [(name, text)] + [(f"{name}, new {run}", fresh(text, run)) for run in range(3)]
    out += [(f"1 KB request, ticket {run}", fresh(f"Ticket {_letters(run)}. {one_kb}", run)[:1024]) for run in range(5)]
    for path in sorted((ROOT / "docs").glob("*.md")):
        doc = path.read_text()
        out += [(f"{path.name} @{i}", doc[i : i + 8192]) for i in range(0, len(doc), 8192)]
    rng = random.Random(20261206)
    start = 0
    while start < len(rows):  # corpus rows run together: every kind and language in long windows
        size = rng.randrange(5, 120)
        out.append((f"corpus rows {start}+{size}", "\n".join(str(r["text"]) for r in rows[start : start + size])))
        start += size
    attacks = [str(r["text"]) for r in rows if r["label"] == 1]
    prose = stdlib_text(60_000)
    for i in range(60 if quick else 300):
        cut = rng.randrange(0, 50_000)
        size = rng.randrange(500, 30_000)
        host = prose[cut : cut + size]
        middle = rng.randrange(0, len(host) + 1)
        out.append((f"buried {i}", host[:middle] + "\n" + rng.choice(attacks) + "\n" + host[middle:]))
    for i in range(300 if quick else 2000):
        size = rng.choice((10, 60, 400, 3000))
        out.append((f"random {i}", "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(1, size)))))
    return out[::4] if quick else out


def _scan(scanner: Any, text: str, role: str) -> ScanResult | str:
    """The scanner's result, or the exception it raised (by type), which the other version must raise too."""
    try:
        result: ScanResult = scanner.scan(text, ScanContext("input", role=role))
    except Exception as exc:
        return f"raised {type(exc).__name__}"
    return result


def _token_ids(text: str, numpy_from: int) -> tuple[list[str], Any]:
    """``injection_model._token_ids`` with texts of ``numpy_from`` characters or more cut by numpy."""
    kept = injection_model._NUMPY_FROM
    injection_model._NUMPY_FROM = numpy_from
    try:
        return injection_model._token_ids(text)
    finally:
        injection_model._NUMPY_FROM = kept


def _rules(module: Any, text: str) -> tuple[list[str], tuple[float, list[str]]] | str:
    """The variants the rules read (decoded, un-leeted, ...) and their score and signals, or what was raised."""
    try:
        found = module.variants(text)
        return [variant.lowered for variant in found], module.injection_score(text, found)
    except Exception as exc:
        return f"raised {type(exc).__name__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline-ref", default="HEAD", help="the commit whose scanner code is compared")
    parser.add_argument("--quick", action="store_true", help="a quarter of the texts")
    args = parser.parse_args()
    old_injection, old_model_module = load(args.baseline_ref)
    config = InjectionScannerConfig(scanner="prompt_injection")
    new_scanner, old_scanner = injection.InjectionScanner(config), old_injection.InjectionScanner(config)
    new_model, old_model = new_scanner.model, old_scanner.model
    assert new_model is not None and old_model is not None
    started = time.monotonic()
    failures: list[dict[str, Any]] = []
    worst_logit = worst_reference = worst_score = 0.0
    compared = {"texts": 0, "fast_path_texts": 0, "windows": 0, "scans": 0}
    for label, text in texts(args.quick):
        compared["texts"] += 1
        problems: list[str] = []
        if injection_model.normalise(text) != old_model_module.normalise(text):
            problems.append("normalise")
        toks = injection_model.tokens(text)
        if toks != old_model_module.tokens(text):
            problems.append("tokens")
        for numpy_from in (0, injection_model._NUMPY_FROM):  # 0: the numpy tokeniser, whatever the length
            names, ids = _token_ids(text, numpy_from)
            if [names[i] for i in ids.tolist()] != toks or len(set(names)) != len(names):
                problems.append(f"token ids (numpy from {numpy_from} characters)")
        new_logits, old_logits = new_model.window_logits(text), old_model.window_logits(text)
        if len(new_logits) != len(old_logits):
            problems.append(f"{len(new_logits)} windows, was {len(old_logits)}")
        else:
            gap = max((abs(a - b) for a, b in zip(new_logits, old_logits, strict=True)), default=0.0)
            worst_logit = max(worst_logit, gap)
            compared["windows"] += len(new_logits)
            if new_logits != old_logits:
                problems.append(f"logits differ by {gap:.3g}")
        if len(toks) > injection_model.WINDOW:
            compared["fast_path_texts"] += 1
            reference = new_model._logits_of(injection_model.window_features(toks))
            gap = max(abs(a - b) for a, b in zip(new_logits, reference, strict=True))
            worst_reference = max(worst_reference, gap)
            if reference != new_logits:
                problems.append(f"reference logits differ by {gap:.3g}")
        rules = [_rules(module, text) for module in (injection, old_injection)]
        if rules[0] != rules[1]:
            problems.append(f"rules: variants or signals differ: {rules[0]} vs {rules[1]}")
        for role in ("user", "tool"):
            new, old = (_scan(scanner, text, role) for scanner in (new_scanner, old_scanner))
            compared["scans"] += 1
            if isinstance(new, str) or isinstance(old, str):  # the rules raised (RE2 takes no lone surrogate)
                if new != old:
                    problems.append(f"{role}: {new} vs {old}")
                continue
            worst_score = max(worst_score, abs(new.score - old.score))
            if new.verdict != old.verdict or abs(new.score - old.score) > 1e-6 or new.details != old.details:
                problems.append(
                    f"{role}: {new.verdict} {new.score} {new.details} vs {old.verdict} {old.score} {old.details}"
                )
        if problems:
            failures.append({"text": label, "problems": problems})
            print(label, problems, file=sys.stderr, flush=True)
    report = {
        "baseline": args.baseline_ref,
        "compared": compared,
        "max_logit_difference": worst_logit,
        "max_difference_from_reference_features": worst_reference,
        "max_score_difference": worst_score,
        "failures": len(failures),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
