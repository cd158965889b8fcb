"""What flows through the pipeline: the per-request context and the two kinds of response."""

from __future__ import annotations

import dis
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opsgate.domain.config import ModelAlias
from opsgate.domain.errors import ClientTooSlow, GatewayError, UpstreamTimeoutError
from opsgate.domain.principal import ANONYMOUS_OPERATOR, Principal
from opsgate.domain.requests import RequestBody

_log = logging.getLogger("opsgate.pipeline")

Endpoint = Literal["chat", "completion", "embedding"]
Chunk = dict[str, Any]


# ``RequestContext.scratch`` key: set when the request reached a backend (an upstream or the in-process model).
BACKEND_CALLED = "backend_called"


@dataclass(slots=True)
class RequestContext:
    """Everything one request carries through the stages; stages add to it, never replace it."""

    endpoint: Endpoint
    raw_body: bytes
    headers: Mapping[str, str]
    received_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    request_id: str = ""
    body: RequestBody | None = None
    alias: ModelAlias | None = None
    deployment: str | None = None
    # Set by the auth stage; the anonymous operator when auth is off.
    principal: Principal = ANONYMOUS_OPERATOR
    # Answered from the cache (set by the cache stage): limits charge nothing, the record costs 0.
    cache_hit: bool = False
    # What the record stores as the request's free-form tags (guard verdicts, release, attempts...).
    tags: dict[str, Any] = field(default_factory=dict)
    # Private hand-offs from a stage's before to its after (never recorded), keyed by stage name.
    scratch: dict[str, Any] = field(default_factory=dict)
    # A transport-level refusal (413, 415, 408, bad Content-Length) found before the body was read:
    # validation raises it, so the request still passes request id, record and auth like any other.
    body_error: GatewayError | None = None

    @property
    def tenant(self) -> str | None:
        """The caller's tenant (None: the operator, or auth off or refused); the principal is the one source."""
        return self.principal.tenant

    @property
    def api_key_id(self) -> str | None:
        """The caller's API key id (None: auth off or refused)."""
        return self.principal.key_id

    def visible_deployment(self) -> str | None:
        """``deployment`` as the caller may see it: ``fallback`` for a deployment of an alias its key may not
        call (that alias answers it 404, as an unknown model; its name is the operator's)."""
        label = self.deployment
        if label and not self.principal.allows_model(label.rsplit("#", 1)[0]):
            return "fallback"
        return label

    def elapsed_ms(self) -> float:
        """Milliseconds since the request arrived."""
        return (time.perf_counter() - self.started) * 1000.0


