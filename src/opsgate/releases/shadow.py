"""Shadow traffic: a share of live requests is sent again to a candidate release, after the client has
its answer, and the candidate's answer is kept as an evaluation item — never shown to anyone.

Off the request path (a task started in the release stage's ``after``), bounded (at most
``max_in_flight`` shadow calls; more are dropped and counted) and shared fairly between tenants (see
``ShadowMirror._admit``), never streamed. The results go to the
evaluation tables (a run of kind ``shadow`` per experiment, item key = the live request's id), not to
the request log: a shadow call is recorded as shadow and never billed in ``usage_daily``, and the
online scorers and experiment reports read it like any other run item.

The live prompt and the candidate's answer are kept as the request log keeps text (``ItemPayloads``):
none with ``record.payloads: metadata_only``; with ``record.encryption``, sealed by the request log's
own ``PayloadCipher`` unless the field is in ``index_in_clear``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
from opsgate.domain.requests import ChatCompletionRequest, ChatMessage
from opsgate.releases.cache import Arm
from opsgate.store.crypto import PayloadCipher, key_id_of
from opsgate.store.encoding import storable_text

if TYPE_CHECKING:
    from opsgate.domain.pricing import PriceBook
    from opsgate.evals.store import EvalStore
    from opsgate.store.record_log import RecordLog

log = logging.getLogger("opsgate.releases.shadow")
Terminal = Callable[[RequestContext], Awaitable[GatewayResponse]]


@dataclass(frozen=True)
class ItemPayloads:
    """How a shadow item keeps text (``input``, ``output``): by the request log's payload policy.

    A sealed field is ``PayloadCipher`` ciphertext bound to ``run_id/item_key/field`` (so it cannot be
    moved to another item or column unnoticed); ``open_item`` is the reader's side.
    """

    metadata_only: bool = False
    cipher: PayloadCipher | None = None
    clear_fields: frozenset[str] = frozenset({"input", "output"})

    @classmethod
    def of(cls, record_log: RecordLog | None) -> ItemPayloads:
        """The policy of the request log (text kept in clear when there is none)."""
        if record_log is None:
            return cls()
        metadata_only = record_log.config.payloads == "metadata_only"
        return cls(metadata_only, record_log.cipher, frozenset(record_log.clear_fields))

    def keep(self, field: str, text: str | None, run_id: str, item_key: str) -> str | None:
        """What to store for ``field``: nothing, the text, or its ciphertext."""
        if text is None or self.metadata_only:
            return None
        if self.cipher is None or field in self.clear_fields:
            return storable_text(text)  # NUL as U+FFFD, as the request log stores it (PostgreSQL refuses NUL)
        return self.cipher.encrypt(text, bound_to(run_id, item_key, field))

    def open_item(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item as stored (``EvalStore.iter_items``) with sealed fields opened; without the key they
        read ``{"encrypted_with": key_id}``, as the request log's payloads do."""
        for field in ("input", "output"):
            value = item.get(field)
            if not isinstance(value, str) or key_id_of(value) is None:
                continue
            if self.cipher is None:
                item[field] = {"encrypted_with": key_id_of(value)}
            else:
                item[field] = self.cipher.decrypt(value, bound_to(item["run_id"], item["item_key"], field))
        return item


def bound_to(run_id: str, item_key: str, field: str) -> str:
    """The associated data a sealed item field is bound to (readers: ``evals/item_text.py``)."""
    return f"{run_id}/{item_key}/{field}"


