"""Names, places, organisations and street addresses: the NER model, the patterns beside it, and the Faker sets."""

from __future__ import annotations

import itertools
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opsgate.domain.guard_config import PII_ENTITIES, PiiScannerConfig
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.pii import PiiDetector, PiiScanner, restore
from opsgate.guard.pii_address import find_addresses
from opsgate.guard.pii_names import find_cued_names, find_organisations
from opsgate.guard.pii_ner import MODEL_SHA256, NameRecognizer, NerUnavailable, chunks, model_path, verify
from tests.guard.pii_scoring import MARKED, NAMED, STRUCTURED, faker_rows, group, score

# spaCy's recogniser (``ner: spacy``); the default fast one has its own tests in test_pii_fast.py.
DETECTOR = PiiDetector(PII_ENTITIES, ["US", "GB", "DE", "FR"], ner_budget_s=5.0, ner="spacy")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Please send the parcel to John Smith; he works for Acme Corporation in Berlin.",
            [("person", "John Smith"), ("organization", "Acme Corporation"), ("location", "Berlin")],
        ),
        ("Dear Ferdinando Mimun, thanks for your order.", [("person", "Ferdinando Mimun")]),
        ("Maria Garcia moved to Madrid last spring.", [("person", "Maria Garcia"), ("location", "Madrid")]),
        ("I work for Lee, Kirby and Brown now.", [("organization", "Lee, Kirby and Brown")]),
        ("Invoice from Niemeier Müller KGaA attached.", [("organization", "Niemeier Müller KGaA")]),
    ],
)
def test_names_places_and_organisations(text: str, expected: list[tuple[str, str]]) -> None:
    assert [(f.kind, f.value) for f in DETECTOR.find(text)] == expected


@pytest.mark.parametrize(
    "text",
    [
        "Restart the service and check the logs for error code 504.",
        "What is the difference between a process and a thread?",
        "The ITIN goes on the W-7 and the DOB on page 2; the total is 12 EUR.",
    ],
)
def test_plain_text_has_no_names(text: str) -> None:
    assert DETECTOR.find(text) == []


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("Send it to 638 Jones Via, Jenkinsfurt, MP 04790 by Friday.", "638 Jones Via, Jenkinsfurt, MP 04790"),
        ("I live at 42 Baker Street, London NW1 6XE.", "42 Baker Street, London NW1 6XE"),
        ("Flat 6, Jenkins Trafficway is the new address", "Flat 6, Jenkins Trafficway"),
        ("Ship to Kranzstr. 60/95, 09895 Iserlohn, please.", "Kranzstr. 60/95, 09895 Iserlohn"),
        ("office at 12 rue de la Paix, 75002 Paris.", "12 rue de la Paix, 75002 Paris"),
        ("Plaza Amancio Agullo 73 Puerta 2, ok", "Plaza Amancio Agullo 73 Puerta 2"),
        ("Via Roma 10 is closed", "Via Roma 10"),
        ("billing: 4384 Eric Mission, Conwayberg, YT E3N 5N9", "4384 Eric Mission, Conwayberg, YT E3N 5N9"),
    ],
)
def test_street_addresses(text: str, address: str) -> None:
    assert [f.value for f in find_addresses(text) if f.kind == "street_address"] == [address]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("Ship to Via Leopoldo 38, Nembro.", [("street_address", "Via Leopoldo 38"), ("location", "Nembro")]),
        ("Box at P.O. Box 1234, Springfield, IL 62704", [("street_address", "P.O. Box 1234, Springfield, IL 62704")]),
        ("Mail: USCGC White, FPO AA 41099", [("street_address", "USCGC White, FPO AA 41099")]),
        ("Mail: PSC 1234, Box 5678, APO AE 09876", [("street_address", "PSC 1234, Box 5678, APO AE 09876")]),
    ],
)
def test_post_boxes_military_addresses_and_the_town_after_an_address(text: str, found: list[tuple[str, str]]) -> None:
    assert [(f.kind, f.value) for f in find_addresses(text)] == found