@dataclass(slots=True)
class JsonResult:
    """A complete (non-streamed) answer: a JSON body, or an error rendered in the OpenAI shape."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: GatewayError | None = None

    @classmethod
    def from_error(cls, error: GatewayError) -> JsonResult:
        """The JSON answer for ``error``."""
        return cls(body=error.to_body(), status=error.status, headers=dict(error.headers), error=error)


@dataclass(slots=True)
class StreamOutcome:
    """What a finished (or failed) stream produced; filled as the chunks pass."""

    content: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    first_chunk_at: float | None = None
    chunks: int = 0
    error: GatewayError | None = None
    completed: bool = False
    client_wait: float = 0.0  # seconds the server spent blocked sending to a client that read slowly

    def text(self) -> str:
        """The assembled output text."""
        return "".join(self.content)


@dataclass(slots=True)
class StreamResult:
    """A streamed answer: OpenAI chunk objects, ending with a usage chunk (``choices == []``).

    The server strips the usage chunk when the client did not ask for it, so stages always see usage.
    """

    source: AsyncIterator[Chunk]
    include_usage: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    outcome: StreamOutcome = field(default_factory=StreamOutcome)
    status: int = 200
    on_finish: list[Callable[[StreamOutcome], None]] = field(default_factory=list)
    # Set once the finish callbacks have run and the source is closed (by ``chunks()`` or ``close()``).
    closed: bool = field(default=False, init=False)

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """The chunks, observed into ``outcome``; ``on_finish`` callbacks run once the stream ends.

        A stream ends by completing, by failing (``outcome.error``), or by the client going away
        (the generator is closed); the callbacks run in every case so nothing goes unrecorded, and the
        source is closed after them.
        """
        outcome = self.outcome
        try:
            async for chunk in self.source:
                if outcome.first_chunk_at is None:
                    outcome.first_chunk_at = time.perf_counter()
                outcome.chunks += 1
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta")
                    piece = delta.get("content") if delta is not None else choice.get("text")
                    if piece and type(piece) is str:  # backends check types; the record must never lose billing to one
                        outcome.content.append(piece)
                    if choice.get("finish_reason"):
                        outcome.finish_reason = choice["finish_reason"]
                usage = chunk.get("usage")
                if usage and isinstance(usage, dict):  # an upstream may send anything there
                    outcome.usage = usage
                yield chunk
            outcome.completed = True
        except GatewayError as error:
            if isinstance(error, UpstreamTimeoutError) and _client_was_slow(outcome):
                waited, span = outcome.client_wait, time.perf_counter() - (outcome.first_chunk_at or 0.0)
                outcome.error = ClientTooSlow(waited, span)
                raise outcome.error from error
            outcome.error = error
            raise
        except Exception as error:  # a backend bug must still end the stream cleanly and be recorded
            outcome.error = GatewayError(f"stream failed: {type(error).__name__}: {error}")
            raise outcome.error from error
        finally:
            await self.close()

    async def close(self) -> None:
        """End the stream where it stands: the ``on_finish`` callbacks run and the source is closed, once.

        ``chunks()`` ends this way; a consumer that stops without iterating it (the client left before
        the first event) must call it, since closing a ``chunks()`` generator that never started runs
        none of its body: the slot release, the record and the limits' settlement would never happen.
        """
        if self.closed:
            return
        self.closed = True
        for callback in self.on_finish:
            try:
                callback(self.outcome)
            except Exception:  # one failing callback (limits, say) must not skip the record's
                _log.exception("a stream's finish callback failed")
        # An abandoned stream (client gone or stalled, shutdown) closes its source now, and with it
        # the upstream call, rather than when the result is collected.
        try:
            await _close_source(self.source)
        except Exception:
            _log.exception("closing a stream's source failed")


# A stream whose upstream deadline ran out while the gateway spent at least this share of the time since
# its first chunk blocked on the client's reading is the client's doing (``ClientTooSlow``), not the upstream's.
SLOW_CLIENT_SHARE = 0.5


def _client_was_slow(outcome: StreamOutcome) -> bool:
    if outcome.first_chunk_at is None or outcome.client_wait <= 0.0:
        return False
    return outcome.client_wait >= SLOW_CLIENT_SHARE * (time.perf_counter() - outcome.first_chunk_at)


async def _close_source(source: Any, depth: int = 0) -> None:
    """Close ``source``; if it is an async generator that never started, close what it was given too.

    The stages wrap a stream in generators (the router's first chunk, the guard, the cache), each of
    which closes its inner stream in a ``finally``, but one that never started has no ``finally`` to
    run: the upstream call under it, already started, would stay open until garbage collection.
    """
    # Only streams among its arguments (a stage, a client with its own ``aclose``, is not the stream's to
    # close; nor is anything a closure captured, which the frame's locals hold too on Python 3.11).
    inner = [value for value in _arguments(source) if _is_stream(value)] if _unstarted(source) else []
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        await aclose()
    if depth < 8:
        for value in inner:
            await _close_source(value, depth + 1)


def _arguments(source: Any) -> list[object]:
    """The values ``source`` (an async generator's frame) was called with, positional and keyword-only."""
    code = source.ag_frame.f_code
    names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
    local = source.ag_frame.f_locals
    return [local[name] for name in names if name in local]


def _is_stream(value: object) -> bool:
    return hasattr(value, "__anext__") and hasattr(value, "aclose")


def _unstarted(source: Any) -> bool:
    """Whether ``source`` is an async generator not yet started (its frame holds only its arguments)."""
    if not inspect.isasyncgen(source):
        return False
    state = getattr(inspect, "getasyncgenstate", None)  # Python 3.12+
    if state is not None:
        return bool(state(source) == "AGEN_CREATED")
    # Python 3.11: a created generator's frame stands at its RETURN_GENERATOR (after any cell set-up).
    frame = source.ag_frame
    if frame is None or source.ag_running:
        return False
    code = frame.f_code.co_code
    return 0 <= frame.f_lasti < len(code) and code[frame.f_lasti] == dis.opmap.get("RETURN_GENERATOR")


GatewayResponse = JsonResult | StreamResult
