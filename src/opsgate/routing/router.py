"""The pipeline's terminal step: pick a deployment, call it, retry, fall back.

For each alias in the chain (the requested one, then its ``fallbacks``) the balancer orders the
deployments; up to ``retries + 1`` attempts go down that order, with jittered exponential backoff
between them, all inside the alias's ``deadline_seconds``. The deadline is budgeted: each alias in
the chain gets an equal slice of what is left when its turn comes, so a hung primary cannot use up
the time its fallbacks need; a stream, once started, must end by the deadline too. Only retryable failures move on
(connect errors, timeouts, 429/5xx, overload — errors with ``fallback_allowed``); a client's
mistake (4xx) is answered at once. An upstream's "request too large for its limits" moves on to the
next deployment (it may have higher limits); the client gets that 413 only when every deployment
tried refused the request for its size. A deployment that timed out after the request was sent (read,
first byte, total; a connect timeout is retried as before), said "busy" or refused the request for
its size is not tried again for the same request, and a request counts at most one failure against
each deployment's breaker, with its tenant (``_failed``). A stream falls back only until its first chunk arrives: the
router waits for that chunk before the response starts, so a stream that dies before it is retried
like any other failure, and one that dies after it ends with an error event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypeVar

from opsgate.backends.base import AnswerTooLarge, RequestTooLargeForUpstream, UpstreamConnectTimeout
from opsgate.backends.registry import ModelRegistry
from opsgate.backends.work_queue import ADMISSION, Admission, WorkQueue
from opsgate.domain.config import GatewayConfig
from opsgate.domain.context import BACKEND_CALLED, Chunk, GatewayResponse, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import (
    BackendFailure,
    GatewayError,
    OverloadedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from opsgate.domain.requests import EmbeddingRequest
from opsgate.integrity.monitor import ModelIntegrityError
from opsgate.routing import balancer
from opsgate.routing.deployment import DeploymentHandle, now_ms
from opsgate.routing.health import HealthChecker
from opsgate.routing.pin import pinned
from opsgate.routing.shared_breaker import SharedBreakers

log = logging.getLogger("opsgate.routing")
T = TypeVar("T")


class AttemptTracer(Protocol):
    """Puts each upstream attempt in a span (``opsgate.telemetry.tracing``)."""

    async def attempt(self, ctx: RequestContext, deployment: str, number: int, call: Coroutine[Any, Any, T]) -> T:
        """Await ``call`` inside a span for attempt ``number`` on ``deployment``."""
        ...


class CircuitOpen(UpstreamError):
    """Every deployment that could serve is refusing calls (breakers open)."""

    def __init__(self, label: str) -> None:
        super().__init__(
            f"deployment {label} is unavailable: its circuit breaker is open",
            status=503,
            code="circuit_open",
            headers={"Retry-After": "1"},
        )


def _release_order(
    handles: list[DeploymentHandle], weights: dict[str, float], rng: random.Random
) -> list[DeploymentHandle]:
    # Weighted sampling without replacement over the release's weights (weight 0 = backup only). The
    # deployments a release leaves out are not its to use; the alias's fallbacks still apply.
    chosen = [h for h in handles if h.label in weights]

    def key(handle: DeploymentHandle) -> float:
        weight = weights[handle.label]
        return rng.random() ** (1.0 / weight) if weight > 0 else -1.0

    return sorted(chosen, key=key, reverse=True)


class Router:
    """Routes each request to a deployment of its alias or of a fallback alias."""

    def __init__(self, config: GatewayConfig, registry: ModelRegistry, rng: random.Random | None = None) -> None:
        self.aliases = {alias.name: alias for alias in config.models}
        # No job may run longer than the longest deadline of any alias (a job is cancelled at its caller's,
        # and a fallback runs under its primary's): a line that stands still longer is a hung model.
        self.longest_deadline = max((alias.routing.deadline_seconds for alias in config.models), default=0.0)
        self.handles: dict[str, list[DeploymentHandle]] = {
            alias.name: [
                DeploymentHandle(alias, i, backend) for i, backend in enumerate(registry.deployments(alias.name))
            ]
            for alias in config.models
        }
        self.rng = rng or random.Random()
        self.integrity = registry.integrity
        self.health = HealthChecker([h for handles in self.handles.values() for h in handles])
        self.shared_breakers = SharedBreakers(h.breaker for handles in self.handles.values() for h in handles)
        self.tracer: AttemptTracer | None = None  # set when tracing is on; None costs one check per attempt

    async def start(self) -> None:
        """Start active health checks and the sync of breakers shared through Redis."""
        await self.health.start()
        await self.shared_breakers.start()

    async def close(self) -> None:
        """Stop them."""
        await self.health.close()
        await self.shared_breakers.close()

    def status(self) -> dict[str, dict[str, Any]]:
        """Every deployment's routing state."""
        out = {h.label: h.status() for handles in self.handles.values() for h in handles}
        for label, state in out.items():
            integrity = self.integrity.status(label)
            if integrity is not None:
                state["integrity"] = integrity
        return out

    async def __call__(self, ctx: RequestContext) -> GatewayResponse:
        """Serve the request from the first deployment that can."""
        assert ctx.alias is not None
        first = self.aliases[ctx.alias.name]
        deadline = time.monotonic() + first.routing.deadline_seconds
        pin = pinned(ctx, self.handles[first.name])  # an operator's probe of one deployment (routing/pin.py)
        if pin is not None:
            return await self._pinned(ctx, pin, deadline)
        chain = [first.name, *first.routing.fallbacks]
        errors: list[str] = []
        last: GatewayError | None = None
        other: GatewayError | None = None  # the last failure that was not a refusal for size
        for position, alias_name in enumerate(chain):
            routing = self.aliases[alias_name].routing
            # This alias's window: an equal share of what is left with every alias after it, so a
            # hung primary leaves each fallback its turn. Its attempts (and backoff) stay inside it.
            later = len(chain) - position - 1
            window_end = time.monotonic() + max(0.0, deadline - time.monotonic()) / (later + 1)
            candidates = balancer.order(self.handles[alias_name], routing, self.rng)
            weights = ctx.scratch.get("deployment_weights") if position == 0 else None
            if weights is not None:  # a release's deployments and weights (pipeline/release.py)
                candidates = _release_order(candidates, weights, self.rng) or candidates
            # A deployment whose model files failed their digest check is out of rotation, not just last.
            refused = [(h, reason) for h in candidates if (reason := self.integrity.refusal(h.label))]
            if refused:
                candidates = [h for h in candidates if all(h is not r for r, _ in refused)]
                if not candidates:
                    errors.extend(f"{h.label}: model integrity check failed: {reason}" for h, reason in refused)
                    label, reason = refused[0][0].label, refused[0][1]
                    last = ModelIntegrityError(f"deployment {label} is out of service: model integrity: {reason}")
                    continue
            # Deployments not to try again for this request: one that said "busy" (retrying it at once
            # only adds load), one that refused the request for its size (it would again), or one that
            # timed out after the request was sent (the same request would most likely run past its
            # timeout again: one huge max_tokens must not become retries + 1 long generations). A
            # connect timeout never reached the model: that deployment may be tried again.
            full: set[str] = set()
            for attempt in range(routing.retries + 1):
                remaining = window_end - time.monotonic()
                if remaining <= 0:
                    break
                handle = next(
                    (
                        candidates[(attempt + k) % len(candidates)]
                        for k in range(len(candidates))
                        if candidates[(attempt + k) % len(candidates)].label not in full
                    ),
                    None,
                )
                if handle is None:
                    break
                if attempt > 0 and last is not None and not isinstance(last, _NO_BACKOFF):
                    backoff = min(routing.backoff_max, routing.backoff_initial * 2 ** (attempt - 1))
                    await asyncio.sleep(min(self.rng.uniform(0, backoff), remaining))  # full jitter
                try:
                    call = self._attempt(ctx, handle, window_end, deadline)
                    if self.tracer is None:
                        response = await call
                    else:
                        response = await self.tracer.attempt(ctx, handle.label, len(errors), call)
                except GatewayError as error:
                    errors.append(f"{handle.label}: {error.message}")
                    if not error.fallback_allowed:
                        error.shown_as(_hide_fallbacks(error.message, chain, ctx))
                        raise  # the client's mistake: another deployment would say the same
                    if isinstance(error, _NOT_AGAIN) and not isinstance(error, UpstreamConnectTimeout):
                        full.add(handle.label)
                    last = error
                    if not isinstance(error, RequestTooLargeForUpstream):
                        other = error
                    continue
                self._mark(ctx, response, handle, alias_name, errors)
                return response
        if isinstance(last, RequestTooLargeForUpstream) and other is not None:
            last = other  # 413 only when every deployment tried refused the request for its size
        if last is None or (deadline - time.monotonic() <= 0 and not isinstance(last, OverloadedError)):
            # (A call that ran out of time waiting its turn stays the 503 it was: load, not the deployment.)
            last = UpstreamTimeoutError(
                f"no deployment answered within the {first.routing.deadline_seconds:.0f}s deadline"
            )
        ctx.tags["attempts"] = len(errors)
        ctx.tags["attempt_errors"] = errors[-5:]
        if len(errors) > 1:
            last.message = f"all {len(errors)} attempts failed; last: {last.message}"
        last.shown_as(_hide_fallbacks(last.message, chain, ctx))
        raise last

    async def _pinned(self, ctx: RequestContext, handle: DeploymentHandle, deadline: float) -> GatewayResponse:
        """One attempt on the pinned deployment: no retry, no fallback; its failure counts like any call's."""
        reason = self.integrity.refusal(handle.label)
        if reason:
            raise ModelIntegrityError(f"deployment {handle.label} is out of service: model integrity: {reason}")
        call = self._attempt(ctx, handle, deadline, deadline)
        response = await (call if self.tracer is None else self.tracer.attempt(ctx, handle.label, 0, call))
        self._mark(ctx, response, handle, handle.alias, [])
        return response

    @staticmethod
    def _mark(
        ctx: RequestContext, response: GatewayResponse, handle: DeploymentHandle, alias: str, errors: list[str]
    ) -> None:
        if ctx.principal.allows_model(alias):
            response.headers["x-opsgate-deployment"] = handle.label
            response.headers["x-opsgate-model"] = alias
        else:
            # A fallback alias this key may not call: its name is the operator's (the key gets 404 for it,
            # exactly as for an unknown model), so the answer says only that a fallback served it.
            response.headers["x-opsgate-deployment"] = "fallback"
            response.headers["x-opsgate-model"] = ctx.alias.name if ctx.alias is not None else "fallback"
            if isinstance(response, StreamResult):
                response.source = _unnamed_errors(response.source, alias)  # a mid-stream error event names it
        ctx.deployment = handle.label
        if ctx.alias is not None and alias != ctx.alias.name:
            ctx.tags["fallback_from"] = ctx.alias.name
            ctx.tags["served_by"] = alias
        if errors:
            ctx.tags["attempts"] = len(errors) + 1
            ctx.tags["attempt_errors"] = errors[-5:]

    async def _attempt(
        self, ctx: RequestContext, handle: DeploymentHandle, window_end: float, deadline: float
    ) -> GatewayResponse:
        """One call to ``handle``: answered (or its stream started) by ``window_end``, a stream ended by ``deadline``.

        The breaker rule, decided here for every backend: only the deployment's own failures count
        (timeouts, 5xx, broken answers, anything unexpected it raised). A client's mistake is a
        ``GatewayError`` without ``fallback_allowed`` and counts as a healthy call; load shedding and
        cancellation count as nothing. Backends therefore turn whatever the client got wrong into
        ``InvalidRequestError`` before calling the model (validation, ``build_job``, the upstream
        payload), so it never reaches the catch-all below. A client's mistake (a ``GatewayError``
        without ``fallback_allowed``, or an upstream's refusal of the request for its size), like an
        answer over the deployment's size bounds (``AnswerTooLarge``), counts neither way: a success
        would hold a failing breaker closed (or close a half-open one) on the client's say. Every outcome carries
        the request's tenant, and a request's second failure on the same deployment is not a second
        vote (``_failed``), so one tenant's oversized requests cannot open a breaker others share.
        """
        # Whose call this is in every line it joins (this deployment's, an in-process model's), and
        # whether it is still waiting its turn when the window runs out.
        admission = Admission(ctx.tenant)
        ADMISSION.set(admission)
        if handle.queue.has_free_slot():
            await handle.queue.acquire()  # taken at once, no suspension: no timer to arm and cancel
        else:
            try:  # backpressure: a bounded wait (within the window too), then 503 and the next deployment
                async with asyncio.timeout(max(0.001, window_end - time.monotonic())):
                    await handle.queue.acquire()
            except TimeoutError:
                raise OverloadedError(
                    f"deployment {handle.label} had no free slot in its share of the deadline"
                ) from None
        if not handle.breaker.allow():
            handle.queue.release()
            raise CircuitOpen(handle.label)
        ctx.deployment = handle.label
        started = now_ms()
        window = max(0.001, window_end - time.monotonic())
        admission.waited = 0.0  # from here: waits in the backend's own line (an in-process model's)
        try:
            async with asyncio.timeout(window):
                response = await self._call(ctx, handle, deadline)
        except TimeoutError:
            handle.queue.release()
            if (admission.in_line or admission.waited >= window / 2) and not _stuck(handle, self.longest_deadline):
                # Still waiting for an in-process model's turn behind other calls, or let in with too little
                # of its window left to be judged: load, not the model failing (a 504 here opened the
                # breaker for everyone behind one tenant's long generations).
                handle.breaker.release()
                line = getattr(handle.backend, "queue", None)
                raise OverloadedError(
                    f"deployment {handle.label} had no free turn in its share of the deadline",
                    retry_after=line.retry_after() if isinstance(line, WorkQueue) else 1,
                ) from None
            _failed(ctx, handle)
            raise UpstreamTimeoutError(
                f"deployment {handle.label} did not answer within its share of the deadline"
            ) from None
        except (OverloadedError, AnswerTooLarge, RequestTooLargeForUpstream):
            # Load shedding is not a fault; an answer past our size bounds or a request past the
            # upstream's limits is the client's choice, so it must not open a breaker other tenants
            # share: neither counts.
            handle.queue.release()
            handle.breaker.release()  # …but a half-open probe slot it took must come back
            raise
        except GatewayError as error:
            handle.queue.release()
            if error.fallback_allowed:
                _failed(ctx, handle)
            else:
                # A client's 4xx: no verdict on the deployment. Counted a success, it would hold a
                # breaker closed through an outage (or close a half-open one) on the client's say.
                handle.calls += 1
                handle.breaker.release()
            raise
        except Exception as error:
            handle.queue.release()
            _failed(ctx, handle)
            log.exception("deployment %s failed", handle.label)
            raise BackendFailure(f"deployment {handle.label} failed: {type(error).__name__}") from error
        except BaseException:  # cancelled (client gone, shutdown): free the slot, judge nobody
            handle.queue.release()
            handle.breaker.release()
            if admission.in_line:
                ctx.scratch.pop(BACKEND_CALLED, None)  # still waiting for an in-process model: nothing was sent
            raise
        handle.observe(True, now_ms() - started, ctx.tenant)
        if isinstance(response, StreamResult):
            response.on_finish.append(lambda _: handle.queue.release())  # a stream holds its slot to the end
        else:
            handle.queue.release()
        return response

    async def _call(self, ctx: RequestContext, handle: DeploymentHandle, deadline: float) -> GatewayResponse:
        backend = handle.backend
        ctx.scratch[BACKEND_CALLED] = True  # the limits charge a call the client abandons only from here
        body = ctx.body
        if isinstance(body, EmbeddingRequest):
            return JsonResult(await backend.embed(ctx))
        assert body is not None
        if not body.stream:
            return JsonResult(await backend.generate(ctx))
        chunks = await backend.open_stream(ctx)
        try:
            first = await anext(chunks)  # fall back is possible until this chunk is in hand
        except StopAsyncIteration:
            raise UpstreamError(
                f"deployment {handle.label} sent an empty stream", code="upstream_truncated_stream"
            ) from None
        source = _prepend(first, chunks, deadline, handle.label)
        return StreamResult(source=source, include_usage=body.include_usage())


