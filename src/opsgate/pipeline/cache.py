"""Stage: the response cache — answer from it in ``before``, fill it in ``after``.

Lookup: the exact key first, then (temperature 0, short conversations) the most similar prompt in
the same semantic bucket. Fill: only complete, successful answers — a 200 JSON body, or a stream
that ended normally (stored from ``StreamResult.on_finish``, never a failed or abandoned one).
A hit is served the way it was asked for: JSON, or replayed as a stream. Every response that passed
the cache carries ``x-opsgate-cache: hit | semantic-hit | miss``; a hit sets ``ctx.cache_hit``
(the record shows it as ``cached`` and in its tags) and tags the record with ``saved_cost``.
``Cache-Control: no-cache`` skips the lookup (the fresh answer still refreshes the entry),
``no-store`` skips the fill; a pinned call (``x-opsgate-pin-deployment``) skips both.

The cache never fails a request: an unreachable store is a miss, and any other failure in here is
logged and treated as a miss.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from opsgate.backends.registry import ModelRegistry
from opsgate.cache.keys import CacheKeys, SemanticRules, alias_scope, cache_directives, request_keys
from opsgate.cache.semantic import Embedder
from opsgate.cache.store import CacheStore, SemanticEntry, Vector, open_store
from opsgate.cache.streams import StreamAssembler, replay
from opsgate.domain.config import ConfigError, GatewayConfig
from opsgate.domain.context import Chunk, GatewayResponse, JsonResult, RequestContext, StreamOutcome, StreamResult
from opsgate.domain.pricing import PriceBook
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest
from opsgate.pipeline.release import WEIGHTS_KEY
from opsgate.pipeline.stage import PassStage
from opsgate.routing.pin import PIN_HEADER

log = logging.getLogger("opsgate.cache")

HEADER = "x-opsgate-cache"
_PLAN = "cache"  # ctx.scratch key: the lookup's plan, from before to after


@dataclass(slots=True)
class _Plan:
    keys: CacheKeys
    fill: bool
    hit: bool = False
    vector: Vector | None = None


@dataclass(frozen=True, slots=True)
class SemanticSettings:
    """The semantic cache's rules, its embedder and how similar a prompt must be."""

    rules: SemanticRules
    embedder: Embedder
    threshold: float