@pytest.mark.parametrize(
    "text", ["I have 3 Green apples", "rue is a herb", "we shipped 40 Units today", "Page 12 Main results"]
)
def test_address_look_alikes_are_not(text: str) -> None:
    assert find_addresses(text) == []


def test_reversible_placeholders_for_names_and_addresses() -> None:
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", reversible=True))
    vault = Vault()
    text = "Dear Anna Kowalski, the courier comes to 42 Baker Street, London NW1 6XE. Anna Kowalski, please sign."
    result = scanner.scan(text, ScanContext("input", vault=vault))
    assert result.sanitized_text == (
        "Dear <PERSON_1>, the courier comes to <STREET_ADDRESS_1>. <PERSON_1>, please sign."
    )
    assert result.details["found"] == {"person": 2, "street_address": 1}
    assert restore("Signed for <PERSON_1> at <STREET_ADDRESS_1>.", vault) == (
        "Signed for Anna Kowalski at 42 Baker Street, London NW1 6XE."
    )
    answer = "Anna Kowalski lives in Berlin, 42 Baker Street."
    # Answers name public people and places: names are left alone on output unless asked for.
    assert (
        scanner.scan(answer, ScanContext("output")).sanitized_text == "Anna Kowalski lives in Berlin, <STREET_ADDRESS>."
    )
    strict = PiiScanner(PiiScannerConfig(scanner="pii", names_on_output=True))
    assert (
        strict.scan(answer, ScanContext("output")).sanitized_text == "<PERSON> lives in <LOCATION>, <STREET_ADDRESS>."
    )


def test_a_scanner_with_names_asks_to_run_off_the_event_loop() -> None:
    assert PiiScanner(PiiScannerConfig(scanner="pii", ner="spacy")).off_loop
    assert not PiiScanner(PiiScannerConfig(scanner="pii")).off_loop  # the fast recogniser costs what patterns cost
    assert not PiiScanner(PiiScannerConfig(scanner="pii", entities=["email", "phone"])).off_loop


def test_a_changed_model_file_refuses_to_load(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_path(), copy)
    verify(copy)  # the installed model is the reviewed one
    target = copy / next(iter(MODEL_SHA256))
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(NerUnavailable, match="SHA-256"):
        verify(copy)


def test_chunks_cover_the_text_at_sentence_ends() -> None:
    text = "".join(f"Sentence number {i} is here. " for i in range(400))
    spans = chunks(text, 500)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(0 < high - low <= 500 for low, high in spans)
    assert all(text[high - 2 : high] == ". " for _, high in spans[:-1])
    assert chunks("x" * 1200, 500) == [(0, 500), (500, 1000), (1000, 1200)]  # no space: a hard cut


def test_ner_stops_at_its_time_budget_and_says_how_much_it_left() -> None:
    recognizer = NameRecognizer(frozenset({"person"}))
    # 33 KB, no two chunks alike (a chunk read before costs nothing, and would not test the budget).
    text = "".join(f"Anna Kowalski called at {i:05d}. " for i in range(1100))
    started = time.perf_counter()
    result = recognizer.find(text, budget_s=0.02)
    elapsed = time.perf_counter() - started
    assert 0 < result.unread_chars < len(text)
    assert result.findings and result.findings[0].value == "Anna Kowalski"
    # One chunk past the budget at most (~15 ms a chunk; generous for a loaded machine).
    assert elapsed < 1.0
    scanner = PiiScanner(PiiScannerConfig(scanner="pii", ner_budget_ms=20, ner="spacy"))
    assert scanner.scan(text, ScanContext("input", vault=Vault())).details["ner_unread_chars"] > 0


