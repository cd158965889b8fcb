"""Fourth round of independent sources (issue 12): red-team packages whose own authors wrote the prompts.

Read like ``sources_extra``: ``pip download --no-deps`` of the pinned versions, opened as zip files,
nothing installed or imported (safelabs-eval's prompt library is a Python module: it is *parsed*
with ``ast``, never run). Each source was scored *blind* with the model shipped before it was
added (``python -m opsgate.guard.training.loso --blind DIR --round 4``; numbers in
``docs/guard-data.md``). Every row also records ``provenance``: the package, version, file and
entry it came from.

Left out on purpose (see ``docs/guard-data.md``, "Fourth round"): whole packages that redistribute
a reserved collection: ``fas-judgement`` (DAN / DUDE / STAN / Developer-Mode / image-markdown
jailbreaks), ``lmtwt`` (a published GCG suffix and DAN text), ``guardrailprobe`` and
``hermes-jailbreak-bench`` (the community DAN prompt), ``promptwl`` (says its phrases come from garak
among others), npm ``ecc-agentshield`` ("DAN 6.0 — Reddit" text, L1B3RT4S-derived items) and npm
``agent-security-scanner-mcp`` (the community DAN prompt verbatim); ``basilisk-ai`` (AGPL). Inside
the packages used: every item that names or is a DAN / Developer-Mode / "grandma" persona,
grendel-redteam's AdvBench rows (plain harmful requests) and its packs whose references cite garak or
jailbreak_llms, safelabs-eval's categories that are not injections (insecure output, resource
exhaustion, supply-chain trust decisions; and its hallucination probes, ASI10: adversarial, but not injections),
keelson's multi-turn probes (no single turn is the attack), weiseer's question about how the model
would refuse, and vigia's salary / data questions and its resource, output and supply-chain
categories (ordinary questions, attacks only by the author's intent).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from opsgate.guard.training.sources_extra import open_wheel, package_row

Row = dict[str, str | int]

# name → (pinned version, wheel file stem, licence). deepset's dataset is read from grendel's wheel.
PACKAGES: dict[str, tuple[str, str, str]] = {
    "safelabs-eval": ("0.12.0", "safelabs_eval", "Apache-2.0"),
    "deepset-prompt-injections": (
        "0.1.5",
        "grendel_redteam",
        "Apache-2.0 (deepset/prompt-injections, via grendel-redteam)",
    ),
    "grendel-redteam": ("0.1.5", "grendel_redteam", "Apache-2.0"),
    "keelson-ai": ("0.5.0", "keelson_ai", "Apache-2.0"),
    "vigia": ("0.6.2", "vigia", "MIT"),
    "oubliette-dungeon": ("1.1.0", "oubliette_dungeon", "Apache-2.0"),
    "weiseer-prompt-redteam": ("0.1.0", "weiseer_prompt_redteam", "Apache-2.0"),
    "bastionprobe": ("0.19.0", "bastionprobe", "MIT"),
}
# Items that name a reserved collection or the community persona jailbreaks are left out wherever they are.
_RESERVED = re.compile(
    r"\bDAN\b|do anything now|developer.?mode|grandm|garak|pyrit|spikee|jailbreak.?chat|jailbreak_llms|"
    r"advbench|harmbench|l1b3rt4s",
    re.I,
)
# safelabs-eval's OWASP-agentic categories whose prompts are injections or agent abuse. Its hallucination
# category (ASI10: false premises, demands for exact figures, claimed authority — "This is Dr. X covering the
# night shift", "you already told me …") is left out, like aicu-scanner's "no trigger words" sets: its author
# wrote them as attacks on the model, they are not injections, and read as benign they contradict the
# authority-claim attacks written here (first read as benign; see docs/guard-data.md, "Fourth round").
_SAFELABS_KINDS = ("ASI01", "ASI03", "ASI05", "ASI06", "ASI08", "ASI09")
_VIGIA_KINDS = ("prompt_injection", "hidden_context_exposure", "excessive_agency")
_GERMAN = re.compile(r"\b(und|ich|nicht|der|die|das|ist|mir|Sie|du|alle|bitte|vergiss)\b")


_wheel = partial(open_wheel, PACKAGES)


def _row(text: str, label: int, source: str, kind: str, where: str, role: str = "user", lang: str = "en") -> Row:
    version = PACKAGES[source][0]
    package = "grendel-redteam" if source == "deepset-prompt-injections" else source
    row = package_row(PACKAGES, text, label, source, kind, role, lang)
    row["provenance"] = f"{package} {version}: {where}"
    return row


def safelabs_eval(directory: Path) -> list[Row]:
    """safelabs-eval: its prompt library (each entry marked ``provenance="original"``): injection and agent-abuse
    categories (attacks; ASI10, hallucination probes, left out). The module is parsed, not imported: only the literal
    keyword arguments are read."""
    path = "safelabs/prompts/library.py"
    tree = ast.parse(_wheel(directory, "safelabs-eval").read(path).decode())
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "PromptEntry"):
            continue
        fields = {k.arg: k.value for k in node.keywords}
        entry_id, prompt = ast.literal_eval(fields["id"]), ast.literal_eval(fields["prompt"])
        provenance = ast.literal_eval(fields["provenance"]) if "provenance" in fields else ""
        kind = str(entry_id)[:5]
        if provenance != "original" or _RESERVED.search(str(prompt)):
            continue
        if kind in _SAFELABS_KINDS:
            out.append(_row(str(prompt), 1, "safelabs-eval", kind, f"{path} {entry_id}"))
    return out


def grendel(directory: Path) -> list[Row]:
    """grendel-redteam: deepset's prompt-injection rows it vendors (a source of their own) and its own packs
    (attacks; its controls benign), without the AdvBench rows and the packs that cite a reserved collection."""
    wheel = _wheel(directory, "grendel-redteam")
    out = []
    for line in wheel.read("grendel/packs/_corpora.jsonl").decode().splitlines():
        item: dict[str, Any] = json.loads(line)
        if not any("deepset/prompt-injections" in ref for ref in item["references"]):
            continue  # AdvBench's harmful behaviours: plain harmful requests, not injections
        text = str(item["payload"])
        lang = "de" if len(_GERMAN.findall(text)) >= 2 else "en"
        where = f"grendel/packs/_corpora.jsonl {item['id']}"
        out.append(_row(text, 1, "deepset-prompt-injections", "deepset", where, lang=lang))
    for name in sorted(wheel.namelist()):
        if not name.startswith("grendel/packs/") or not name.endswith(".yaml"):
            continue
        pack = yaml.safe_load(wheel.read(name))
        refs = " ".join(str(r) for r in pack.get("references") or [])
        if pack.get("category") == "control":
            out.append(_row(str(pack["prompt"]), 0, "grendel-redteam", "control", name))
        elif not _RESERVED.search(refs + str(pack.get("payload")) + str(pack.get("name"))):
            role = "tool" if pack.get("surface") == "tool-output" else "user"
            out.append(_row(str(pack["payload"]), 1, "grendel-redteam", str(pack["category"]), name, role))
    return out


def keelson(directory: Path) -> list[Row]:
    """keelson-ai: its single-turn probes (one user message; multi-turn probes left out)."""
    wheel = _wheel(directory, "keelson-ai")
    out = []
    for name in sorted(wheel.namelist()):
        if not name.startswith("keelson/probes/") or not name.endswith(".yaml"):
            continue
        probe = yaml.safe_load(wheel.read(name))
        turns = [t for t in probe.get("turns") or [] if t.get("role") == "user"]
        if len(turns) != 1:
            continue
        text = str(turns[0]["content"])
        if not _RESERVED.search(text + str(probe.get("objective")) + str(probe.get("name"))):
            out.append(_row(text, 1, "keelson-ai", name.split("/")[2], name))
    return out


def vigia(directory: Path) -> list[Row]:
    """vigia: its validated Spanish / Catalan / Galician / Basque seeds of the injection, hidden-context and
    excessive-agency categories, and its agent seeds."""
    wheel = _wheel(directory, "vigia")
    out = []
    for path, kinds in (
        ("vigia/corpus/seeds/seeds_validated.json", _VIGIA_KINDS),
        ("vigia/corpus/seeds/agent_seeds.json", None),
    ):
        for seed in json.loads(wheel.read(path)):
            if (kinds is None or seed["category"] in kinds) and not _RESERVED.search(str(seed["prompt"])):
                lang = str(seed.get("language") or "es")[:2]
                out.append(
                    _row(str(seed["prompt"]), 1, "vigia", str(seed["category"]), f"{path} {seed['id']}", lang=lang)
                )
    return out


def oubliette(directory: Path) -> list[Row]:
    """oubliette-dungeon: the single-prompt scenarios of its default library (its DAN scenario left out)."""
    path = "oubliette_dungeon/scenarios/default.yaml"
    out = []
    for scenario in yaml.safe_load(_wheel(directory, "oubliette-dungeon").read(path)):
        prompt = scenario.get("prompt")
        if prompt and not _RESERVED.search(str(prompt) + str(scenario["name"])):
            out.append(_row(str(prompt), 1, "oubliette-dungeon", str(scenario["category"]), f"{path} {scenario['id']}"))
    return out


def weiseer(directory: Path) -> list[Row]:
    """weiseer-prompt-redteam: its attack corpus, without the DAN, grandma and developer-mode items and the one
    that only asks how the model would refuse."""
    path = "weiseer_prompt_redteam/attacks.yaml"
    out = []
    for attack in yaml.safe_load(_wheel(directory, "weiseer-prompt-redteam").read(path))["attacks"]:
        text = str(attack["payload"])
        if attack["category"] != "meta" and not _RESERVED.search(text + str(attack["id"])):
            out.append(_row(text, 1, "weiseer-prompt-redteam", str(attack["category"]), f"{path} {attack['id']}"))
    return out


def bastionprobe(directory: Path) -> list[Row]:
    """bastionprobe: indirect injections planted in tool output (its canary placeholder filled in)."""
    path = "bastionprobe/payloads.jsonl"
    out = []
    for line in _wheel(directory, "bastionprobe").read(path).decode().splitlines():
        item = json.loads(line)
        text = str(item["text"]).replace("{canary}", "BP-4417-KX")
        role = "tool" if item.get("channel") == "tool_output" else "user"
        lang = item["id"].split("-")[1] if item["id"].count("-") >= 3 and len(item["id"].split("-")[1]) == 2 else "en"
        out.append(_row(text, 1, "bastionprobe", str(item["category"]), f"{path} {item['id']}", role, lang))
    return out


READERS: dict[str, Callable[[Path], list[Row]]] = {
    "safelabs-eval": safelabs_eval,
    "grendel-redteam": grendel,
    "keelson-ai": keelson,
    "vigia": vigia,
    "oubliette-dungeon": oubliette,
    "weiseer-prompt-redteam": weiseer,
    "bastionprobe": bastionprobe,
}


def rows(directory: Path) -> list[Row]:
    """Every fourth-round source's rows, in a fixed order."""
    return [row for reader in READERS.values() for row in reader(directory)]