class CacheStage(PassStage):
    """Serves repeated (or, at temperature 0, near-identical) requests from the cache."""

    name = "cache"

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl: float,
        scopes: dict[str, str],
        prices: PriceBook,
        semantic: SemanticSettings | None = None,
        max_entry_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.max_entry_bytes = max_entry_bytes
        self.scopes = scopes
        self.prices = prices
        self.semantic = semantic
        self.counts = {"hit": 0, "semantic-hit": 0, "miss": 0, "fill": 0, "failure": 0, "entry_too_large": 0}
        self._fills: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: GatewayConfig, registry: ModelRegistry) -> CacheStage:
        """The stage for ``config.cache``; a semantic cache needs an embedding alias of this gateway."""
        cache = config.cache
        semantic = None
        if cache.semantic.enabled:
            name = cache.semantic.embedding_model
            alias = config.alias(name)
            if alias is None or alias.kind != "embedding":
                raise ConfigError([f"cache.semantic.embedding_model: no embedding model named '{name}'"])
            semantic = SemanticSettings(
                SemanticRules(name, cache.semantic.max_messages), Embedder(registry, name), cache.semantic.threshold
            )
        return cls(
            open_store(cache),
            ttl=cache.ttl_seconds,
            scopes={alias.name: alias_scope(alias) for alias in config.models},
            prices=PriceBook(config),
            semantic=semantic,
            max_entry_bytes=cache.max_entry_bytes,
        )

    async def start(self) -> None:
        """Connect the store."""
        await self.store.start()

    async def close(self) -> None:
        """Let stream fills in flight finish, then close the store."""
        if self._fills:
            await asyncio.wait(self._fills, timeout=5)
        await self.store.close()

    async def purge(self) -> int:
        """Drop every cached answer (every replica's, with Redis); returns how many."""
        return await self.store.clear()

    def status(self) -> dict[str, object]:
        """Hit, miss and fill counts, and the store's own status."""
        return {**self.counts, **self.store.status()}

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Answer from the cache when an entry matches and the client allows it."""
        if ctx.body is None or ctx.alias is None:
            return None
        if PIN_HEADER in ctx.headers:
            # A pinned call asks one deployment (routing/pin.py decides who may): never answered from,
            # nor stored in, the cache, so its 403/400 and its deployment's own answer are what it gets.
            return None
        try:
            directives = cache_directives(ctx.headers)
            rules = self.semantic.rules if self.semantic is not None else None
            # The release stage ran first: its route (a canary arm's, the active release's deployments)
            # is in the key, so an answer is only ever reused for a request routed the same way.
            route = ctx.scratch.get(WEIGHTS_KEY)
            scope = self.scopes.get(ctx.alias.name, "")
            keys = request_keys(ctx.endpoint, ctx.body, ctx.tenant, scope, rules, route)
            plan = _Plan(keys, fill="no-store" not in directives)
            ctx.scratch[_PLAN] = plan
            if "no-cache" in directives:
                return None
            return await self._lookup(ctx, plan)
        except Exception:
            self._failed("lookup")
            return None

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Mark the response, and store a complete successful answer."""
        plan: _Plan | None = ctx.scratch.pop(_PLAN, None)
        if plan is None or plan.hit:
            return response
        self.counts["miss"] += 1
        response.headers[HEADER] = "miss"
        if not plan.fill or response.status != 200:
            return response
        try:
            if isinstance(response, JsonResult):
                if response.error is None and _complete(ctx.endpoint, response.body):
                    await self._fill(plan, response.body)
            else:
                self._fill_when_finished(ctx, plan, response)
        except Exception:
            self._failed("fill")
        return response

    async def _lookup(self, ctx: RequestContext, plan: _Plan) -> GatewayResponse | None:
        raw = await self.store.get(plan.keys.exact)
        if raw is not None:
            return self._hit(ctx, plan, raw, "hit")
        if self.semantic is None or not plan.keys.semantic:
            return None
        assert plan.keys.bucket is not None and plan.keys.text is not None
        plan.vector = await self.semantic.embedder.embed(plan.keys.text)
        if plan.vector is None:
            return None
        match = await self.store.search(plan.keys.bucket, plan.vector, self.semantic.threshold)
        if match is None:
            return None
        ctx.tags["cache_similarity"] = round(match.score, 4)
        return self._hit(ctx, plan, match.value, "semantic-hit")

    def _hit(self, ctx: RequestContext, plan: _Plan, raw: bytes, kind: str) -> GatewayResponse:
        body: dict[str, Any] = orjson.loads(raw)
        plan.hit = True
        self.counts[kind] += 1
        ctx.cache_hit = True
        # No deployment served a hit: the saving is priced by the PriceBook's rule for an alias.
        ctx.tags["saved_cost"] = self.prices.cost(ctx.alias.name if ctx.alias else None, None, body.get("usage"))
        headers = {HEADER: kind}
        request = ctx.body
        if isinstance(request, ChatCompletionRequest | CompletionRequest) and request.stream:
            source = replay(body, ctx.endpoint)
            return StreamResult(source=source, include_usage=request.include_usage(), headers=headers)
        return JsonResult(body, headers=headers)

    async def _fill(self, plan: _Plan, body: dict[str, Any]) -> None:
        value = orjson.dumps(body)
        if len(value) > self.max_entry_bytes:
            self.counts["entry_too_large"] += 1  # served, not kept: one 40 MB answer was one 42 MB Redis value
            return
        semantic = None
        if self.semantic is not None and plan.keys.semantic:
            assert plan.keys.bucket is not None and plan.keys.text is not None
            if plan.vector is None:  # the lookup was skipped (no-cache) or found an exact hit elsewhere
                plan.vector = await self.semantic.embedder.embed(plan.keys.text)
            if plan.vector is not None:
                semantic = SemanticEntry(plan.keys.bucket, plan.vector)
        await self.store.put(plan.keys.exact, value, self.ttl, semantic)
        self.counts["fill"] += 1

    def _fill_when_finished(self, ctx: RequestContext, plan: _Plan, response: StreamResult) -> None:
        """Watch the stream; once it ended normally, store what it amounted to (in the background)."""
        assembler = StreamAssembler(ctx.endpoint)
        response.source = self._observed(response.source, assembler)

        def finished(outcome: StreamOutcome) -> None:
            if not outcome.completed or outcome.error is not None or not assembler.storable:
                return  # failed, abandoned by the client, or not assembled: never stored
            task = asyncio.get_running_loop().create_task(self._fill_quietly(plan, assembler.body()))
            self._fills.add(task)
            task.add_done_callback(self._fills.discard)

        response.on_finish.append(finished)

    async def _observed(self, source: AsyncIterator[Chunk], assembler: StreamAssembler) -> AsyncIterator[Chunk]:
        """Pass the chunks on, feeding each to ``assembler`` first (the SSE writer edits chunks after).

        The assembler skips what it cannot store; should it raise all the same, the stream is
        still relayed whole and only left unstored: the cache never fails an answer.
        """
        try:
            async for chunk in source:
                try:
                    assembler.add(chunk)
                except Exception:
                    assembler.storable = False
                    self._failed("stream assembly")
                yield chunk
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()  # closed with this wrapper (a client gone), not when collected

    async def _fill_quietly(self, plan: _Plan, body: dict[str, Any]) -> None:
        try:
            await self._fill(plan, body)
        except Exception:
            self._failed("fill")

    def _failed(self, what: str) -> None:
        failures = self.counts["failure"] = self.counts["failure"] + 1
        if failures == 1 or failures % 1000 == 0:  # a bug here must not flood the log
            log.exception("response cache %s failed (%d failures so far); treated as a miss", what, failures)


def _complete(endpoint: str, body: dict[str, Any]) -> bool:
    """Whether a 200 body is a whole answer worth storing."""
    if endpoint == "embedding":
        return bool(body.get("data"))
    choices = body.get("choices")
    return (
        isinstance(choices, list)
        and bool(choices)
        and all(isinstance(c, dict) and c.get("finish_reason") for c in choices)
    )
