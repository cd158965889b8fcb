"""Guardrails: detector accuracy on the labelled sets, and what each scanner and the default set cost.

Accuracy: recall and false-positive rate of the injection detector, recall and precision of PII
detection on structured identifiers, per split (dev = tuned on; test/holdout = not), with 95%
Wilson intervals. Speed: per scanner and for the default input+output set through the guard
stage itself (``before`` on a 1 KB chat request, ``after`` on a 1 KB answer), p50/p99 over many
runs in this process — no HTTP, so the numbers are the stage's own cost. Writes
``bench/results/guard.json``. About 30 s.

The learned injection detector's ROC on its dev split and the shipped operating point
(``opsgate.redteam.roc``, also ``opsgate redteam roc``) are printed and stored too.

The default *input* policy on 1 KB and 32 KB prompts (goal p99 <= 2 ms and <= 10 ms) is measured
by ``bench/_guard_input.py`` in a subprocess, for this tree and, with ``--baseline-ref``, for an
older commit checked out in a temporary git worktree, so both are measured the same way.

    .venv/bin/python bench/guard.py [--runs 3000] [--baseline-ref 66f18b5]
    .venv/bin/python bench/guard.py --input-only --no-roc --runs 1000 --baseline-ref REF --rounds 2   # trees take turns
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.guard.datasets import Rate, package_paragraphs, pii_rows, prompts, stdlib_paragraphs  # noqa: E402

from opsgate.domain.config import parse_config  # noqa: E402
from opsgate.domain.context import JsonResult, RequestContext  # noqa: E402
from opsgate.domain.guard_config import (  # noqa: E402
    PII_ENTITIES,
    BannedTermsScannerConfig,
    ConfidenceScannerConfig,
    GuardConfig,
    InjectionScannerConfig,
    InputSizeScannerConfig,
    JsonScannerConfig,
    PiiScannerConfig,
    SecretsScannerConfig,
    SystemPromptLeakScannerConfig,
    ToxicityScannerConfig,
)
from opsgate.guard.base import ScanContext, Vault  # noqa: E402
from opsgate.guard.engine import build_scanner  # noqa: E402
from opsgate.guard.pii import PiiDetector  # noqa: E402
from opsgate.pipeline.guard import GuardStage  # noqa: E402
from opsgate.pipeline.validation import ValidationStage  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "guard.json"
SYSTEM = "You are the support assistant of ACME Corp. Answer briefly and politely; escalate refunds over $500."
# A 1 KB support request: prose with numbers, dates and an order id, but no PII and no attack.
REQUEST_1KB = (
    "Hi, I ordered two pairs of running shoes on March 3rd (order 58213-B) and only one pair arrived "
    "yesterday. The box looked fine and the packing slip lists both items, so I suspect the second "
    "pair was never packed. I have been a customer for about 6 years and this is the first problem "
    "I have had, so I am not upset, just confused about what to do next. Could you tell me whether "
    "the second pair is still in stock in size 10.5, and if it is, whether you can send it without "
    "me returning anything? If it is out of stock, I would prefer a refund to the original card "
    "rather than store credit. Also, the tracking page still says 'in transit' for the whole order, "
    "which seems wrong since part of it is here. One more question: your website mentions a 30 day "
    "return window, does that start from the first delivery or from when the last item arrives? "
    "Thanks a lot for your help, and sorry for the long message. Best regards from Lisbon, Sam."
)
# The same size, full of words the injection prefilter reacts to (ignore, previous, system, rules…).
TRIGGER_1KB = (
    "Please ignore the typos in my previous message about the system update. The rules for the "
    "developer mode on my phone changed after the update and now the system prompts me for a password "
    "every time I open the settings. My previous instructions from the manual say to reset the device, "
    "but I would rather not lose my data. Can you tell me how to disable the prompt, or whether there "
    "is a safer way to skip the password step? Also, what does the message 'context expired' mean "
    "and should I forget the saved Wi-Fi networks before I try again? I tried to override the "
    "setting in the admin panel, but the option is greyed out. I am the owner of the device and the "
    "account, so I should have the right permissions. From now on I will write down every step I "
    "take. Note: the assistant app also shows a warning about restrictions on background data. "
    "Thanks for any help with this, it is driving me a little crazy."
)
ANSWER_1KB = (
    "Thanks for reaching out, Sam, and sorry about the missing pair. I checked order 58213-B: the "
    "warehouse scanned only one box, so the second pair was indeed never packed. Good news: size 10.5 "
    "is in stock, and I have created a replacement shipment at no cost to you; you do not need to "
    "return anything. You should receive a new tracking number by email within 24 hours, and the "
    "original tracking page will be corrected once the replacement leaves the warehouse. About the "
    "return window: the 30 days start from the delivery of the last item in an order, so you have "
    "the full period for both pairs once the second one arrives. If you would still prefer a refund "
    "instead of the replacement, just reply to this message before the replacement ships and I will "
    "cancel it and refund the original card; refunds take 3 to 5 business days to appear. Thanks "
    "for being a loyal customer for six years, and enjoy the new shoes. Best regards, the ACME team."
)


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds."""
    ordered = sorted(samples_ns)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6  # noqa: E731
    return {
        "p50_ms": round(pick(0.50), 4),
        "p99_ms": round(pick(0.99), 4),
        "mean_ms": round(statistics.fmean(ordered) / 1e6, 4),
    }


