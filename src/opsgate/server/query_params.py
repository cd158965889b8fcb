"""Query parameters parsed into pydantic models that forbid extras: one parser for every admin route.

A route declares what it accepts as a ``QueryModel``; ``parse_query`` turns the request's query
string into it. An unknown parameter, a malformed value or a NUL anywhere is a 400 in the OpenAI
shape naming the parameter, never a 500 and never silently ignored. An empty value (``?since=``)
counts as not given, as the dashboard sends it; a repeated scalar takes its last value, and a
``list[str]`` field takes every value.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from starlette.requests import Request

from opsgate.domain.errors import GatewayError, InvalidRequestError
from opsgate.store.query import check_params, parse_time


class QueryModel(BaseModel):
    """Base of every route's query model: unknown parameters are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


Q = TypeVar("Q", bound=QueryModel)


class NoQuery(QueryModel):
    """A route that takes no query parameters."""


def parse_query(request: Request, model: type[Q]) -> Q:
    """``request``'s query parameters as ``model``; 400 naming the first unknown or malformed one."""
    check_params(request.query_params, request.path_params)  # NUL: a 400 here, not a store error
    names = {field.alias or name: name for name, field in model.model_fields.items()}
    data: dict[str, Any] = {}
    for name in dict.fromkeys(request.query_params.keys()):
        values = request.query_params.getlist(name)
        field = model.model_fields.get(names.get(name, ""))
        if field is not None and typing.get_origin(field.annotation) is list:
            data[name] = [value for value in values if value]
        elif field is None or values[-1] != "":
            data[name] = values[-1]  # an unknown name is refused even when empty
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _as_request_error(error, sorted(names)) from None


def _as_request_error(error: ValidationError, known: list[str]) -> InvalidRequestError:
    first = error.errors(include_url=False)[0]
    name = str(first["loc"][0]) if first["loc"] else "query"
    if first["type"] == "extra_forbidden":
        accepted = f"Known: {', '.join(known)}." if known else "This route takes none."
        return InvalidRequestError(f"Unknown parameter '{name}'. {accepted}", param=name)
    cause = (first.get("ctx") or {}).get("error")
    message = cause.message if isinstance(cause, GatewayError) else str(cause) if cause else first["msg"]
    return InvalidRequestError(f"{name}: {message.rstrip('.')}.", param=name)


# -- value types ------------------------------------------------------------------------------------


def whole_number(low: int, high: int) -> BeforeValidator:
    """An ASCII whole number in ``[low, high]`` ("²" is a digit to ``str.isdigit``; "1e3" is not whole)."""

    def check(raw: object) -> int:
        text = str(raw).strip()
        if not re.fullmatch(r"[0-9]{1,18}", text) or not low <= int(text) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(text)

    return BeforeValidator(check)


def one_of(choices: Iterable[str]) -> BeforeValidator:
    """One of ``choices`` (case-sensitive)."""
    allowed = tuple(choices)

    def check(raw: object) -> str:
        if raw not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return str(raw)

    return BeforeValidator(check)


def _time(raw: object) -> float:
    try:
        return parse_time(str(raw), "time")
    except InvalidRequestError as error:
        raise ValueError(error.message) from None


# ``1h``/``7d`` (ago), an ISO 8601 time or epoch seconds, as epoch seconds (years 1 to 9999).
Time = Annotated[float, BeforeValidator(_time)]