@pytest.mark.parametrize("split", ["dev", "holdout"])
def test_recall_and_precision_on_the_faker_sets(split: str) -> None:
    tallies = score(DETECTOR, faker_rows(split))
    structured, named, marked = group(tallies, STRUCTURED), group(tallies, NAMED), group(tallies, MARKED)
    # The goals of issue 12: structured ids recall >= 95% / precision >= 90%; names, addresses,
    # places and organisations recall >= 80%. The holdout split was scored once, after tuning.
    assert structured.recalled / structured.labelled >= 0.95
    assert structured.correct / structured.found >= 0.90
    assert named.recalled / named.labelled >= 0.80
    assert named.correct / named.found >= 0.80
    # Dates of birth and ages count only where marked; the holdout's "The driver was 45" is not
    # marked (it was written before the rule), so its ages are held to precision, not recall.
    births, ages = tallies["date_of_birth"], tallies["age"]
    assert births.recalled / births.labelled >= 0.90
    assert marked.correct / marked.found >= 0.95
    assert ages.recalled / ages.labelled >= (0.90 if split == "dev" else 0.60)


def test_scanners_of_two_policies_share_the_model_safely_across_threads() -> None:
    texts = [str(row["text"]) for row in faker_rows("dev")[:40]]
    one, two = (
        PiiScanner(PiiScannerConfig(scanner="pii", ner="spacy")),
        PiiScanner(PiiScannerConfig(scanner="pii", ner="spacy")),
    )
    sequential = [one.scan(t, ScanContext("input", vault=Vault())).sanitized_text for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        scanners = [one if i % 2 else two for i in range(len(texts))]
        threaded = list(
            pool.map(lambda s, t: s.scan(t, ScanContext("input", vault=Vault())).sanitized_text, scanners, texts)
        )
    assert threaded == sequential
    assert one.detector.names is not None and two.detector.names is not None
    assert one.detector.names.model is two.detector.names.model  # one model, one lock


def test_a_chunk_read_before_is_not_read_again_and_its_text_is_not_kept() -> None:
    recognizer = NameRecognizer(frozenset({"person", "location"}))
    history = "".join(f"Turn {i}: Anna Kowalski asked about the parcel to Warsaw again. " for i in range(60))
    first = recognizer.find(history, budget_s=30.0)
    started = time.perf_counter()
    again = recognizer.find(history, budget_s=30.0)
    repeat_s = time.perf_counter() - started
    assert again == first and first.unread_chars == 0
    assert ("person", "Anna Kowalski") in {(f.kind, f.value) for f in first.findings}
    assert repeat_s < 0.05  # ~4 KB: ~100 ms for the model, well under 1 ms from memory
    remembered = [entity for entities in recognizer.model.seen.values() for entity in entities]
    assert remembered and all(isinstance(start, int) and isinstance(end, int) for _, start, end in remembered)
    assert {label for label, _, _ in remembered} <= set(recognizer.model.nlp.get_pipe("ner").labels)


@pytest.mark.parametrize(
    "text",
    [
        "Aaaa, " * 5_500,
        "Aaaa and " * 3_600,
        "Dear Aaaa " * 3_200,
        "works at Aaaa-Bbbb " * 1_700,
        "moved from Aaaa de " * 1_700,
        "Aaaa Bbbb Cccc Dddd Eeee Ffff GmbH " * 900,
    ],
)
def test_name_patterns_scan_adversarial_inputs_in_linear_time(text: str) -> None:
    """32 KB of repetition through the organisation and cue-word patterns (no model): linear, bounded."""

    def cost(sample: str) -> float:
        # CPU time of this thread: on a loaded machine, wall time also counts the waits for a core.
        started = time.thread_time()
        find_organisations(sample)
        find_cued_names(sample)
        return time.thread_time() - started

    short_s, long_s = cost(text[: len(text) // 8]), cost(text)
    assert long_s < max(24 * short_s, 0.05), (short_s, long_s)  # 8x the text; quadratic would be 64x
    assert long_s < 2.0
