"""The prompt registry: named templates with immutable versions, labels, and sandboxed rendering.

A version holds chat messages whose contents are Jinja2 templates, the variables they declare, and
parameters (temperature, max_tokens, response_format). Rendering uses Jinja2's
``ImmutableSandboxedEnvironment``: no attribute access to Python internals, no mutation of the
variables, and a template is parsed once per version (cached by the caller). A request's variables
must be exactly the declared ones: a missing or extra one is a 400 naming it.

Tenancy: a tenant's prompts are its own; operator prompts (tenant NULL) are shared by everyone and
are what releases bind. A tenant's reference resolves in its own scope first, then the operator's.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from jinja2 import TemplateError

from opsgate.audit.chain import append_entry
from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.releases.sandbox import (
    MAX_RENDER_SECONDS,
    PromptEnvironment,
    RenderTimeout,
    check_template,
    render_bounded,
)
from opsgate.store.sql import SqlRecordStore

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
LABEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
PARAMETERS = {"temperature", "top_p", "max_tokens", "response_format", "stop", "seed"}
ROLES = {"system", "developer", "user", "assistant"}
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_VARIABLE_CHARS = 32 * 1024  # one variable's value, as text
MAX_VARIABLES_CHARS = 128 * 1024  # all of them together
MAX_RENDERED_CHARS = 256 * 1024
TIMEOUT_COOLDOWN_SECONDS = 30.0  # a version that ran out of render time is refused this long, without rendering
MAX_PARAMETERS_CHARS = 64 * 1024  # a version's parameters, as JSON (a json_schema response_format)
_COLUMNS = "id, tenant, name, version, messages, variables, parameters, notes, content_hash, created_at, created_by"


class PromptError(InvalidRequestError):
    """A prompt reference, template or variable the caller got wrong (400 naming it)."""


_ENV = PromptEnvironment()  # the immutable sandbox, bounded (releases/sandbox.py)


@dataclass(frozen=True)
class PromptVersion:
    """One immutable version of a named prompt."""

    id: str
    tenant: str | None
    name: str
    version: int
    messages: list[dict[str, str]]
    variables: list[str]
    parameters: dict[str, Any]
    notes: str | None
    content_hash: str
    created_at: float
    created_by: str | None
    _compiled: list[tuple[str, Any]] = field(default_factory=list, compare=False, repr=False)
    _timed_out: list[float] = field(default_factory=list, compare=False, repr=False)  # monotonic, last one

    @property
    def ref(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for the API and CLI."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def render(self, variables: dict[str, Any]) -> list[dict[str, str]]:
        """The messages with ``variables`` filled in (exactly the declared ones)."""
        check_variables(self.variables, variables)
        if self._timed_out and time.monotonic() - self._timed_out[-1] < TIMEOUT_COOLDOWN_SECONDS:
            # Each render out of time held the event loop for the budget: a burst of requests for the same
            # hostile version would add those up, so it is refused for a while without rendering.
            raise PromptError(
                f"prompt {self.ref} failed to render: it took more than {MAX_RENDER_SECONDS:g} s less than "
                f"{TIMEOUT_COOLDOWN_SECONDS:g} s ago.",
                param="metadata.variables",
                code="prompt_render_failed",
            )
        if not self._compiled:
            self._compiled.extend((m["role"], _ENV.from_string(m["content"])) for m in self.messages)
        out: list[dict[str, str]] = []
        total = 0
        for role, template in self._compiled:
            try:
                text = render_bounded(template, variables, MAX_RENDERED_CHARS - total)
            except RenderTimeout as error:
                self._timed_out[:] = [time.monotonic()]
                raise PromptError(
                    f"prompt {self.ref} failed to render: {error}",
                    param="metadata.variables",
                    code="prompt_render_failed",
                ) from None
            except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as error:
                # Sandbox refusals (SecurityError) are TemplateErrors; the rest is the template's own arithmetic.
                raise PromptError(
                    f"prompt {self.ref} failed to render: {type(error).__name__}: {error}"[:500],
                    param="metadata.variables",
                    code="prompt_render_failed",
                ) from None
            total += len(text) if text is not None else MAX_RENDERED_CHARS + 1
            if text is None or total > MAX_RENDERED_CHARS:
                raise PromptError(
                    f"prompt {self.ref} renders to more than {MAX_RENDERED_CHARS} characters.",
                    param="metadata.variables",
                    code="prompt_too_long",
                )
            out.append({"role": role, "content": text or ""})
        return out


def check_variables(declared: Sequence[str], given: dict[str, Any]) -> None:
    """A missing or extra variable, or an oversized one, is a 400 naming it."""
    for name in declared:
        if name not in given:
            raise PromptError(f"missing prompt variable '{name}'.", param=f"metadata.variables.{name}")
    for name in given:
        if name not in declared:
            raise PromptError(
                f"unknown prompt variable '{str(name)[:64]}' (declared: {', '.join(declared) or 'none'}).",
                param=f"metadata.variables.{str(name)[:64]}",
            )
    total = 0
    for name, value in given.items():
        size = len(value) if isinstance(value, str) else len(orjson.dumps(value))
        total += size
        if size > MAX_VARIABLE_CHARS or total > MAX_VARIABLES_CHARS:
            raise PromptError(
                f"prompt variable '{name}' is too large (at most {MAX_VARIABLE_CHARS} characters each, "
                f"{MAX_VARIABLES_CHARS} in all).",
                param=f"metadata.variables.{name}",
            )


def check_name(name: object, what: str = "name", pattern: re.Pattern[str] = NAME) -> str:
    """A prompt name or label: lower-case letters, digits, ``_.-``; a bad one is a 400."""
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise PromptError(f"{what} must match {pattern.pattern}.", param=what)
    return name


def parse_ref(ref: object) -> tuple[str, str | int]:
    """``name@label`` or ``name@3`` (``name`` alone means ``name@production``)."""
    if not isinstance(ref, str):
        raise PromptError("metadata.prompt must be a string 'name@label' or 'name@version'.", param="metadata.prompt")
    name, _, selector = ref.partition("@")
    check_name(name, "metadata.prompt")
    if not selector:
        return name, "production"
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int() (a 500 before).
    if selector.isascii() and selector.isdigit() and len(selector) <= 9:
        return name, int(selector)
    return name, check_name(selector, "metadata.prompt", LABEL)


def validate_spec(messages: object, variables: object, parameters: object) -> tuple[list[dict[str, str]], list[str]]:
    """Check a new version's parts (every template must parse; variables declared and used)."""
    if not isinstance(messages, list) or not messages or len(messages) > 32:
        raise PromptError("messages must be a list of 1 to 32 {role, content} objects.", param="messages")
    out: list[dict[str, str]] = []
    size = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise PromptError("each message is {role, content}.", param=f"messages[{index}]")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES:  # a list or object is unhashable: not a 500
            raise PromptError(f"role must be one of {', '.join(sorted(ROLES))}.", param=f"messages[{index}].role")
        if not isinstance(content, str) or "\x00" in content:
            raise PromptError("content must be text without NUL.", param=f"messages[{index}].content")
        size += len(content)
        if size > MAX_TEMPLATE_CHARS:
            raise PromptError(f"templates may hold {MAX_TEMPLATE_CHARS} characters.", param=f"messages[{index}]")
        try:
            refused = check_template(_ENV, content)
        except TemplateError as error:
            raise PromptError(f"template does not parse: {error}"[:300], param=f"messages[{index}].content") from None
        except RecursionError:  # jinja parses and compiles recursively: ~100 nested brackets are enough
            raise PromptError("template nests too deeply.", param=f"messages[{index}].content") from None
        if refused is not None:
            raise PromptError(refused, param=f"messages[{index}].content")
        out.append({"role": role, "content": content})
    if not isinstance(variables, list) or len(variables) > 64:
        raise PromptError("variables must be a list of at most 64 names.", param="variables")
    for name in variables:
        if not isinstance(name, str) or not VARIABLE.fullmatch(name):
            raise PromptError(f"variable names must match {VARIABLE.pattern}.", param="variables")
    if len(set(variables)) != len(variables):
        raise PromptError("a variable is declared twice.", param="variables")
    if not isinstance(parameters, dict) or not set(parameters) <= PARAMETERS:
        raise PromptError(f"parameters may hold {', '.join(sorted(PARAMETERS))}.", param="parameters")
    check_parameters(parameters, "parameters")
    return out, list(variables)


