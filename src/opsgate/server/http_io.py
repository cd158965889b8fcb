"""Reading request bodies and writing gateway responses over HTTP (JSON and server-sent events)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from opsgate.domain.context import GatewayResponse, JsonResult, StreamResult
from opsgate.domain.errors import GatewayError, InvalidRequestError

log = logging.getLogger("opsgate.server")

_JSON_TYPES = ("application/json", "text/json")
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_json_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, after checking its content type and size (415 and 413 in the OpenAI shape)."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in _JSON_TYPES and not media.endswith("+json"):
            raise InvalidRequestError(
                f"Content-Type must be application/json, not '{media}'.",
                status=415,
                code="unsupported_media_type",
            )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError("Content-Length is not a number.", code="invalid_content_length")
        if int(declared) > max_bytes:
            raise _too_large(max_bytes)
        body = await request.body()
        if len(body) > max_bytes:
            raise _too_large(max_bytes)
        return body
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():  # chunked upload: count as it arrives, stop early
        size += len(part)
        if size > max_bytes:
            raise _too_large(max_bytes)
        parts.append(part)
    return b"".join(parts)


async def read_json_value(request: Request, max_bytes: int, empty: Any = None) -> Any:
    """The body parsed as JSON (checked as ``read_json_body`` does); ``empty`` for an empty body, if given."""
    raw = await read_json_body(request, max_bytes)
    if empty is not None and not raw.strip():
        return empty
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None


def _too_large(max_bytes: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"The request body is larger than the limit of {max_bytes} bytes.", status=413, code="body_too_large"
    )


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> Response:
    """An error in the OpenAI shape."""
    return Response(
        orjson.dumps(error.to_body()),
        status_code=error.status,
        headers={**error.headers, **(headers or {})},
        media_type="application/json",
    )


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def render(result: GatewayResponse) -> Response:
    """The HTTP response for a pipeline result."""
    if isinstance(result, JsonResult):
        return json_response(result.body, result.status, result.headers)
    return StreamingResponse(
        _sse(result),
        status_code=result.status,
        headers={**_SSE_HEADERS, **result.headers},
        media_type="text/event-stream",
    )


async def _sse(result: StreamResult) -> AsyncIterator[bytes]:
    """Server-sent events: one ``data:`` line per chunk, an error event on failure, then ``[DONE]``."""
    try:
        async for chunk in result.chunks():
            if not result.include_usage:
                if not chunk.get("choices") and chunk.get("usage"):
                    continue  # the usage chunk the client did not ask for
                chunk.pop("usage", None)
            elif chunk.get("choices"):
                chunk.setdefault("usage", None)
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except GatewayError as error:
        # Headers are gone already; the error travels as an event the OpenAI SDK raises on.
        log.warning("stream failed: %s", error.message)
        yield b"data: " + orjson.dumps(error.to_body()) + b"\n\n"
        return
    yield b"data: [DONE]\n\n"