def timed(call: Callable[[], object], runs: int) -> dict[str, float]:
    for _ in range(min(200, runs)):
        call()  # warm caches and lazy imports
    samples = []
    gc.collect()
    for _ in range(runs):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return percentiles(samples)


def accuracy() -> dict[str, Any]:
    """Injection recall / false positives and PII recall / precision per split."""
    from opsgate.guard.injection import InjectionScanner

    scanner = InjectionScanner(InjectionScannerConfig(scanner="prompt_injection"))
    context = ScanContext("input")
    out: dict[str, Any] = {"injection": {}, "pii": {}}
    flagged = lambda texts: Rate(sum(scanner.scan(t, context).verdict == "fail" for t in texts), len(texts))  # noqa: E731
    for split in ("dev", "test", "holdout"):
        attacks, benign = prompts(f"injection_attack_{split}.txt"), prompts(f"injection_benign_{split}.txt")
        out["injection"][split] = {"recall": str(flagged(attacks)), "false_positive_rate": str(flagged(benign))}
    suite = yaml.safe_load((ROOT / "src" / "opsgate" / "redteam" / "suites" / "starter.yaml").read_text())["cases"]
    user_text = lambda case: "\n".join(  # noqa: E731
        [case["prompt"]] if "prompt" in case else [m["content"] for m in case["messages"] if m["role"] != "assistant"]
    )
    out["injection"]["redteam starter suite (input scanner only)"] = {
        "recall": str(flagged([user_text(c) for c in suite if c["kind"] == "attack"])),
        "false_positive_rate": str(flagged([user_text(c) for c in suite if c["kind"] == "benign"])),
    }
    out["injection"]["benign stress: Python stdlib docstring paragraphs"] = {
        "false_positive_rate": str(flagged(stdlib_paragraphs()))
    }
    out["injection"]["benign stress: installed packages' descriptions"] = {
        "false_positive_rate": str(flagged(package_paragraphs()))
    }
    detector = PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"])
    for split in ("dev", "test", "holdout"):
        found = expected = correct = 0
        per_kind: dict[str, list[int]] = {}
        for row in pii_rows(split):
            want = {(e["kind"], e["value"]) for e in row["entities"]}  # type: ignore[attr-defined, index]
            got = {(f.kind, f.value) for f in detector.find(str(row["text"]))}
            found, expected, correct = found + len(got), expected + len(want), correct + len(want & got)
            for kind, value in want:
                tally = per_kind.setdefault(kind, [0, 0])
                tally[0] += (kind, value) in got
                tally[1] += 1
        out["pii"][split] = {
            "recall": str(Rate(correct, expected)),
            "precision": str(Rate(correct, found)),
            "recall_by_kind": {k: f"{hit}/{total}" for k, (hit, total) in sorted(per_kind.items())},
        }
    return out


