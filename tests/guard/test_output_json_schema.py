"""The json output scanner checks answers against the CLIENT's schema: it never fetches a reference,
runs patterns in linear time (RE2) and bounds its work (probe 2026-12-06 findings 1 and 2)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opsgate.domain.guard_config import JsonScannerConfig
from opsgate.guard import json_schema
from opsgate.guard.base import ScanContext, ScanResult
from opsgate.guard.json_schema import first_violation, schema_problem
from opsgate.guard.output import JsonScanner


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[tuple[str, list[str]]]:
    """A local server that records every request (a stand-in for cloud metadata)."""
    hits: list[str] = []
    handler = type("Handler", (_Recorder,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()


def scan(schema: Any, answer: Any) -> ScanResult:
    scanner = JsonScanner(JsonScannerConfig(scanner="json"))
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    return scanner.scan(json.dumps(answer), ScanContext("output", response_format=response_format))


def test_no_reference_is_ever_fetched(remote: tuple[str, list[str]]) -> None:
    url, hits = remote
    unusable = {
        "remote $ref": {"$ref": f"{url}/latest/meta-data/iam"},
        "relative $ref on a remote $id": {"$id": f"{url}/base/x", "$ref": "y"},
        "remote $dynamicRef": {"$dynamicRef": f"{url}/dyn#meta"},
        "remote $ref below": {"type": "object", "properties": {"a": {"$ref": f"{url}/a"}}},
    }
    for name, schema in unusable.items():
        problem = schema_problem(schema)
        assert problem is not None and "does not resolve inside the schema" in problem, name
        result = scan(schema, {"a": "hello"})
        assert result.verdict == "fail" and result.details["error"].startswith("schema unusable:"), name
    # Usable schemas whose URIs point at the server: resolved locally, or not references at all.
    usable = {
        "$schema URL": {"$schema": f"{url}/meta", "type": "object"},
        "remote $id, local $defs": {"$id": f"{url}/x", "$defs": {"s": {"type": "object"}}, "$ref": "#/$defs/s"},
        "embedded $id": {"$defs": {"s": {"$id": f"{url}/emb", "type": "object"}}, "$ref": f"{url}/emb"},
        "a reference inside const": {"type": "object", "not": {"const": {"$ref": f"{url}/c"}}},
    }
    for name, schema in usable.items():
        assert schema_problem(schema) is None, name
        assert scan(schema, {"a": "hello"}).verdict == "pass", name
    # A pointer into data that holds a remote reference: caught when validating, still not fetched.
    into_data = {"properties": {"a": {"$ref": "#/$defs/d/const"}}, "$defs": {"d": {"const": {"$ref": f"{url}/c"}}}}
    assert scan(into_data, {"a": 1}).verdict == "fail"
    assert hits == []


def test_local_references_still_work() -> None:
    schema = {
        "type": "object",
        "$defs": {"city": {"type": "string", "minLength": 2}, "node": {"$anchor": "n", "type": "integer"}},
        "properties": {"city": {"$ref": "#/$defs/city"}, "n": {"$ref": "#n"}},
        "required": ["city"],
    }
    assert schema_problem(schema) is None
    assert scan(schema, {"city": "Oslo", "n": 3}).verdict == "pass"
    wrong = scan(schema, {"city": "O"})
    assert wrong.verdict == "fail" and wrong.details["error"].startswith("schema: city:")
    assert scan(schema, {"city": "Oslo", "n": "x"}).verdict == "fail"
    assert scan({"$ref": "#/$defs/nope"}, 1).details["error"].startswith("schema unusable:")


def test_catastrophic_pattern_runs_in_linear_time() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a+)+$"}}}
    answer = {"a": "a" * 10_000 + "!"}
    assert scan(schema, {"a": "aaa"}).verdict == "pass"  # schema checked and cached
    started = time.thread_time()
    result = scan(schema, answer)
    assert time.thread_time() - started < 0.05  # Python re: ~2x per extra 'a', hours at this length
    assert result.verdict == "fail" and "does not match" in result.details["error"]


def test_pattern_properties_and_additional_properties_use_linear_patterns() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"^(a+)+$": {"type": "integer"}, "^x-[a-z]+$": {"type": "string"}},
        "additionalProperties": False,
    }
    assert scan(schema, {"aaa": 1, "x-tag": "v"}).verdict == "pass"
    assert scan(schema, {"aaa": "not an integer"}).verdict == "fail"
    started = time.thread_time()
    result = scan(schema, {"a" * 10_000 + "!": 1})
    assert time.thread_time() - started < 0.05
    assert result.verdict == "fail" and "Additional properties are not allowed" in result.details["error"]
    # propertyNames descends into "pattern": RE2 too.
    assert scan({"propertyNames": {"pattern": "^(a+)+$"}}, {"a" * 10_000 + "!": 1}).verdict == "fail"


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "string", "pattern": "^(?=a)a$"}, "is not supported"),  # lookahead
        ({"patternProperties": {"(a)\\1": {}}}, "is not supported"),  # backreference
        ({"type": "string", "pattern": "("}, "is not supported"),
        ({"properties": {"a": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": "x"}}}, "$schema"),
        ({"type": "nonsense"}, "not a valid JSON Schema"),
        ({"unevaluatedProperties": False}, "not supported"),
        ({"prefixItems": 5}, "not a valid JSON Schema"),
        ({"items": [{"type": "string"}]}, "not a valid JSON Schema"),
        ({"required": 5}, "not a valid JSON Schema"),
        ({"description": "x" * (65 * 1024)}, "larger than 64 KB"),
        (json.loads('{"not": ' * 40 + "{}" + "}" * 40), "nested deeper than 32"),
    ],
)
def test_unusable_schemas_are_named(schema: dict[str, Any], words: str) -> None:
    problem = schema_problem(schema)
    assert problem is not None and words in problem
    assert scan(schema, "anything").details["error"] == f"schema unusable: {problem}"


def _doubling(levels: int) -> dict[str, Any]:
    """``allOf`` of two references to the next level: 2**levels evaluations of one value."""
    defs: dict[str, Any] = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 2} for i in range(levels)}
    defs[f"d{levels}"] = {"type": "string"}
    return defs


def test_reference_graphs_and_unique_items_are_bounded() -> None:
    # Refused up front (pure, fast): 2**30 evaluations of one value, and references that loop.
    started = time.thread_time()
    problem = schema_problem({"$defs": _doubling(30), "$ref": "#/$defs/d0"})
    assert problem is not None and "checks of one value" in problem
    looping: list[dict[str, Any]] = [
        {"$ref": "#"},
        {"allOf": [{"$ref": "#"}]},
        {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}}, "$ref": "#/$defs/a"},
    ]
    for schema in looping:
        problem = schema_problem(schema)
        assert problem is not None and "loop" in problem
    assert time.thread_time() - started < 1.0
    # Recursion that reads the answer is fine.
    assert schema_problem({"type": "object", "properties": {"child": {"$ref": "#"}}}) is None
    # Allowed per value (2**12) but over a long array: the work budget stops it.
    costly = {"$defs": _doubling(12), "type": "array", "items": {"$ref": "#/$defs/d0"}}
    assert schema_problem(costly) is None
    started = time.thread_time()
    result = scan(costly, ["x"] * 5_000)
    assert time.thread_time() - started < json_schema.MAX_CPU_S + 1.0
    assert result.verdict == "fail" and "work budget" in result.details["error"]
    # uniqueItems on 20,000 distinct objects (the stock check compares every pair).
    started = time.thread_time()
    assert scan({"uniqueItems": True}, [{"a": i} for i in range(20_000)]).verdict == "pass"
    assert time.thread_time() - started < 1.0
    assert first_violation({"uniqueItems": True}, [{"a": 1, "b": [1.0]}, {"b": [1], "a": 1}]) is not None
    assert first_violation({"uniqueItems": True}, [True, 1, "1", None, False, 0]) is None


def test_answers_json_cannot_parse_are_a_fail_not_a_crash() -> None:
    scanner = JsonScanner(JsonScannerConfig(scanner="json"))
    context = ScanContext("output", response_format={"type": "json_object"})
    assert scanner.scan("1" * 5000, context).verdict == "fail"  # past Python's int digit limit
    assert scanner.scan("[" * 100_000 + "]" * 100_000, context).verdict == "fail"


def test_checking_a_large_schema_is_cheap_and_malformed_parts_never_crash() -> None:
    group = {
        "type": "object",
        "properties": {f"f{i}": {"anyOf": [{"type": "string"}, {"type": "null"}]} for i in range(20)},
    }
    schema = {"type": "object", "properties": {f"g{j}": {"type": "array", "items": group} for j in range(40)}}
    assert 40_000 < len(json.dumps(schema)) < json_schema.MAX_SCHEMA_BYTES
    started = time.thread_time()
    assert schema_problem(schema) is None
    assert time.thread_time() - started < 1.5  # 2020-12's meta-schema took ~0.5 s here; draft 7's ~0.1 s
    # A subschema only 2020-12 knows, malformed: the answer's check says so instead of raising.
    assert scan({"$defs": {"a": {"type": "nonsense"}}, "$ref": "#/$defs/a"}, 1).details["error"] == (
        "schema unusable: the schema cannot be used: UnknownType"
    )
