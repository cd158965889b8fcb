"""Stage: parse and validate the body, and resolve the model alias.

Every client mistake becomes a 4xx in the OpenAI error shape with ``param`` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import chain
from typing import Any

from pydantic import BaseModel, ValidationError

from opsgate.domain.config import GatewayConfig, ModelAlias
from opsgate.domain.context import Endpoint, GatewayResponse, RequestContext
from opsgate.domain.errors import InvalidRequestError, ModelNotFoundError
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from opsgate.pipeline.body_shape import BodyShape
from opsgate.pipeline.stage import PassStage

_MODELS: dict[Endpoint, type[BaseModel]] = {
    "chat": ChatCompletionRequest,
    "completion": CompletionRequest,
    "embedding": EmbeddingRequest,
}
_ROUTE_FOR_KIND = {"chat": "/v1/chat/completions or /v1/completions", "embedding": "/v1/embeddings"}
# Every number must survive every later step: orjson (the upstream call, the record) refuses
# integers beyond 64 bits, and NaN/Infinity (the parser accepts the literals; 1e400 becomes inf)
# are not JSON. Caught here, they are the client's 400, not a backend failure that opens a breaker.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_DEPTH = 64  # nesting of objects and arrays; JSON schemas in real use stay far below this


def param_path(loc: tuple[int | str, ...]) -> str | None:
    """pydantic's error location as the dotted path OpenAI uses in ``param`` (``messages[0].role``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after[", "function-before[", "function-wrap[")):
            continue
        elif part in ("str", "list[str]", "list[int]", "list[list[int]]", "list[ContentPart]"):
            continue  # union member names pydantic inserts into locations
        else:
            out += f".{part}" if out else part
    return out or None


def validation_error(error: ValidationError) -> InvalidRequestError:
    """The first problem in ``error`` as a client error; invalid JSON is its own case."""
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return InvalidRequestError(
            f"The request body is not valid JSON: {first['ctx'].get('error', first['msg'])}",
            code="invalid_json",
        )
    if first["type"] == "model_type" and not first["loc"]:
        return InvalidRequestError("The request body must be a JSON object.", code="invalid_body")
    param = param_path(first["loc"])
    if first["type"] == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param=param, code="missing_required")
    message = first["msg"].removeprefix("Value error, ")
    return InvalidRequestError(f"Invalid value for '{param}': {message}.", param=param, code="invalid_value")


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_values(value: object, path: str = "", depth: int = 0) -> None:
    """Raise a 400 naming the field if ``value`` holds a number JSON cannot carry or nests too deep.

    Walks parsed bodies (pydantic models, their extra fields, dicts and lists) anywhere they nest.
    Every request pays for the walk, so it first runs without building field paths; only a body
    that fails is walked again to name the field.
    """
    if _bad(value, depth):
        _explain(value, path, depth)


_SCALARS = (str, bool, type(None))


def _bad(value: object, depth: int) -> bool:
    """Whether ``_explain`` would raise for ``value`` at ``depth`` (the same rules, no paths)."""
    kind = type(value)
    if kind in _SCALARS:
        return False
    if kind is int:
        return not INT_MIN <= value <= INT_MAX  # type: ignore[operator]
    if kind is float:
        return not math.isfinite(value)  # type: ignore[arg-type]
    if kind is not dict and kind is not list and not isinstance(value, BaseModel):
        return _bad_other(value, depth)  # subclasses of the scalars, and anything else
    if depth >= MAX_DEPTH:
        return True
    items: Iterable[object]
    if kind is list:
        items = value  # type: ignore[assignment]
    elif kind is dict:
        items = value.values()  # type: ignore[attr-defined]
    else:
        extra = value.model_extra  # type: ignore[attr-defined]
        items = chain(value.__dict__.values(), extra.values()) if extra else value.__dict__.values()
    for item in items:
        if item is None or type(item) is str or type(item) is bool:  # most fields: no call at all
            continue
        if _bad(item, depth + 1):
            return True
    return False


