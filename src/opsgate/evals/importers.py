"""Reading dataset files: JSONL, CSV and Parquet; writing JSONL.

Every problem names the file, the line (or row) and the field. Lines are read with a length cap,
so a file with one enormous line cannot take the process's memory, and bytes are decoded strictly
(broken UTF-8 is an error, not replacement characters). Nothing is dropped silently: with
``skip_invalid`` bad items are skipped and counted, and the first problems are kept for the report.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from opsgate.evals.dataset import DatasetError, DatasetItem, ItemError, parse_item

MAX_LINE_BYTES = 4 * 1024 * 1024
MAX_ITEMS = 200_000
MAX_FILE_BYTES = 1024 * 1024 * 1024  # 1 GiB of file; Parquet also by rows (its pages may be compressed)
_JSON_COLUMNS = ("messages", "reference", "schema", "metadata")
FORMATS = ("jsonl", "csv", "parquet")


@dataclass
class ImportResult:
    """The items read, and what was skipped (only with ``skip_invalid``)."""

    items: list[DatasetItem]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)


def detect_format(path: Path, given: str | None = None) -> str:
    """The file's format from ``given`` or its suffix."""
    name = (given or path.suffix.lstrip(".")).lower()
    name = {"json": "jsonl", "ndjson": "jsonl", "pq": "parquet"}.get(name, name)
    if name not in FORMATS:
        raise DatasetError([f"{path}: unknown format '{name}' (use --format jsonl, csv or parquet)"])
    return name


def read_dataset(path: str | Path, file_format: str | None = None, *, skip_invalid: bool = False) -> ImportResult:
    """Read and check every item of a dataset file."""
    path = Path(path)
    kind = detect_format(path, file_format)
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DatasetError([f"{path}: cannot read: {error.strerror}"]) from None
    if size > MAX_FILE_BYTES:
        raise DatasetError([f"{path}: larger than {MAX_FILE_BYTES // 2**20} MiB; split the dataset"])
    try:
        handle = path.open("rb")
    except OSError as error:
        raise DatasetError([f"{path}: cannot read: {error.strerror}"]) from None
    with handle:
        rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[kind](handle, str(path))
        return collect(rows, skip_invalid)


Row = tuple[str, Any]  # (where: "file:line", parsed value or an ItemError)


class FileError(ItemError):
    """A problem that ends the file (a broken CSV line, an unreadable Parquet page): fatal even with
    ``skip_invalid``, since the rest cannot be read and must not be dropped silently."""


def collect(rows: Iterable[Row], skip_invalid: bool) -> ImportResult:
    """Check each row; fail on the first bad one unless ``skip_invalid`` (then count and keep going)."""
    result = ImportResult([])
    for where, value in rows:
        try:
            if isinstance(value, ItemError):
                raise value
            item = parse_item(value)
        except ItemError as error:
            problem = f"{where}: {error}"
            if not skip_invalid or isinstance(error, FileError):
                raise DatasetError([problem]) from None
            result.skipped += 1
            if len(result.problems) < 20:
                result.problems.append(problem)
            continue
        if len(result.items) >= MAX_ITEMS:
            raise DatasetError([f"{where}: more than {MAX_ITEMS} items; split the dataset"])
        result.items.append(item)
    if not result.items:
        raise DatasetError([*result.problems, "the dataset has no valid items"])
    return result


def _lines(handle: BinaryIO, name: str) -> Iterator[tuple[int, bytes | ItemError]]:
    """(line number, bytes) with a cap per line; an over-long line is reported and skipped to its end."""
    number = 0
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:  # discard the rest of the line without holding it
                rest = handle.readline(1024 * 1024)
                if not rest or rest.endswith(b"\n"):
                    break
            yield number, ItemError("", f"line is longer than {MAX_LINE_BYTES} bytes")
            continue
        yield number, line


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ItemError("", f"not valid UTF-8 (byte {error.start})") from None


def _jsonl_rows(handle: BinaryIO, name: str) -> Iterator[Row]:
    for number, line in _lines(handle, name):
        where = f"{name}:{number}"
        if isinstance(line, ItemError):
            yield where, line
            continue
        if not line.strip():
            continue
        try:
            text = _decode(line)
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as error:
                raise ItemError("", f"not valid JSON ({str(error).split(':')[0]})") from None
        except ItemError as error:
            yield where, error
            continue
        yield where, value