# After these, the next attempt goes at once (no backoff): nothing to wait out.
_NO_BACKOFF = (CircuitOpen, OverloadedError, RequestTooLargeForUpstream)
# A deployment that answered so is not tried again for the same request (but see UpstreamConnectTimeout).
_NOT_AGAIN = (OverloadedError, UpstreamTimeoutError, RequestTooLargeForUpstream)


def _failed(ctx: RequestContext, handle: DeploymentHandle) -> None:
    """Count a failed attempt against ``handle``'s breaker, once per request and deployment.

    A request's retries and fallbacks that come back to the same deployment fail for the same reason
    (often the request itself: a huge ``max_tokens`` that runs past the timeout), so one request is
    one vote: its later failures there are counted in the handle's totals but release the breaker
    instead. The failure carries the request's tenant, so that one tenant alone cannot open a breaker
    that several share (``breaker.py``).
    """
    voted: set[str] | None = ctx.scratch.get("breaker_votes")
    if voted is None:
        ctx.scratch["breaker_votes"] = voted = set()
    elif handle.label in voted:
        handle.calls += 1
        handle.failures += 1
        handle.breaker.release()  # a half-open probe slot it took comes back
        return
    voted.add(handle.label)
    handle.observe(False, None, ctx.tenant)


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk], deadline: float, label: str) -> AsyncIterator[Chunk]:
    """``first``, then the rest of the stream, which must end by ``deadline`` (``time.monotonic``)."""
    try:
        yield first
        while True:
            try:
                # Scoped to the wait for one chunk, never across a yield (that would cancel the consumer).
                async with asyncio.timeout(max(0.001, deadline - time.monotonic())):
                    chunk = await anext(rest)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise UpstreamTimeoutError(f"deployment {label}: the stream did not end before the deadline") from None
            yield chunk
    finally:
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def _hide_fallbacks(message: str, chain: list[str], ctx: RequestContext) -> str:
    """``message`` with the fallback aliases the caller may not call named only as ``fallback``.

    Their names are the operator's: the key gets 404 for them, exactly as for an unknown model, so a
    failure message must not confirm them (deployment labels are ``alias#n``; the record keeps them).
    """
    for alias in chain[1:]:
        if not ctx.principal.allows_model(alias) and alias in message:
            message = _renamed(message, alias)
    return message


def _renamed(message: str, alias: str) -> str:
    """``message`` with ``alias`` (as a whole name, ``alias#n`` included) written ``fallback``."""
    return re.sub(rf"(?<![\w.-]){re.escape(alias)}(?![\w.-])", "fallback", message)


def _stuck(handle: DeploymentHandle, longest_deadline: float) -> bool:
    """Whether an in-process model's line has not moved for twice the longest deadline of any alias: no job
    may run that long (each is cancelled at its caller's deadline, a fallback's under its primary's), so the
    model is hung, and a call that timed out waiting behind it is the model's failure, not load (else a hung
    model would never open its breaker)."""
    line = getattr(handle.backend, "queue", None)
    if not isinstance(line, WorkQueue):
        return False
    return line.stalled_for() > 2 * longest_deadline


async def _unnamed_errors(source: AsyncIterator[Chunk], alias: str) -> AsyncIterator[Chunk]:
    """``source``, with ``alias`` named ``fallback`` in the message of an error it raises."""
    try:
        async for chunk in source:
            yield chunk
    except GatewayError as error:
        error.shown_as(_renamed(error.message, alias))
        raise
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            await close()
