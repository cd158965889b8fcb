"""The one seam every backend implements: answer a validated request, whole or as a stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from opsgate.domain.context import Chunk, RequestContext
from opsgate.domain.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError


class UnusableAnswer(UpstreamError):
    """An upstream answer the gateway cannot use (too large, ill-typed): a 502 ``upstream_bad_response``
    that neither falls back nor counts for or against the breaker (the call was already judged)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_bad_response", fallback_allowed=False)

    @classmethod
    def from_(cls, deployment: str | None, what: str) -> UnusableAnswer:
        """``Upstream <deployment> sent <what>``."""
        return cls(f"Upstream {deployment or 'upstream'} sent {what}")


class AnswerTooLarge(UnusableAnswer):
    """An upstream answer past the deployment's size bounds (``max_event_bytes``, ``max_response_bytes``).

    A 502 ``upstream_bad_response`` that neither falls back nor counts for or against the breaker:
    a client can ask for a long answer (many choices, a long tool call), and a client-chosen input
    must not open a breaker every tenant shares; another deployment would only be made to write
    the same oversized answer again. The record and metrics carry every such 502.
    """


class RequestTooLargeForUpstream(InvalidRequestError):
    """An upstream refused the request as larger than its limits (OpenAI's 429 "Request too large").

    A 413 ``request_too_large`` that may fall back (``fallback_allowed``): another deployment may have
    higher limits (a low-tier key as primary, Azure as fallback); the same deployment is not tried
    again. It counts neither way for the breaker (the request's size is the client's choice), and the
    client gets it only when every deployment tried refused the request for its size (``router.py``).
    """

    fallback_allowed = True

    def __init__(self, message: str, upstream_status: int) -> None:
        super().__init__(message, status=413, code="request_too_large", extra={"upstream_status": upstream_status})


class UpstreamConnectTimeout(UpstreamTimeoutError):
    """No connection in time (connect, TLS, or the wait for a pooled connection): the request was never
    sent, so unlike a read timeout it says nothing about the request and the router may retry the same
    deployment."""


class Backend(ABC):  # noqa: B024 - every hook has a default; subclasses override what they serve
    """A deployment that can serve requests. ``label`` names it in records and headers."""

    label: str = "backend"
    kind: str = "chat"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load models / open connection pools. Called once at startup."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Called once at shutdown."""

    def is_ready(self) -> bool:
        """Whether the backend can serve now (model loaded, pool open)."""
        return True

    def status(self) -> dict[str, object]:
        """Details for ``/readyz``: loaded, queue depth and the like."""
        return {"ready": self.is_ready()}

    async def generate(self, ctx: RequestContext) -> Chunk:
        """Answer ``ctx.body`` (chat or completion) as one OpenAI response object."""
        raise InvalidRequestError(f"{self.label} does not serve {ctx.endpoint} requests", param="model")

    async def open_stream(self, ctx: RequestContext) -> AsyncIterator[Chunk]:
        """Start a stream and return its chunks, ending with a usage chunk (``choices == []``).

        Raise before returning when the stream cannot start (overloaded, upstream error), so the
        client gets a proper HTTP error rather than a 200 that fails at once.
        """
        raise InvalidRequestError(f"{self.label} does not stream {ctx.endpoint} requests", param="stream")

    async def embed(self, ctx: RequestContext) -> Chunk:
        """Answer an embeddings request."""
        raise InvalidRequestError(f"{self.label} does not serve embeddings", param="model")


class EmbeddingBackend(Backend, ABC):
    """A backend that only embeds."""

    kind = "embedding"

    @abstractmethod
    async def embed(self, ctx: RequestContext) -> Chunk:
        """Answer an embeddings request."""