def check_parameters(parameters: dict[str, Any], where: str) -> None:
    """Sampling parameters in range (a NaN temperature or a negative max_tokens is a 400)."""
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = parameters.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high
        ):
            raise PromptError(f"{key} must be a number from {low:g} to {high:g}.", param=f"{where}.{key}")
    tokens = parameters.get("max_tokens")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 1 << 20):
        raise PromptError("max_tokens must be a whole number from 1 to 1048576.", param=f"{where}.max_tokens")
    response_format = parameters.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict)
        or response_format.get("type") not in ("text", "json_object", "json_schema")
    ):
        raise PromptError("response_format must be an OpenAI response_format object.", param=f"{where}.response_format")
    stop = parameters.get("stop")
    if stop is not None and not (
        (isinstance(stop, str) and "\x00" not in stop)
        or (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and "\x00" not in s for s in stop))
    ):
        raise PromptError("stop must be text or a list of at most 4 texts, without NUL.", param=f"{where}.stop")
    seed = parameters.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -(2**63) <= seed < 2**63):
        raise PromptError("seed must be a whole number (64-bit).", param=f"{where}.seed")
    try:  # stored and hashed as JSON: nesting past orjson's depth limit would be a 500 there
        size = len(orjson.dumps(parameters))
    except orjson.JSONEncodeError:
        size = MAX_PARAMETERS_CHARS + 1
    if size > MAX_PARAMETERS_CHARS:
        raise PromptError(
            f"parameters must be JSON of at most {MAX_PARAMETERS_CHARS} characters, not nested too deep.", param=where
        )


