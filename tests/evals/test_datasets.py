"""Datasets: import with errors naming file/line/field, hostile files, versions, export, from-logs."""

from __future__ import annotations

import io
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opsgate.evals.dataset import DatasetError, parse_item
from opsgate.evals.from_logs import LogSelection, build_from_logs, pii_scrubber
from opsgate.evals.importers import MAX_LINE_BYTES, read_dataset, write_jsonl
from opsgate.evals.store import ANY_TENANT, EvalStore
from opsgate.store.query import RecordQuery


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_jsonl_import_and_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = orjson.dumps({"prompt": "2+2?", "reference": "4"})
    path = _write(tmp_path / "d.jsonl", [good, orjson.dumps({"messages": [{"role": "robot", "content": "x"}]})])
    with pytest.raises(DatasetError) as error:
        read_dataset(path)
    assert f"{path}:2: messages[0].role: must be one of" in str(error.value)
    result = read_dataset(path, skip_invalid=True)
    assert len(result.items) == 1 and result.skipped == 1 and "d.jsonl:2" in result.problems[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"prompt": "a\\u0000b"}', "prompt: contains a NUL character"),
        (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
        (b'{"prompt": 42}', "prompt: must be a string, not a number"),
        (b'{"prompt": "x", "reference": {"a": 1}}', "reference: must be a string, not an object"),
        (b'{"prompt": "x", "colour": "red"}', "colour: is not a known field"),
        (b'{"prompt": "x", "messages": []}', "messages: give exactly one of messages and prompt"),
        (b"[1, 2]", "an item must be an object, not a list"),
        (b'{"prompt": "x", "schema": {"type": "nonsense"}}', "schema: is not a valid JSON schema"),
        (b'{"prompt": "x", "metadata": {"n": 1e400}}', "not valid JSON"),
        (b"{not json", "not valid JSON"),
        (b'{"prompt": "x", "metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", "nests deeper"),
    ],
)
def test_hostile_lines_are_named_errors(tmp_path: Path, line: bytes, expected: str) -> None:
    path = _write(tmp_path / "h.jsonl", [orjson.dumps({"prompt": "fine"}), line])
    with pytest.raises(DatasetError) as error:
        read_dataset(path)
    assert f"{path}:2: " in str(error.value) and expected in str(error.value)