def _csv_rows(handle: BinaryIO, name: str) -> Iterator[Row]:
    # Streamed line by line (a quoted field may span lines): each line capped and strictly decoded, so
    # an error names its line. A broken line ends the file (what follows cannot be parsed reliably).
    csv.field_size_limit(MAX_LINE_BYTES)
    where = {"line": 0}

    def lines() -> Iterator[str]:
        for number, raw in _lines(handle, name):
            where["line"] = number
            if isinstance(raw, ItemError):
                raise raw
            yield _decode(raw)

    reader = csv.DictReader(lines())
    try:
        columns = reader.fieldnames or []
    except (ItemError, csv.Error) as error:
        yield f"{name}:{where['line']}", FileError("", _message(error))
        return
    unknown = [c for c in columns if c not in ("id", "prompt", *_JSON_COLUMNS)]
    if unknown:
        yield f"{name}:1", FileError(unknown[0], "is not a known column (id, prompt, messages, reference, ...)")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except (ItemError, csv.Error) as error:
            yield f"{name}:{where['line']}", FileError("", _message(error))
            return
        try:
            yield f"{name}:{reader.line_num}", _from_columns(row)
        except ItemError as error:
            yield f"{name}:{reader.line_num}", error


def _message(error: Exception) -> str:
    return error.message if isinstance(error, ItemError) else f"not valid CSV ({error})"


def _from_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row's cells as an item: JSON columns parsed; a plain-text reference is one reference."""
    item: dict[str, Any] = {}
    for column, cell in row.items():
        if column is None:
            raise ItemError("", "has more cells than the header has columns")
        if cell is None or cell == "":
            continue
        if column in ("messages", "schema", "metadata") or (column == "reference" and cell.lstrip().startswith("[")):
            try:
                item[column] = orjson.loads(cell)
            except orjson.JSONDecodeError:
                raise ItemError(column, "is not valid JSON") from None
        else:
            item[column] = cell
    return item


def _parquet_rows(handle: BinaryIO, name: str) -> Iterator[Row]:
    try:  # pyarrow is optional (as for the request log's Parquet export)
        pa: Any = importlib.import_module("pyarrow")
        pq: Any = importlib.import_module("pyarrow.parquet")
    except ImportError:
        yield f"{name}:row 1", FileError("", "reading Parquet needs pyarrow (pip install pyarrow)")
        return
    try:
        parquet = pq.ParquetFile(handle)
    except (pa.ArrowException, OSError) as error:
        yield f"{name}:row 1", FileError("", f"not a readable Parquet file ({error})")
        return
    if parquet.metadata.num_rows > MAX_ITEMS:
        yield f"{name}:row 1", FileError("", f"more than {MAX_ITEMS} rows; split the dataset")
        return
    unknown = [c for c in parquet.schema_arrow.names if c not in ("id", "prompt", *_JSON_COLUMNS)]
    if unknown:
        yield f"{name}:row 1", FileError(unknown[0], "is not a known column (id, prompt, messages, reference, ...)")
        return
    number = 0
    try:
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                where = f"{name}:row {number}"
                try:
                    yield where, _from_parquet(row)
                except ItemError as error:
                    yield where, error
    except pa.ArrowException as error:
        yield f"{name}:row {number + 1}", FileError("", f"unreadable ({error})")


def _from_parquet(row: dict[str, Any]) -> dict[str, Any]:
    """Columns may hold JSON text (like CSV) or nested values."""
    item: dict[str, Any] = {}
    for column, value in row.items():
        if value is None:
            continue
        if column in ("messages", "schema", "metadata") and isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise ItemError(column, "is not valid JSON") from None
        item[column] = value
    return item


def write_jsonl(items: Iterable[DatasetItem], out: BinaryIO) -> int:
    """Write items as JSONL; returns how many."""
    count = 0
    for item in items:
        out.write(orjson.dumps(item.to_dict()) + b"\n")
        count += 1
    return count