def _hash(messages: list[dict[str, str]], variables: list[str], parameters: dict[str, Any]) -> str:
    blob = orjson.dumps([messages, variables, parameters], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def _scope(tenant: str | None) -> str:
    return tenant if tenant is not None else ""


def _tenant_sql(tenant: str | None) -> tuple[str, list[Any]]:
    return ("tenant IS NULL", []) if tenant is None else ("tenant = ?", [tenant])


def bump_clock(store: SqlRecordStore, conn: Any) -> None:
    """Tell every replica's cache to reload (inside the caller's transaction)."""
    store.execute(conn, "UPDATE release_clock SET counter = counter + 1 WHERE id = 1")


class PromptStore:
    """Reads and writes prompt versions and labels (blocking: call from a worker thread)."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store

    def create(
        self,
        tenant: str | None,
        name: str,
        messages: object,
        variables: object,
        parameters: object = None,
        notes: object = None,
        actor: str | None = None,
    ) -> tuple[PromptVersion, bool]:
        """The next version of ``name`` (the same content as the latest is not a new one)."""
        check_name(name)
        clean, declared = validate_spec(messages, variables, parameters or {})
        params = dict(parameters or {})  # type: ignore[call-overload]
        if notes is not None and (not isinstance(notes, str) or len(notes) > 4000 or "\x00" in notes):
            raise PromptError("notes must be text of at most 4000 characters.", param="notes")
        digest = _hash(clean, declared, params)
        condition, args = _tenant_sql(tenant)
        with self.store.connection() as conn, self.store.transaction(conn):
            if self.store.dialect == "postgres":
                self.store.execute(conn, "SELECT pg_advisory_xact_lock(7041914)")
            latest = self.store.execute(
                conn,
                f"SELECT {_COLUMNS} FROM prompt_versions WHERE {condition} AND name = ? ORDER BY version DESC LIMIT 1",
                [*args, name],
            ).fetchone()
            if latest is not None and latest[8] == digest:
                return _version(latest), False
            version = PromptVersion(
                id=f"pv_{uuid.uuid4().hex[:20]}",
                tenant=tenant,
                name=name,
                version=(int(latest[3]) + 1) if latest else 1,
                messages=clean,
                variables=declared,
                parameters=params,
                notes=notes if isinstance(notes, str) else None,
                content_hash=digest,
                created_at=time.time(),
                created_by=actor,
            )
            self.store.execute(
                conn,
                f"INSERT INTO prompt_versions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    version.id,
                    tenant,
                    name,
                    version.version,
                    orjson.dumps(clean).decode(),
                    orjson.dumps(declared).decode(),
                    orjson.dumps(params).decode(),
                    version.notes,
                    digest,
                    version.created_at,
                    actor,
                ],
            )
            append_entry(
                self.store,
                conn,
                actor,
                "prompt_created",
                f"prompt:{_scope(tenant) or '*'}/{name}",
                {"tenant": tenant, "name": name, "version": version.version, "content_hash": digest},
            )
        return version, True

    def get(self, tenant: str | None, name: str, version: int) -> PromptVersion | None:
        """One version in exactly ``tenant``'s scope."""
        condition, args = _tenant_sql(tenant)
        with self.store.connection() as conn:
            row = self.store.execute(
                conn,
                f"SELECT {_COLUMNS} FROM prompt_versions WHERE {condition} AND name = ? AND version = ?",
                [*args, name, version],
            ).fetchone()
        return _version(row) if row else None

    def label_version(self, tenant: str | None, name: str, label: str) -> int | None:
        """The version ``label`` points at in ``tenant``'s scope."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn,
                "SELECT version FROM prompt_labels WHERE scope = ? AND name = ? AND label = ?",
                [_scope(tenant), name, label],
            ).fetchone()
        return int(row[0]) if row else None

    def resolve(self, tenant: str | None, ref: str) -> PromptVersion:
        """``name@label``/``name@N`` in the tenant's scope, then the operator's; else a 404 naming it."""
        name, selector = parse_ref(ref)
        scopes = [tenant, None] if tenant is not None else [None]
        for scope in scopes:
            number = selector if isinstance(selector, int) else self.label_version(scope, name, selector)
            if number is not None:
                found = self.get(scope, name, number)
                if found is not None:
                    return found
        raise NotFoundError(f"no prompt '{ref}'.", param="metadata.prompt", code="prompt_not_found")

    def list_all(self, tenant: str | None, limit: int = 500) -> list[dict[str, Any]]:
        """Each prompt of the scope with its latest version and labels."""
        condition, args = _tenant_sql(tenant)
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT name, max(version), max(created_at) FROM prompt_versions WHERE {condition} "
                "GROUP BY name ORDER BY name LIMIT ?",
                [*args, limit],
            ).fetchall()
            labels = self.store.execute(
                conn, "SELECT name, label, version FROM prompt_labels WHERE scope = ?", [_scope(tenant)]
            ).fetchall()
        by_name: dict[str, dict[str, int]] = {}
        for name, label, version in labels:
            by_name.setdefault(name, {})[label] = int(version)
        return [
            {"name": r[0], "latest_version": int(r[1]), "updated_at": r[2], "labels": by_name.get(r[0], {})}
            for r in rows
        ]

    def versions(self, tenant: str | None, name: str) -> list[PromptVersion]:
        """Every version of ``name``, newest first."""
        condition, args = _tenant_sql(tenant)
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT {_COLUMNS} FROM prompt_versions WHERE {condition} AND name = ? ORDER BY version DESC",
                [*args, name],
            ).fetchall()
        return [_version(r) for r in rows]

    def labels(self, tenant: str | None, name: str) -> dict[str, int]:
        """The labels of ``name`` and the versions they point at."""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn, "SELECT label, version FROM prompt_labels WHERE scope = ? AND name = ?", [_scope(tenant), name]
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def set_label(self, tenant: str | None, name: str, label: str, version: int, actor: str | None) -> int | None:
        """Point ``label`` at ``version``; audited with the version it pointed at before (returned)."""
        check_name(name)
        check_name(label, "label", LABEL)
        with self.store.connection() as conn, self.store.transaction(conn):
            condition, args = _tenant_sql(tenant)
            exists = self.store.execute(
                conn,
                f"SELECT 1 FROM prompt_versions WHERE {condition} AND name = ? AND version = ?",
                [*args, name, version],
            ).fetchone()
            if exists is None:
                raise NotFoundError(f"no prompt {name}@{version}.", param="version", code="prompt_not_found")
            row = self.store.execute(
                conn,
                "SELECT version FROM prompt_labels WHERE scope = ? AND name = ? AND label = ?",
                [_scope(tenant), name, label],
            ).fetchone()
            before = int(row[0]) if row else None
            if row is None:
                self.store.execute(
                    conn,
                    "INSERT INTO prompt_labels (scope, name, label, version, updated_at, updated_by) "
                    "VALUES (?,?,?,?,?,?)",
                    [_scope(tenant), name, label, version, time.time(), actor],
                )
            else:
                self.store.execute(
                    conn,
                    "UPDATE prompt_labels SET version = ?, updated_at = ?, updated_by = ? "
                    "WHERE scope = ? AND name = ? AND label = ?",
                    [version, time.time(), actor, _scope(tenant), name, label],
                )
            bump_clock(self.store, conn)
            append_entry(
                self.store,
                conn,
                actor,
                "prompt_label_moved",
                f"prompt:{_scope(tenant) or '*'}/{name}",
                {"tenant": tenant, "name": name, "label": label, "before": before, "after": version},
            )
        return before


def diff(old: PromptVersion, new: PromptVersion) -> str:
    """A unified diff of two versions (messages, variables, parameters)."""

    def lines(version: PromptVersion) -> list[str]:
        out = []
        for message in version.messages:
            out.append(f"[{message['role']}]")
            out.extend(message["content"].splitlines())
        out.append(f"variables: {', '.join(version.variables)}")
        out.append(f"parameters: {orjson.dumps(version.parameters, option=orjson.OPT_SORT_KEYS).decode()}")
        return out

    return "\n".join(difflib.unified_diff(lines(old), lines(new), fromfile=old.ref, tofile=new.ref, lineterm="", n=3))


def _version(row: Sequence[Any]) -> PromptVersion:
    return PromptVersion(
        id=row[0],
        tenant=row[1],
        name=row[2],
        version=int(row[3]),
        messages=orjson.loads(row[4]),
        variables=orjson.loads(row[5]),
        parameters=orjson.loads(row[6]) if row[6] else {},
        notes=row[7],
        content_hash=row[8],
        created_at=float(row[9]),
        created_by=row[10],
    )
