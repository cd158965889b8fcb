"""Export encoders for the request log: JSON lines, CSV and Parquet, produced in chunks, never whole.

Shared by ``GET /admin/requests/export`` and ``opsgate logs export``.
"""

from __future__ import annotations

import csv
import importlib
import io
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from opsgate.domain.errors import InvalidRequestError
from opsgate.store.sql import LIST_COLUMNS

EXPORT_COLUMNS: tuple[str, ...] = (*LIST_COLUMNS, "request", "response")
EXPORT_MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_FLOAT_COLUMNS = {"ts", "latency_ms", "ttft_ms", "cost"}
_INT_COLUMNS = {"status", "prompt_tokens", "completion_tokens", "cached_tokens"}
_BOOL_COLUMNS = {"stream", "cached"}
_CHUNK_BYTES = 64 * 1024
_PARQUET_ROW_GROUP = 1000


def _pyarrow() -> tuple[Any, Any] | None:
    """``(pyarrow, pyarrow.parquet)`` when installed (an optional dependency), else None."""
    try:
        return importlib.import_module("pyarrow"), importlib.import_module("pyarrow.parquet")
    except ImportError:
        return None


def require_export_format(name: str) -> str:
    """``name`` if it is an export format this process can write, else a 400 saying why not."""
    if name not in EXPORT_MEDIA_TYPES:
        raise InvalidRequestError(f"format must be one of {', '.join(EXPORT_MEDIA_TYPES)}.", param="format")
    if name == "parquet" and _pyarrow() is None:
        raise InvalidRequestError(
            "Parquet export needs pyarrow, which is not installed here (pip install pyarrow); "
            "use format=jsonl or format=csv.",
            param="format",
            code="pyarrow_not_installed",
        )
    return name


# A text cell a spreadsheet would read as a formula ("=HYPERLINK(...)", "+1", "@SUM"): prefixed with a
# quote, as OWASP advises for CSV exports. Prompts and user ids are the clients' own text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool | dict | list) or column in ("request", "response"):
        return orjson.dumps(value).decode()
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def _parquet_cell(column: str, value: Any) -> Any:
    if column in _FLOAT_COLUMNS | _INT_COLUMNS | _BOOL_COLUMNS or value is None or isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _jsonl(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    for record in records:
        yield orjson.dumps(record) + b"\n"


def _csv(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    for record in itertools.chain([None], records):
        if record is not None:
            writer.writerow([_csv_cell(c, record.get(c)) for c in EXPORT_COLUMNS])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()


class _Drain:
    """A write-only file for pyarrow whose bytes are taken away as soon as each row group is written."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def _parquet(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    modules = _pyarrow()
    if modules is None:
        raise InvalidRequestError("Parquet export needs pyarrow.", param="format")
    pa, pq = modules

    def arrow_type(column: str) -> Any:
        if column in _FLOAT_COLUMNS:
            return pa.float64()
        if column in _INT_COLUMNS:
            return pa.int64()
        return pa.bool_() if column in _BOOL_COLUMNS else pa.string()

    schema = pa.schema([(column, arrow_type(column)) for column in EXPORT_COLUMNS])
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema)
    records = iter(records)
    while batch := list(itertools.islice(records, _PARQUET_ROW_GROUP)):
        columns = {c: [_parquet_cell(c, r.get(c)) for r in batch] for c in EXPORT_COLUMNS}
        writer.write_table(pa.table(columns, schema=schema))
        yield sink.take()
    writer.close()
    yield sink.take()


def export_chunks(records: Iterable[dict[str, Any]], export_format: str) -> Iterator[bytes]:
    """``records`` encoded as ``export_format``, in chunks of about 64 KiB (never the whole export at once)."""
    encoders = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet}
    pending: list[bytes] = []
    size = 0
    for part in encoders[export_format](records):
        pending.append(part)
        size += len(part)
        if size >= _CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