def _bad_other(value: object, depth: int) -> bool:
    # isinstance rules, exactly as _explain applies them (str/int/float subclasses, dict subclasses)
    if isinstance(value, (str, bool)):
        return False
    if isinstance(value, int):
        return not INT_MIN <= value <= INT_MAX
    if isinstance(value, float):
        return not math.isfinite(value)
    if depth >= MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_bad(item, depth + 1) for item in value.values())
    if isinstance(value, list):
        return any(_bad(item, depth + 1) for item in value)
    return False


def _explain(value: object, path: str = "", depth: int = 0) -> None:
    """The walk with field paths: raises the 400 for the first bad value."""
    if value is None or isinstance(value, (str, bool)):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidRequestError(
                f"Invalid value for '{path}': integers must fit in 64 bits (signed).",
                param=path or None,
                code="invalid_value",
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(
                f"Invalid value for '{path}': numbers must be finite (no NaN or Infinity).",
                param=path or None,
                code="invalid_value",
            )
        return
    if depth >= MAX_DEPTH:
        raise InvalidRequestError(
            f"Invalid value for '{path}': nested more than {MAX_DEPTH} levels deep.",
            param=path or None,
            code="invalid_value",
        )
    if isinstance(value, BaseModel):
        for key, item in value.__dict__.items():
            _explain(item, _join(path, key), depth + 1)
        for key, item in (value.model_extra or {}).items():
            _explain(item, _join(path, key), depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _explain(item, _join(path, str(key)), depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _explain(item, _join(path, index), depth + 1)


class ValidationStage(PassStage):
    """Turns ``ctx.raw_body`` into ``ctx.body`` and ``ctx.alias``, after checking its shape (``body_shape``)."""

    name = "validation"

    def __init__(self, config: GatewayConfig) -> None:
        self._aliases = {alias.name: alias for alias in config.models}
        self._shape = BodyShape(config.server.body_shape)

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Reject the request (by raising) unless it is well formed and names a served model."""
        if ctx.body_error is not None:
            raise ctx.body_error
        # Caps on structure first: building the model costs ~1 µs a value, 0.5 s for one 4 MB body.
        self._shape.check(ctx.raw_body, ctx.endpoint)
        model = _MODELS[ctx.endpoint]
        try:
            body = model.model_validate_json(ctx.raw_body)
        except ValidationError as error:
            raise validation_error(error) from None
        check_values(body)
        ctx.body = body  # type: ignore[assignment]
        name: str = body.model  # type: ignore[attr-defined]
        alias = self._aliases.get(name)
        if alias is None or not ctx.principal.allows_model(name):
            # Only the aliases this key may call, as /v1/models lists them: never another tenant's models,
            # and an alias the key may not call answers as one that does not exist (a 403 confirmed the
            # name, so another tenant's aliases could be found by guessing).
            raise ModelNotFoundError(name, sorted(a for a in self._aliases if ctx.principal.allows_model(a)))
        _check_scheduling(body, alias)
        wanted = "embedding" if ctx.endpoint == "embedding" else "chat"
        if alias.kind != wanted:
            raise InvalidRequestError(
                f"The model '{name}' is a {alias.kind} model; call it at {_ROUTE_FOR_KIND[alias.kind or 'chat']}.",
                param="model",
                code="wrong_model_kind",
            )
        ctx.alias = alias
        return None


def _check_scheduling(body: Any, alias: ModelAlias) -> None:
    """400 for a ``service_tier`` or ``priority`` the alias does not let clients choose (see ``ModelAlias``)."""
    tier = body.service_tier
    if tier is not None and tier not in alias.client_service_tiers:
        allowed = " or ".join(f"'{t}'" for t in alias.client_service_tiers) or "nothing"
        raise InvalidRequestError(
            f"service_tier: this gateway's operator chooses the service tier of '{alias.name}'; a client may "
            f"send {allowed}.",
            param="service_tier",
            code="invalid_value",
        )
    priority = body.priority
    low, high = alias.client_priorities
    if priority is not None and not low <= priority <= high:
        shown = str(low) if low == high else f"{low} to {high}"
        raise InvalidRequestError(
            f"priority: this gateway's operator sets the scheduling priority of '{alias.name}'; a client may "
            f"send {shown}.",
            param="priority",
            code="invalid_value",
        )
