"""Findings of the PII detector on the Faker sets and stdlib docstrings, for comparing two trees row by row.

    .venv/bin/python bench/pii_exact.py --src /tmp/base/src --out /tmp/base.jsonl
    .venv/bin/python bench/pii_exact.py --src src --out /tmp/new.jsonl
    cmp /tmp/base.jsonl /tmp/new.jsonl

Each output line: the set, the row number, and every finding (kind, start, end, value) of the input
default (every kind, ``ner: fast``), then the same without names (output direction) and with
``ner: off``. Also scans concatenations (32 KB) of each set, so the long-text paths are compared too;
the texts ``bench/_pii_cost.py`` times (1 KB and 32 KB of Faker sentences and of docstrings, each with
a numbered word after every 500 characters), from several starting rows of each source; and a generated
soup of phone-like candidates beside phone words and country names (``_phone_soup``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _numbered(text: str) -> str:
    """``text`` with a numbered word after every 500 characters, as ``_pii_cost.fresh`` writes it."""
    return "".join(text[at : at + 500] + f" zq{at}x " for at in range(0, len(text), 500))


def _cost_texts(sources: dict[str, list[str]]) -> list[str]:
    """The cost benchmark's texts (``_pii_cost.fill``), from several starting rows of each source."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _pii_cost import fill

    out = []
    for parts in sources.values():
        for offset in (0, 37, 211):
            rotated = parts[offset:] + parts[:offset]
            out += [_numbered(fill(rotated, 1024)), _numbered(fill(rotated, 32 * 1024))]
    return out


_PHONE_WORDS = ["call", "Tel.", "mobile:", "fax", "reach me at", "office in Sweden", "in Germany", "UK", "the", ""]
_SHAPES = [
    "+## ### ### ####", "+# (###) ###-####", "00## ## #### ####", "(###) ###-####", "###-###-####", "###.###.####",
    "0### ### ####", "0## #### ####", "0#########", "0##########", "##########", "### ### ###", "#-###-###-####",
    "+## ## ########", "0### ######", "## ## ## ## ##", "0#-########", "(0##) ### ####", "##.##.####",
    "###-##-####", "#### #### #### ####", "+### ### ### ###", "### #### ####", "0### ### ### ext. ##", "###-#### x###",
    "001 ### ### ####", "+1 ### ### ####", "##/###-####", "0### / ######", "+##-###-###-###",
]  # fmt: skip


def _phone_soup(count: int, seed: int = 7) -> list[str]:
    """Short texts of phone-shaped digit strings (every digit random) after phone words and country names."""
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 6)):
            shape = rng.choice(_SHAPES)
            number = "".join(str(rng.randint(0, 9)) if ch == "#" else ch for ch in shape)
            parts.append(f"{rng.choice(_PHONE_WORDS)} {number}{rng.choice(['', '.', ',', ' and'])}")
        texts.append(" ".join(parts))
    return texts


def main() -> None:
    """Write the findings of the tree at ``--src`` to ``--out``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--paragraphs", type=int, default=3000)
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))
    sys.path.insert(1, str(ROOT))
    from tests.guard.datasets import stdlib_paragraphs

    from opsgate.domain.guard_config import PII_ENTITIES
    from opsgate.guard import pii as pii_module
    from opsgate.guard.pii import PiiDetector

    assert str(Path(pii_module.__file__).resolve()).startswith(str(args.src.resolve())), pii_module.__file__
    sets: dict[str, list[str]] = {}
    for name in ("pii_faker_dev", "pii_faker_holdout", "pii_blind_holdout", "pii_dev", "pii_test", "pii_holdout"):
        path = ROOT / "tests" / "data" / "guard" / f"{name}.jsonl"
        sets[name] = [str(json.loads(line)["text"]) for line in path.read_text().splitlines() if line.strip()]
    sets["stdlib"] = stdlib_paragraphs()[: args.paragraphs]
    for name in list(sets):
        joined, chunk = [], []
        for text in sets[name]:
            chunk.append(text)
            if sum(map(len, chunk)) > 32 * 1024:
                joined.append(" ".join(chunk))
                chunk = []
        joined.append("\n".join(chunk))
        sets[name + "_32kb"] = joined
    sources = {"faker": sets["pii_faker_dev"], "blind": sets["pii_blind_holdout"], "stdlib": sets["stdlib"]}
    sets["cost_texts"] = _cost_texts(sources)
    sets["phone_soup"] = _phone_soup(1500)
    detectors = {
        "fast": PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"], ner="fast"),
        "off": PiiDetector(PII_ENTITIES, ner="off"),
    }
    with args.out.open("w") as out:
        for name, texts in sets.items():
            for row, text in enumerate(texts):
                record = {"set": name, "row": row}
                record["fast"] = [list(f) for f in detectors["fast"].find(text)]
                record["fast_no_names"] = [list(f) for f in detectors["fast"].detect(text, names=False).findings]
                record["off"] = [list(f) for f in detectors["off"].find(text)]
                out.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