def test_huge_line_is_bounded_and_skippable(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        out.write(b'{"prompt": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n')
        out.write(orjson.dumps({"prompt": "after"}) + b"\n")
    with pytest.raises(DatasetError, match=r"big\.jsonl:1: line is longer than"):
        read_dataset(path)
    result = read_dataset(path, skip_invalid=True)
    assert [i.prompt for i in result.items] == ["after"] and result.skipped == 1


def test_csv_and_parquet(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('prompt,reference\n"Capital of France?",Paris\nSay hi,"[""hi"", ""hello""]"\n')
    items = read_dataset(csv_path).items
    assert items[0].reference == ["Paris"] and items[1].reference == ["hi", "hello"]
    bad = tmp_path / "bad.csv"
    bad.write_text('prompt,messages\nok,\n,"[{""role"": 1}]"\n')
    with pytest.raises(DatasetError, match=r"bad.csv:3: messages\[0\].role: must be a string"):
        read_dataset(bad)
    table = pa.table(
        {
            "messages": [[{"role": "user", "content": "hi"}], None],
            "prompt": [None, "p"],
            "reference": ["hello", None],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    items = read_dataset(tmp_path / "d.parquet").items
    assert items[0].messages == [{"role": "user", "content": "hi"}] and items[1].prompt == "p"
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DatasetError, match=r"junk\.parquet:row 1: not a readable Parquet file"):
        read_dataset(tmp_path / "junk.parquet")


def test_versions_are_content_hashed_and_immutable(evals: EvalStore) -> None:
    items = [parse_item({"prompt": f"q{i}", "reference": str(i)}) for i in range(3)]
    first, created = evals.save_dataset("a", "arith", items)
    assert created and first.version == 1
    entry = evals.store.audit_entries(1)[0]
    assert entry["action"] == "eval_dataset_created" and entry["target"] == first.id
    again, created = evals.save_dataset("a", "arith", list(items))
    assert not created and again.id == first.id  # same content: same version
    second, created = evals.save_dataset("a", "arith", items[:2])
    assert created and second.version == 2 and second.content_hash != first.content_hash
    assert evals.find_dataset("a", "arith").id == second.id  # type: ignore[union-attr]
    assert evals.find_dataset("a", "arith@1").id == first.id  # type: ignore[union-attr]
    assert [i.prompt for i in evals.dataset_items(first.id)] == ["q0", "q1", "q2"]
    assert evals.find_dataset("b", "arith") is None  # another tenant sees nothing
    assert evals.find_dataset("b", first.id) is None
    assert evals.find_dataset(ANY_TENANT, first.id) is not None
    out = io.BytesIO()
    write_jsonl(evals.dataset_items(first.id), out)
    assert out.getvalue().splitlines()[0] == b'{"prompt":"q0","reference":"0"}'
    with pytest.raises(DatasetError, match="dataset name"):
        evals.save_dataset("a", "bad@name", items)


def test_from_logs_scrubs_dedups_and_samples() -> None:
    now = time.time()

    def record(i: int, text: str, answer: str, **extra: object) -> dict[str, object]:
        return {
            "id": f"r{i}",
            "ts": now - i,
            "endpoint": "chat",
            "model": "m",
            "request": {"model": "m", "messages": [{"role": "user", "content": text}]},
            "output_text": answer,
            **extra,
        }

    records = [
        record(0, "mail me at jane.doe@example.com please", "ok"),
        record(1, "same question", "a1"),
        record(2, "same question", "a2"),
        record(3, "judge this", "x", metadata={"purpose": "eval"}),
        record(4, "embedding", "x", endpoint="embedding"),
        *[record(10 + i, f"question {i}", f"answer {i}") for i in range(10)],
    ]
    result = build_from_logs(records, LogSelection(RecordQuery()), pii_scrubber())
    texts = [i.messages[0]["content"] for i in result.items if i.messages]
    assert "mail me at <EMAIL> please" in texts and not any("jane" in t for t in texts)
    assert result.duplicates == 1 and result.unusable == 1 and result.redacted == 1
    assert texts.count("same question") == 1 and len(result.items) == 12
    first = build_from_logs(records, LogSelection(RecordQuery(), sample=5, seed=7), pii_scrubber())
    second = build_from_logs(records, LogSelection(RecordQuery(), sample=5, seed=7), pii_scrubber())
    assert [i.input_hash() for i in first.items] == [i.input_hash() for i in second.items]
    assert len(first.items) == 5


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"prompt,reference\nok,fine\n\xff\xfe,x\n", "bad.csv:3: not valid UTF-8"),
        (b"prompt,reference\nok,fine\nsay\x00hi,x\n", "bad.csv:3: prompt: contains a NUL character"),
        (b"prompt,colour\nok,red\n", "bad.csv:1: colour: is not a known column"),
        (b'prompt\n"' + b"a" * (MAX_LINE_BYTES + 10) + b'"\n', "bad.csv:"),
        (b"prompt,reference\nok,fine,extra\n", "has more cells than the header"),
    ],
)
def test_hostile_csv(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as error:
        read_dataset(path)
    assert expected in str(error.value)


def test_a_broken_csv_line_ends_the_file_even_with_skip_invalid(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv"
    path.write_bytes(b"prompt\nfirst\n\xff\xfe\nthird\n")
    with pytest.raises(DatasetError, match=r"broken\.csv:3: not valid UTF-8"):
        read_dataset(path, skip_invalid=True)  # "third" would be dropped silently otherwise
    fine = tmp_path / "items.csv"
    fine.write_bytes(b"prompt\nfirst\nsay\x00no\nthird\n")
    result = read_dataset(fine, skip_invalid=True)
    assert [i.prompt for i in result.items] == ["first", "third"] and result.skipped == 1


def test_feedback_filter_reads_the_feedback_table(evals: EvalStore) -> None:
    from opsgate.evals.from_logs import feedback_ids

    store = evals.store
    rows = [("f1", "r-bad", 0, "a"), ("f2", "r-good", 1, "a"), ("f3", "r-other", 0, "b")]
    with store.connection() as conn, store.transaction(conn):
        for fid, request_id, positive, tenant in rows:
            store.execute(
                conn,
                "INSERT INTO feedback (id, ts, request_id, tenant, raw_score, positive) VALUES (?, ?, ?, ?, ?, ?)",
                [fid, time.time(), request_id, tenant, "down" if not positive else "up", positive],
            )
    assert feedback_ids(store, positive=False, since=None, tenant=None) == {"r-bad", "r-other"}
    assert feedback_ids(store, positive=False, since=None, tenant="a") == {"r-bad"}
    assert feedback_ids(store, positive=True, since=time.time() + 60, tenant=None) == set()
