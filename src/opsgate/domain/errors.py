"""Gateway errors, each carrying its HTTP status and the OpenAI error shape it renders as."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every error the gateway answers with.

    Rendered as ``{"error": {"message", "type", "param", "code"}}``, the shape OpenAI clients parse.
    ``fallback_allowed`` says whether a later routing stage may try another deployment.
    """

    status: int = 500
    error_type: str = "server_error"
    fallback_allowed: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}
        # The message before names the caller may not see were taken out of it (``shown_as``): the record's.
        self.operator_message: str | None = None

    def shown_as(self, message: str) -> None:
        """Answer the caller with ``message``; the record keeps the message as it was (the operator's)."""
        if message != self.message and self.operator_message is None:
            self.operator_message = self.message
        self.message = message

    def to_body(self) -> dict[str, Any]:
        """The JSON body, in the OpenAI error shape."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}


class InvalidRequestError(GatewayError):
    """The client sent something we cannot serve (400 unless a more exact status applies)."""

    status = 400
    error_type = "invalid_request_error"


class ModelNotFoundError(InvalidRequestError):
    """The requested model alias is not configured."""

    status = 404

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(
            f"The model '{model}' does not exist. Available models: {', '.join(known) or 'none'}.",
            param="model",
            code="model_not_found",
        )


class NotFoundError(InvalidRequestError):
    """No such route or resource."""

    status = 404


class OverloadedError(GatewayError):
    """Capacity and the wait queue are full; the client should retry after ``retry_after`` seconds."""

    status = 503
    error_type = "overloaded_error"
    fallback_allowed = True

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, code="overloaded", headers={"Retry-After": str(max(1, retry_after))})
        self.retry_after = max(1, retry_after)


class ClientDisconnected(GatewayError):
    """The client went away before the answer was ready; the work for it was cancelled."""

    status = 499
    error_type = "client_disconnected"

    def __init__(self) -> None:
        super().__init__("the client closed the connection before the response", code="client_disconnected")


class ServerStopping(GatewayError):
    """The server stopped (its graceful-shutdown time ran out) before the answer was ready; the work was cancelled.

    The gateway's doing, not the client's: a 503 in the OpenAI shape, recorded as such (it was a 499
    "client closed the connection" with an empty body, blaming the client for a restart).
    """

    status = 503
    error_type = "server_stopping"

    def __init__(self) -> None:
        super().__init__(
            "the gateway is shutting down and stopped this request; retry it",
            code="server_stopping",
            headers={"Retry-After": "1", "Connection": "close"},
        )


class AuthUnavailableError(GatewayError):
    """The key store cannot be read and the key is not one this process may still serve: 503, retry soon.

    The gateway's state, not the client's mistake (a 500 "internal error in auth" before, after the
    store's whole connection timeout on every request).
    """

    status = 503
    error_type = "server_error"

    def __init__(self) -> None:
        super().__init__(
            "API keys cannot be checked right now: the key store is unreachable. Retry shortly.",
            code="auth_unavailable",
            headers={"Retry-After": "2"},
        )


# ``RequestContext.scratch`` key: set when the server (not the client) cancels a request's work.
CUT_BY_SERVER = "cut_by_server"
# ASGI scope key of requests the gateway sends itself (evals, judges, the sentinel: ``evals.client.AsgiPoster``).
IN_PROCESS_SCOPE_KEY = "opsgate.in_process"


class ClientTooSlow(GatewayError):
    """The upstream's deadline ran out on a stream while the gateway was mostly waiting on the client to read.

    The deployment's ``timeouts.total`` counts time spent waiting on the client; a client that reads just
    fast enough to stay inside ``server.send_timeout_seconds`` would otherwise be recorded as a 504 that
    blames the upstream and spends the availability SLO's budget. A 499, as the client's doing.
    """

    status = 499
    error_type = "client_slow"

    def __init__(self, waited: float, span: float) -> None:
        super().__init__(
            f"the stream's upstream deadline ran out while the gateway waited {waited:.1f} s of {span:.1f} s on the"
            " client to read it",
            code="client_slow",
        )


class ClientStalled(GatewayError):
    """The client stopped reading a streamed answer: a chunk waited on it past ``server.send_timeout_seconds``.

    A 499 like a disconnect (the client's doing, so no breaker or availability SLO counts it); the
    stream was abandoned and its connection closed.
    """

    status = 499
    error_type = "client_stalled"

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the client did not read the stream for {seconds:g} s (server.send_timeout_seconds); stream abandoned",
            code="client_stalled",
        )


class UpstreamError(GatewayError):
    """An upstream server failed; keeps the upstream's own status and message."""

    status = 502
    error_type = "upstream_error"
    fallback_allowed = True

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        upstream_status: int | None = None,
        code: str | None = "upstream_error",
        headers: dict[str, str] | None = None,
        fallback_allowed: bool = True,
    ) -> None:
        super().__init__(
            message,
            status=status,
            code=code,
            headers=headers,
            extra={"upstream_status": upstream_status} if upstream_status is not None else None,
        )
        self.upstream_status = upstream_status
        self.fallback_allowed = fallback_allowed


class UpstreamTimeoutError(UpstreamError):
    """The upstream did not connect, start or finish within its configured timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=504, code="upstream_timeout")


class BackendFailure(GatewayError):
    """An embedded backend raised; the process keeps serving."""

    status = 500
    error_type = "server_error"
    fallback_allowed = True


class AuthenticationError(InvalidRequestError):
    """No key, or a key that is unknown, expired or revoked (the OpenAI API's 401 shape)."""

    status = 401
    error_type = "invalid_request_error"


class PermissionDeniedError(InvalidRequestError):
    """A valid key whose role or scopes do not allow this."""

    status = 403
    error_type = "permission_error"