def scanner_costs(runs: int) -> dict[str, Any]:
    """Each scanner alone on 1 KB (input scanners on the request, output scanners on the answer)."""
    configs: list[tuple[str, Any, str, ScanContext]] = [
        ("input_size", InputSizeScannerConfig(scanner="input_size"), REQUEST_1KB, ScanContext("input")),
        ("prompt_injection", InjectionScannerConfig(scanner="prompt_injection"), REQUEST_1KB, ScanContext("input")),
        (
            "prompt_injection (trigger words)",
            InjectionScannerConfig(scanner="prompt_injection"),
            TRIGGER_1KB,
            ScanContext("input"),
        ),
        ("secrets", SecretsScannerConfig(scanner="secrets"), REQUEST_1KB, ScanContext("input")),
        (
            "pii (reversible)",
            PiiScannerConfig(scanner="pii", reversible=True),
            REQUEST_1KB,
            ScanContext("input", vault=Vault()),
        ),
        ("pii (output)", PiiScannerConfig(scanner="pii"), ANSWER_1KB, ScanContext("output")),
        (
            "system_prompt_leak",
            SystemPromptLeakScannerConfig(scanner="system_prompt_leak"),
            ANSWER_1KB,
            ScanContext("output", system_prompt=SYSTEM),
        ),
        ("json (no JSON asked)", JsonScannerConfig(scanner="json"), ANSWER_1KB, ScanContext("output")),
        (
            "banned_terms (20 terms)",
            BannedTermsScannerConfig(scanner="banned_terms", terms=[f"term{i} word" for i in range(20)]),
            ANSWER_1KB,
            ScanContext("output"),
        ),
        ("toxicity (exported model)", ToxicityScannerConfig(scanner="toxicity"), ANSWER_1KB, ScanContext("output")),
        (
            "confidence (200 tokens)",
            ConfidenceScannerConfig(scanner="confidence"),
            ANSWER_1KB,
            ScanContext(
                "output", logprobs=[{"logprob": -0.3, "top_logprobs": [{"logprob": -0.3}, {"logprob": -1.5}]}] * 200
            ),
        ),
    ]
    out: dict[str, Any] = {}
    for label, config, text, context in configs:
        scanner = build_scanner(config)
        out[label] = timed(lambda s=scanner, t=text, c=context: s.scan(t, c), runs)  # type: ignore[misc]
    try:  # the package the toxicity model came from, for comparison (not a dependency)
        started = time.perf_counter()
        from profanity_check import predict_prob

        imported = time.perf_counter() - started
        out["toxicity via alt-profanity-check (sklearn)"] = {
            **timed(lambda: predict_prob([ANSWER_1KB]), max(50, runs // 20)),
            "import_s": round(imported, 2),
        }
    except ImportError:
        pass
    return out


def stage_cost(runs: int, guard: dict[str, Any], request: str) -> dict[str, float]:
    """The guard stage's before + after on one chat request and its 1 KB answer, as the pipeline runs them."""
    config = parse_config(
        {
            "models": [
                {"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}
            ],
            "guard": guard,
        }
    )
    stage = GuardStage.from_config(config)
    validation = ValidationStage(config)
    body = json.dumps(
        {"model": "m", "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}]}
    ).encode()
    answer = {
        "id": "x",
        "object": "chat.completion",
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER_1KB}, "finish_reason": "stop"}],
    }
    loop = asyncio.new_event_loop()

    async def once() -> None:
        ctx = RequestContext(endpoint="chat", raw_body=body, headers={})
        await validation.before(ctx)
        started = time.perf_counter_ns()
        await stage.before(ctx)
        response = JsonResult(
            {**answer, "choices": [dict(answer["choices"][0], message=dict(answer["choices"][0]["message"]))]}
        )
        await stage.after(ctx, response)
        samples.append(time.perf_counter_ns() - started)

    samples: list[int] = []
    for _ in range(200):
        loop.run_until_complete(once())
    samples.clear()
    gc.collect()
    for _ in range(runs):
        loop.run_until_complete(once())
    loop.close()
    return percentiles(samples)


def input_policy_cost(runs: int, src: Path, long_runs: int | None = None) -> dict[str, Any]:
    """``bench/_guard_input.py`` run with ``src`` first on the path (this tree's or a baseline's)."""
    script = ROOT / "bench" / "_guard_input.py"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}
    extra = ["--long-runs", str(long_runs)] if long_runs else []
    output = subprocess.run(
        [sys.executable, str(script), "--runs", str(runs), *extra], env=env, capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def input_policy_side_by_side(
    runs: int, baseline_ref: str | None, rounds: int = 1, long_runs: int | None = None
) -> dict[str, Any]:
    """The default input policy's cost here, and at ``baseline_ref`` when given.

    With ``rounds`` > 1 the two trees take turns (this, baseline, this, baseline, …), so load from
    other work on a shared machine falls on both alike; each key then holds one result per round,
    and ``load_average`` the 1-minute load average before each measurement.
    """
    out: dict[str, Any] = {"this tree": [], "load_average": []}
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "baseline"
        if baseline_ref:
            out[f"baseline {baseline_ref}"] = []
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(tree), baseline_ref], check=True
            )
        try:
            for _ in range(rounds):
                for label, src in [
                    ("this tree", ROOT / "src"),
                    *([(f"baseline {baseline_ref}", tree / "src")] * bool(baseline_ref)),
                ]:
                    out["load_average"].append({label: round(os.getloadavg()[0], 2)})
                    out[label].append(input_policy_cost(runs, src, long_runs))
        finally:
            if baseline_ref:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    if rounds == 1:
        return {key: value[0] if key != "load_average" else value for key, value in out.items()}
    return out