class ShadowMirror:
    """Runs shadow calls through the router and stores their results."""

    def __init__(
        self,
        terminal: Terminal,
        evals: Callable[[], EvalStore] | None,
        max_in_flight: int = 4,
        prices: Callable[[], PriceBook] | None = None,
        payloads: ItemPayloads | None = None,
    ) -> None:
        self.terminal = terminal
        self.evals = evals
        # Required in effect: the gateway passes the request log's policy; the default (clear text) is
        # only for a mirror with no request log, whose items go nowhere anyway.
        self.payloads = payloads or ItemPayloads()
        self.max_in_flight = max_in_flight
        # The gateway's PriceBook (late-bound: a reload may change prices): a shadow call costs what the
        # record would charge for the deployment that served it, its own price before its alias's.
        self.prices = prices
        self.in_flight = 0
        self._held: dict[str | None, int] = {}  # calls in flight per tenant holding any (None: operator)
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, ctx: RequestContext, arm: Arm, experiment: str | None) -> bool:
        """Start one shadow call for ``ctx``'s request, unless the bound is reached (then it is dropped)."""
        body = ctx.body
        if not isinstance(body, ChatCompletionRequest) or arm.release is None:
            return False
        tenant = ctx.principal.tenant
        if not self._admit(tenant):
            self.dropped += 1
            return False
        self.in_flight += 1
        self._held[tenant] = self._held.get(tenant, 0) + 1
        # The candidate's prompt goes in front of the client's own messages; a prompt the client named
        # itself wins, as on the live path, so then the shadow sends what the live call sent.
        client_prompt = bool(ctx.scratch.get("release.client_prompt"))
        original = body.messages if client_prompt else ctx.scratch.get("release.original_messages") or body.messages
        if client_prompt:
            arm = Arm(arm.name, arm.release, None, arm.upper)
        task = asyncio.create_task(self._run(ctx, body, list(original), arm, experiment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _admit(self, tenant: str | None) -> bool:
        """Whether ``tenant`` may start a shadow call now.

        One tenant's flood must not take every slot (the experiment would then score the candidate on
        the prompts that tenant chose): a tenant holding no slot may take any free one; a tenant holding
        some leaves the last free slot to tenants holding none and takes at most an even share among
        the tenants holding slots now. A lone tenant so uses ``max_in_flight - 1`` slots at most.
        """
        if self.in_flight >= self.max_in_flight:
            return False
        held = self._held.get(tenant, 0)
        if held == 0:
            return True
        share = -(-self.max_in_flight // len(self._held))  # ceil: the tenant is one of the holders
        return self.in_flight + 1 < self.max_in_flight and held < share

    def _release(self, tenant: str | None) -> None:
        self.in_flight -= 1
        left = self._held.get(tenant, 0) - 1
        if left > 0:
            self._held[tenant] = left
        else:
            self._held.pop(tenant, None)

    async def _run(
        self,
        live: RequestContext,
        body: ChatCompletionRequest,
        messages: list[ChatMessage],
        arm: Arm,
        experiment: str | None,
    ) -> None:
        from opsgate.pipeline.release import WEIGHTS_KEY, _fill

        assert arm.release is not None
        try:
            copy = body.model_copy(deep=True)
            copy.messages = messages
            copy.stream = False
            copy.stream_options = None
            ctx = RequestContext(
                endpoint="chat", raw_body=b"", headers={}, request_id=f"{live.request_id}-shadow", body=copy
            )
            ctx.alias = live.alias
            ctx.principal = live.principal
            ctx.tags["shadow"] = True
            spec = arm.release.spec
            if spec.get("deployments"):
                ctx.scratch[WEIGHTS_KEY] = spec["deployments"]
            _fill(ctx, spec.get("parameters") or {})
            if arm.prompt is not None:
                variables = (body.metadata or {}).get("variables") or {}
                rendered = arm.prompt.render(variables if isinstance(variables, dict) else {})
                copy.messages = [ChatMessage(role=m["role"], content=m["content"]) for m in rendered] + messages
                _fill(ctx, arm.prompt.parameters)
            started = time.perf_counter()
            try:
                response = await self.terminal(ctx)
            except Exception as error:  # a shadow failure is data, never the client's problem
                response = JsonResult(body={}, status=500, error=None)
                log.debug("shadow call failed: %s", error)
            latency = (time.perf_counter() - started) * 1000.0
            self.sent += 1
            await self._store(live, ctx, response, latency, arm, experiment)
        except Exception:
            self.failed += 1
            log.exception("shadow call for %s failed", live.request_id)
        finally:
            self._release(live.principal.tenant)

    async def _store(
        self,
        live: RequestContext,
        ctx: RequestContext,
        response: GatewayResponse,
        latency: float,
        arm: Arm,
        experiment: str | None,
    ) -> None:
        if self.evals is None or not isinstance(response, JsonResult):
            return
        from opsgate.evals.store import ItemResult
        from opsgate.pipeline.record import input_text

        assert arm.release is not None and live.alias is not None
        ok = response.error is None and response.status < 400
        usage = response.body.get("usage") if ok else None
        choices = response.body.get("choices") or [{}]
        output = ((choices[0] or {}).get("message") or {}).get("content") if ok else None
        tenant = live.principal.tenant
        run_id = f"shadow:{experiment or arm.release.id}:{tenant or '-'}"
        keep = self.payloads.keep
        item = ItemResult(
            item_key=live.request_id,
            idx=None,
            status="ok" if ok else "failed",
            input=keep("input", input_text(live.body), run_id, live.request_id),
            output=keep("output", output if isinstance(output, str) else None, run_id, live.request_id),
            error=None if ok else (response.error.message if response.error else f"HTTP {response.status}"),
            request_id=live.request_id,
            latency_ms=round(latency, 3),
            prompt_tokens=(usage or {}).get("prompt_tokens"),
            completion_tokens=(usage or {}).get("completion_tokens"),
            cost=self.prices().cost(live.alias.name, ctx.deployment, usage) if self.prices is not None else None,
            ts=time.time(),
            # The live record's user and time: an erasure of that user since then drops the item.
            user=user if isinstance(user := getattr(live.body, "user", None), str) else None,
            request_ts=live.received_at,
        )
        evals = self.evals()

        def write() -> None:
            if evals.get_run(tenant, run_id) is None:
                try:
                    evals.create_run(
                        tenant,
                        live.alias.name if live.alias else "",
                        kind="shadow",
                        run_id=run_id,
                        settings={"source": "shadow traffic", "experiment": experiment},
                        release=arm.release.id if arm.release else None,
                        arm="shadow",
                    )
                except Exception:
                    if evals.get_run(tenant, run_id) is None:
                        raise
            evals.write_results(run_id, tenant, live.alias.name if live.alias else "", [item])

        await asyncio.to_thread(write)

    async def close(self) -> None:
        """Wait briefly for shadow calls in flight, then cancel the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5)
            for task in pending:
                task.cancel()

    def status(self) -> dict[str, int]:
        """Counters for ``/readyz``."""
        return {"in_flight": self.in_flight, "sent": self.sent, "dropped": self.dropped, "failed": self.failed}
