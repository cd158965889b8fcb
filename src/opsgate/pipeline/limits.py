"""Stage: rate limits and budgets per API key, user and model — reserve before the call, settle after.

``before`` works out who is asking and what the request may use, and reserves it (or answers 429,
or 503 when Redis is down and ``on_redis_error`` is closed):

- tokens: the prompt estimated as body bytes / 4, plus ``max_tokens`` (or ``limits.default_max_tokens``);
- cost: those tokens at the dearest price among the deployments and fallbacks the request can reach.

``after`` adds the ``x-ratelimit-*`` headers and settles on what was used: for a JSON answer as it
leaves, for a stream when it ends (completed, failed or abandoned by the client). A failed request
settles to nothing, and so does a cache hit (no upstream tokens). A request the client abandoned (a
499, JSON or a stream before its first piece) settles to the prompt estimate, and a stream cut short
without usage to the prompt estimate plus the pieces it sent: the upstream had the prompt, and
otherwise opening calls and leaving at once would load it while never counting a token. The response
never waits for a settle: in process it is applied at once; with Redis it is queued ahead of any later
reservation, so the same client's next request is counted after it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from opsgate.domain.config import ConfigError, GatewayConfig
from opsgate.domain.context import (
    BACKEND_CALLED,
    GatewayResponse,
    JsonResult,
    RequestContext,
    StreamOutcome,
    StreamResult,
)
from opsgate.domain.pricing import PriceBook, is_count
from opsgate.domain.requests import EmbeddingRequest
from opsgate.limits import Demand, Identity, Limiter, MemoryCounters, RedisCounters, Reservation
from opsgate.limits.limiter import CounterStore
from opsgate.pipeline.stage import PassStage

log = logging.getLogger("opsgate.limits")

Usage = dict[str, Any]


def identify(ctx: RequestContext) -> Identity:
    """Key: ``api_key_id`` from auth, else a short SHA-256 of the bearer token, else ``anonymous``.

    User: the body's ``user``, counted within the caller's tenant; None when the body names none (per-user
    rules then count the key's own requests: ``Identity.scope``). A client chooses its ``user``, so
    only per-key rules hold against a hostile client; per-user rules share out an honest client's quota.
    """
    key = ctx.principal.limit_counter or ctx.api_key_id  # a rotated key's counters go on under its first id
    if not key:
        scheme, _, token = (ctx.headers.get("authorization") or "").strip().partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else scheme
        key = hashlib.sha256(token.encode()).hexdigest()[:16] if token else "anonymous"
    user = getattr(ctx.body, "user", None) or None
    assert ctx.alias is not None
    return Identity(key=str(key), user=user, model=ctx.alias.name, tenant=ctx.tenant)


def estimate_tokens(ctx: RequestContext, default_max_tokens: int) -> tuple[int, int]:
    """(prompt, output) token estimates: body bytes / 4 (JSON syntax included: errs high), and the output cap."""
    prompt = -(-len(ctx.raw_body) // 4)
    if isinstance(ctx.body, EmbeddingRequest) or ctx.body is None:
        return prompt, 0
    # Every candidate (``best_of``, on chat as on completions) is generated and billed; one is returned.
    return prompt, (ctx.body.token_limit() or default_max_tokens) * ctx.body.candidates()


def workers_problem(config: GatewayConfig, workers: int) -> str | None:
    """Limits and budgets counted in process memory with several workers: each worker would count alone."""
    if workers <= 1 or not config.limits.enabled or config.limits.redis:
        return None
    return (
        f"limits.enabled with {workers} workers would count every limit and budget in each worker's memory, "
        f"admitting up to {workers} times each limit. Set limits.redis (redis://…) to share the counters, "
        "or serve with --workers 1."
    )


def used_tokens(usage: Usage) -> int | None:
    """Total tokens of an OpenAI usage object; None when its counts are not numbers (an upstream may
    send anything there: the reservation's estimate then stands, rather than an error or a refund)."""
    total = usage.get("total_tokens")
    if total is not None and is_count(total):
        return int(total)
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (is_count(prompt) and is_count(completion)):
        return None
    return int((prompt or 0) + (completion or 0))


class LimitsStage(PassStage):
    """Reserves before the call, settles after it; see the module docstring."""

    name = "limits"

    def __init__(self, limiter: Limiter, prices: PriceBook, default_max_tokens: int) -> None:
        self.limiter = limiter
        self.prices = prices
        self.default_max_tokens = default_max_tokens

    @classmethod
    def from_config(cls, config: GatewayConfig) -> LimitsStage:
        """The stage for ``config.limits``; a rule naming an unknown model is a config error."""
        limits = config.limits
        known = {alias.name for alias in config.models}
        problems = [
            f"limits.rules[{index}].model: no model named '{rule.model}'"
            for index, rule in enumerate(limits.rules)
            if rule.model is not None and rule.model not in known
        ]
        if problems:
            raise ConfigError(problems)
        prices = PriceBook(config)
        for index, rule in enumerate(limits.rules):
            if rule.spend_per_day or rule.spend_per_month:
                for name in [rule.model] if rule.model else sorted(known):
                    if prices.unpriced(name):
                        log.warning(
                            "limits.rules[%d]: model '%s' has no price, so its spend is not counted", index, name
                        )
        store: CounterStore
        if limits.redis:
            policy = "requests pass uncounted" if limits.on_redis_error == "open" else "requests are refused (503)"
            store = RedisCounters(
                limits.redis, limits.key_prefix, outage_note=f"on_redis_error is {limits.on_redis_error}: {policy}"
            )
        else:
            problem = workers_problem(config, config.server.workers)
            if problem:  # never silently per process (``opsgate serve --workers`` checks its own count)
                raise ConfigError([problem])
            store = MemoryCounters()
        limiter = Limiter(limits.rules, store, on_store_error=limits.on_redis_error)
        return cls(limiter, prices, limits.default_max_tokens)

    async def start(self) -> None:
        """Connect the counter store."""
        await self.limiter.start()

    async def close(self) -> None:
        """Apply queued settles, then close the store."""
        await self.limiter.close()

    def status(self) -> dict[str, Any]:
        """Store health and counts, for /readyz and metrics."""
        return self.limiter.status()

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Reserve the request's estimate, or raise 429 / 503."""
        assert ctx.alias is not None
        key_rule, inherited = ctx.principal.limits, ctx.principal.inherited_limits
        if key_rule is None and not inherited and not self.limiter.rules:
            # Nothing can apply (auth on, limits off, a key without its own): the limiter would plan no
            # check and reserve nothing, after an estimate and a random lease id (a syscall) per request.
            return None
        prompt, output = estimate_tokens(ctx, self.default_max_tokens)
        demand = Demand(tokens=prompt + output, cost=self.prices.estimate(ctx.alias.name, prompt, output))
        reservation = await self.limiter.reserve(identify(ctx), demand, key_rule, inherited)
        if reservation is not None:
            ctx.scratch[self.name] = (reservation, prompt)  # for after, which runs whenever before did
            if not reservation.counted:
                # Let through while the counters were unreachable (on_redis_error: open): the record says so,
                # so an operator can find afterwards which keys went unmetered (probe-g G8).
                ctx.tags["limits"] = "uncounted"
        return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Add the rate-limit headers and settle (for a stream: when it ends)."""
        held: tuple[Reservation, int] | None = ctx.scratch.pop(self.name, None)
        if held is None:
            return response
        reservation, prompt = held
        response.headers.update(reservation.headers())
        if isinstance(response, StreamResult):
            response.on_finish.append(lambda outcome: self._settle_stream(ctx, reservation, prompt, outcome))
            return response
        self.limiter.settle(reservation, *self._json_usage(ctx, response, prompt))
        return response

    def _json_usage(self, ctx: RequestContext, response: JsonResult, prompt: int) -> tuple[float | None, float | None]:
        if ctx.cache_hit:
            return 0, 0.0
        if response.error is not None and response.error.status == 499 and ctx.scratch.get(BACKEND_CALLED):
            # The client left while the call was under way: the upstream may already hold the prompt (not
            # while it still waited in the gateway's own lines or guards: then nothing was sent).
            abandoned: Usage = {"prompt_tokens": prompt, "completion_tokens": 0}
            return used_tokens(abandoned), self._cost(ctx, abandoned)
        if response.error is not None or response.status >= 400:
            return 0, 0.0
        usage = response.body.get("usage")
        if not isinstance(usage, dict):
            return None, None  # served, usage unknown: keep the estimate
        return used_tokens(usage), self._cost(ctx, usage)

    def _cost(self, ctx: RequestContext, usage: Usage) -> float | None:
        """What the request cost on the deployment that served it (the same rule as the record's)."""
        return self.prices.cost(ctx.alias.name if ctx.alias else None, ctx.deployment, usage)

    def _settle_stream(
        self, ctx: RequestContext, reservation: Reservation, prompt: int, outcome: StreamOutcome
    ) -> None:
        if ctx.cache_hit:
            usage: Usage = {}
        elif outcome.usage:
            usage = outcome.usage
        elif outcome.content or _client_ended(outcome):
            # Cut short (upstream failure or client gone) before the usage chunk: the upstream
            # still did the work, so count the prompt estimate and about a token per piece sent.
            usage = {"prompt_tokens": prompt, "completion_tokens": len(outcome.content)}
        else:
            usage = {}
        tokens = used_tokens(usage) if usage else 0
        self.limiter.settle(reservation, tokens, self._cost(ctx, usage) if usage else 0.0)


def _client_ended(outcome: StreamOutcome) -> bool:
    """The stream was served until the client left or stalled (or it ended without usage): not an upstream failure."""
    return outcome.error is None or outcome.error.status == 499