def side_by_side_table(result: dict[str, Any]) -> str:
    """Markdown: p50 / p99 (ms) per input, one column per tree and round, and the prompt_injection / secrets p50."""
    trees = [key for key in result if key != "load_average"]
    runs = {tree: result[tree] if isinstance(result[tree], list) else [result[tree]] for tree in trees}
    header = [f"{tree} r{index + 1}" for tree in trees for index in range(len(runs[tree]))]
    lines = ["| input | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    labels = [label for label in runs[trees[0]][0] if label != "scanners"]
    for label in labels:
        cells = []
        for tree in trees:
            for one in runs[tree]:
                row = one.get(label)
                if row is None:
                    cells.append("—")
                    continue
                by = row["p50_ms_by_scanner"]
                cells.append(
                    f"{row['p50_ms']} / {row['p99_ms']} (inj {by.get('prompt_injection', '—')}, "
                    f"sec {by.get('secrets', '—')}, pii {by.get('pii', '—')})"
                )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def roc() -> dict[str, Any]:
    """The learned injection detector's leave-one-source-out ROC and operating point (printed as a table too)."""
    from opsgate.guard.training.corpus import CORPUS
    from opsgate.redteam.roc import loso_roc, render_markdown

    result = loso_roc(CORPUS, CORPUS.with_name("loso.json"))
    print(render_markdown(result), file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--baseline-ref", help="also measure the default input policy at this commit")
    parser.add_argument("--input-only", action="store_true", help="only the input-policy cost (and the ROC)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --baseline-ref: the trees take turns this many times each"
    )
    parser.add_argument("--no-roc", action="store_true", help="with --input-only: skip the detector ROC")
    parser.add_argument(
        "--long-runs", type=int, help="runs of the inputs of 8 KB or more (default max(20, runs // 10))"
    )
    args = parser.parse_args()
    if args.input_only:
        policy = input_policy_side_by_side(args.runs, args.baseline_ref, args.rounds, args.long_runs)
        result = {"input_policy": policy, **({} if args.no_roc else {"detector_roc": roc()})}
        RESULTS.with_name("guard_input.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(side_by_side_table(policy), file=sys.stderr)
        return
    default_policy = GuardConfig(enabled=True).effective_policies()[0]
    result = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        "request_bytes": len(REQUEST_1KB.encode()),
        "answer_bytes": len(ANSWER_1KB.encode()),
        "default_set": {
            "input": [e.scanner for e in default_policy.input],
            "output": [e.scanner for e in default_policy.output],
        },
        "accuracy": accuracy(),
        "input_policy": input_policy_side_by_side(args.runs, args.baseline_ref),
        "detector_roc": roc(),
        "scanners": scanner_costs(args.runs),
        "stage": {
            "default set, 1 KB request + 1 KB answer": stage_cost(args.runs, {"enabled": True}, REQUEST_1KB),
            "default set, trigger-word request": stage_cost(args.runs, {"enabled": True}, TRIGGER_1KB),
            "default set + toxicity + confidence(no logprobs)": stage_cost(
                args.runs,
                {
                    "enabled": True,
                    "policies": [
                        {
                            "name": "p",
                            "output": [
                                {"scanner": "pii"},
                                {"scanner": "system_prompt_leak"},
                                {"scanner": "json"},
                                {"scanner": "toxicity"},
                            ],
                        }
                    ],
                },
                REQUEST_1KB,
            ),
        },
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
