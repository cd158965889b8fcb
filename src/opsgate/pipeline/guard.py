"""Stage: guardrails — input scanners in ``before``, output scanners in ``after`` (streams as they pass).

``before`` picks the policy for the alias and tenant, scans the request's texts and applies each
scanner's action: block (400 ``input_blocked``), redact (the model sees the redacted text; in
reversible mode placeholders that are put back in the answer), warn or log. When the output
policy scores confidence, the stage asks the model for logprobs itself and removes them from the
answer if the client did not ask. ``after`` scans the answer: block (422 ``output_blocked``; mid-
stream, an error event ends the stream), redact, warn, log. Every verdict, score and time goes into
``ctx.tags["guard"]`` for the record; warnings also go to the ``x-opsgate-guard-warn`` header
(for a stream, only those known before it starts). Messages a client lists in
``x-opsgate-untrusted-messages`` (retrieved documents pasted into a user turn) are scanned as
``tool`` content: the agent-directed injection checks and the ``tool_threshold`` apply.

Input scanning has a time budget per request (the policy's ``time_budget_ms``). An input of more
than ``_OFFLOAD_CHARS``, or any input when a scanner of the policy says ``off_loop`` (a model that
costs milliseconds per KB, like PII's NER), is scanned in the stage's own small thread pool, so a
long prompt never holds the event loop for its whole scan; other small inputs are scanned inline
(microseconds, less than a thread hop). Past the budget the policy's ``on_timeout`` decides — block (400, scanner
``time_budget``) or pass with a warning — and the record's guard entry says ``timed_out``.

Output scans follow the same rule (the pool for large texts, ``off_loop`` scanners and checks
against a client's JSON schema) and have the same budget, for all of an answer's scans together
(every window of a stream). Past it, ``block`` withholds the answer (422 ``output_blocked``,
scanner ``time_budget``; in a stream, the error event) and ``warn`` lets the rest through unscanned.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opsgate.backends.base import UnusableAnswer
from opsgate.domain.config import GatewayConfig
from opsgate.domain.context import Chunk, GatewayResponse, JsonResult, RequestContext, StreamResult
from opsgate.domain.errors import GatewayError, InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.engine import GuardBlocked, GuardEngine, GuardEntry, Policy, Run
from opsgate.guard.json_schema import schema_problem
from opsgate.guard.output import wants_json
from opsgate.guard.pii import restore, split_partial_placeholder
from opsgate.pipeline import guard_fields
from opsgate.pipeline.guard_texts import texts as _texts
from opsgate.pipeline.guard_texts import untrusted_messages
from opsgate.pipeline.guard_texts import with_texts as _with_texts
from opsgate.pipeline.guard_vault import RoleVault, restore_roles
from opsgate.pipeline.guard_windows import carries_more_than_role as _carries_more_than_role
from opsgate.pipeline.guard_windows import cut as _cut
from opsgate.pipeline.guard_windows import logprob_entries
from opsgate.pipeline.guard_windows import may_cut_now as _may_cut_now
from opsgate.pipeline.guard_windows import merge_logprobs as _merge_logprobs
from opsgate.pipeline.guard_windows import without_content as _without_content
from opsgate.pipeline.stage import PassStage

WARN_HEADER = "x-opsgate-guard-warn"
_SCRATCH = "guard"
_PARAM = {"chat": "messages", "completion": "prompt", "embedding": "input"}
# Inputs longer than this are scanned in the guard's thread pool (a 4 KB scan costs ~0.5 ms).
_OFFLOAD_CHARS = 4096
_TIME_BUDGET = "time_budget"
# Stream delta keys that need no tool-call / refusal handling.
_PLAIN_DELTA = frozenset({"role", "content"})


@dataclass(slots=True)
class _State:
    policy: Policy
    context: ScanContext
    warn: list[str]
    strip_logprobs: bool = False
    strip_top: bool = False
    output: dict[str, GuardEntry] = field(default_factory=dict)
    # What is left of the output scans' time budget (all windows of a stream together).
    output_left_ns: int = 0
    # Past that budget under on_timeout: warn, the rest of the answer passes unscanned.
    output_unscanned: bool = False
    # Off-loop scanner, characters a scan reads beyond the text (a leak check), a client JSON schema.
    output_traits: tuple[bool, int, bool] | None = None
    # The placeholders put back in the answer: those of values from the restore_roles' messages.
    restore: Vault = field(default_factory=Vault)


_Result = TypeVar("_Result")


class GuardStage(PassStage):
    """Runs the guard policies around the model call."""

    name = "guard"

    def __init__(self, engine: GuardEngine, window_chars: int, scan_threads: int = 2) -> None:
        self.engine = engine
        self.window_chars = window_chars
        self.counts = {
            "scanned": 0,
            "input_blocked": 0,
            "output_blocked": 0,
            "redacted": 0,
            "warned": 0,
            "timed_out": 0,
            "offloaded": 0,
        }
        # Per policy: (the policy, an off_loop output scanner, a leak scanner, a json scanner).
        self._policy_traits: dict[int, tuple[Policy, bool, bool, bool]] = {}
        # Its own pool: a burst of long prompts queues here, not in the loop's default executor.
        self._pool = ThreadPoolExecutor(scan_threads, thread_name_prefix="opsgate-guard")

    def status(self) -> dict[str, object]:
        """Policies and what the guard did since start, for /readyz."""
        return {"policies": [p.name for p in self.engine.policies], **self.counts}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> GuardStage:
        """The stage for ``config.guard`` (scanners built and patterns compiled now)."""
        return cls(GuardEngine(config.guard), config.guard.stream_window_chars)

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Scan the input; block, or hand the model the redacted request."""
        body = ctx.body
        if body is None:
            return None
        tenant = ctx.tenant
        policy = self.engine.policy_for(ctx.alias.name if ctx.alias else None, tenant)
        if policy is None:
            return None
        context = ScanContext("input", model=ctx.alias.name if ctx.alias else None, tenant=tenant)
        vault = context.vault = RoleVault(context)
        texts = _texts(body, untrusted_messages(ctx.headers))
        tags: dict[str, Any] = {"policy": policy.name}
        ctx.tags["guard"] = tags
        state = _State(policy, context, [], output_left_ns=int(policy.time_budget_ms * 1e6))
        ctx.scratch[_SCRATCH] = state
        self.counts["scanned"] += 1
        if policy.input and texts:
            run = await self._scan_input(policy, texts, context)
            tags["input"] = run.record()
            if run.timed_out:
                self._timed_out(policy, tags, state, run, _PARAM[ctx.endpoint])
            elif run.blocked is not None:
                self.counts["input_blocked"] += 1
                raise GuardBlocked("input", policy.name, run.blocked, _PARAM[ctx.endpoint])
            state.warn.extend(run.warn)
            if run.texts != [t for _, t in texts]:
                self.counts["redacted"] += 1
                body = ctx.body = _with_texts(body, run.texts)
        if vault:
            state.restore = vault.restorable(restore_roles(policy))
        if isinstance(body, ChatCompletionRequest):
            system = [m.text() for m in body.messages if m.role in ("system", "developer")]
            context.system_prompt = "\n".join(system) or None
            if body.response_format is not None:
                context.response_format = body.response_format.model_dump(mode="json")
                await self._refuse_unusable_schema(policy, context.response_format)
        self._ask_for_logprobs(ctx, state)
        return None

    async def _refuse_unusable_schema(self, policy: Policy, response_format: dict[str, Any]) -> None:
        """A client schema the json scanner cannot use (remote ``$ref``, a pattern RE2 refuses, too big or
        deep, …) is the client's mistake: a 400 naming ``response_format``, before anything goes upstream."""
        if not any(entry.name == "json" for entry in policy.output):
            return
        _, schema = wants_json(response_format)
        if schema is None:
            return
        # Bounded but up to ~0.1 s for a 48 KB schema: in the pool, not on the event loop (cached by digest).
        problem = await asyncio.get_running_loop().run_in_executor(self._pool, schema_problem, schema)
        if problem is not None:
            raise InvalidRequestError(
                f"response_format.json_schema cannot be used: {problem}",
                param="response_format",
                code="invalid_json_schema",
            )

    async def _scan_input(self, policy: Policy, texts: Sequence[tuple[str, str]], context: ScanContext) -> Run:
        """The input scan, inline for small inputs and in the pool for large ones, within the time budget."""
        budget_ns = int(policy.time_budget_ms * 1e6)
        deadline = time.perf_counter_ns() + budget_ns
        heavy = any(getattr(entry.scanner, "off_loop", False) for entry in policy.input)
        if not heavy and sum(len(text) for _, text in texts) <= _OFFLOAD_CHARS:
            return self.engine.run(policy.input, texts, context, deadline_ns=deadline)
        self.counts["offloaded"] += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            self._pool, lambda: self.engine.run(policy.input, texts, context, deadline_ns=deadline)
        )
        try:
            # shield: on a timeout the scan stops by itself at its next scanner (it checks the deadline).
            return await asyncio.wait_for(asyncio.shield(future), budget_ns / 1e9)
        except TimeoutError:
            return Run([text for _, text in texts], {}, timed_out=True)

    def _timed_out(self, policy: Policy, tags: dict[str, Any], state: _State, run: Run, param: str) -> None:
        """Past the time budget: block, or let the request through as it came, with a warning."""
        self.counts["timed_out"] += 1
        entry = GuardEntry(_TIME_BUDGET, policy.on_timeout, 1.0, "fail", 1.0, int(policy.time_budget_ms * 1e6))
        entry.details = {"timed_out": True, "budget_ms": policy.time_budget_ms}
        tags["input"] = [*run.record(), entry.record()]
        tags["timed_out"] = True
        if policy.on_timeout == "block":
            self.counts["input_blocked"] += 1
            raise GuardBlocked("input", policy.name, entry, param)
        state.warn.append(_TIME_BUDGET)

    def _ask_for_logprobs(self, ctx: RequestContext, state: _State) -> None:
        """Confidence needs logprobs: request them (and strip them later) if the client did not."""
        wanted = next((e.config for e in state.policy.output if e.name == "confidence"), None)
        top = getattr(wanted, "top_logprobs", 0)
        body = ctx.body
        if wanted is None:
            return
        if isinstance(body, ChatCompletionRequest):
            if not body.logprobs:
                state.strip_logprobs = True
                ctx.body = body.model_copy(update={"logprobs": True, "top_logprobs": top or None})
            elif body.top_logprobs is None and top:
                state.strip_top = True
                ctx.body = body.model_copy(update={"top_logprobs": top})
        elif isinstance(body, CompletionRequest) and body.logprobs is None:
            state.strip_logprobs = True
            ctx.body = body.model_copy(update={"logprobs": min(top, 5)})

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Scan the answer (a stream as it passes); put reversible placeholders back."""
        state: _State | None = ctx.scratch.pop(_SCRATCH, None)
        if state is None:
            return response
        if state.warn:
            response.headers[WARN_HEADER] = ",".join(state.warn)
        if response.status != 200 or ctx.endpoint == "embedding":
            return response
        if isinstance(response, StreamResult):
            self.counts["warned"] += bool(state.warn)
            response.source = self._guard_stream(ctx, state, response.source)
            return response
        if response.error is not None:
            return response
        return await self._guard_json(ctx, state, response)

    def _output_context(self, state: _State, logprobs: list[dict[str, Any]] | None, final: bool) -> ScanContext:
        ctx = state.context
        return ScanContext(
            "output",
            model=ctx.model,
            tenant=ctx.tenant,
            system_prompt=ctx.system_prompt,
            response_format=ctx.response_format,
            logprobs=logprobs,
            final=final,
            vault=ctx.vault,
        )

    def _heavy_output(self, state: _State, chars: int, final: bool) -> bool:
        """Whether an output scan goes to the pool: as on input by size and ``off_loop``, and whenever it
        checks the answer against the client's own JSON schema (its patterns are the client's code)."""
        traits = state.output_traits
        if traits is None:
            policy = state.policy
            known = self._policy_traits.get(id(policy))
            if known is None or known[0] is not policy:
                names = {entry.name for entry in policy.output}
                off_loop = any(getattr(entry.scanner, "off_loop", False) for entry in policy.output)
                known = self._policy_traits[id(policy)] = (
                    policy,
                    off_loop,
                    "system_prompt_leak" in names,
                    "json" in names,
                )
            _, off_loop, leak, json_check = known
            # The leak scanner's cost grows with the prompt it looks for.
            extra = len(state.context.system_prompt or "") if leak else 0
            response_format = state.context.response_format
            schema = json_check and response_format is not None and response_format.get("type") == "json_schema"
            traits = state.output_traits = (off_loop, extra, schema)
        off_loop, extra, schema = traits
        return off_loop or (final and schema) or chars + extra > _OFFLOAD_CHARS

    async def _scan_output(self, state: _State, heavy: bool, work: Callable[[int], _Result]) -> _Result | None:
        """``work(deadline_ns)`` inline or in the pool, within what is left of the output budget; None past it."""
        left = state.output_left_ns
        if left <= 0:
            return None
        started = time.perf_counter_ns()
        result: _Result | None
        if not heavy:
            result = work(started + left)
        else:
            self.counts["offloaded"] += 1
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._pool, work, started + left)
            try:
                # shield: on a timeout the scan stops by itself at its next scanner (it checks the deadline).
                result = await asyncio.wait_for(asyncio.shield(future), left / 1e9)
            except TimeoutError:
                result = None
        state.output_left_ns -= time.perf_counter_ns() - started
        return result

    def _output_timed_out(self, ctx: RequestContext, state: _State) -> GuardBlocked | None:
        """Past the output budget: the error that withholds the answer (block), or None (warn: it passes
        unscanned from here on). The record's guard tag says ``timed_out`` either way."""
        policy = state.policy
        self.counts["timed_out"] += 1
        entry = GuardEntry(_TIME_BUDGET, policy.on_timeout, 1.0, "fail", 1.0, int(policy.time_budget_ms * 1e6))
        entry.details = {"timed_out": True, "budget_ms": policy.time_budget_ms}
        state.output[_TIME_BUDGET] = entry
        tags = ctx.tags["guard"]
        tags["output"] = [e.record() for e in state.output.values()]
        tags["timed_out"] = True
        if policy.on_timeout == "block":
            self.counts["output_blocked"] += 1
            return GuardBlocked("output", policy.name, entry, None)
        state.output_unscanned = True
        if _TIME_BUDGET not in state.warn:
            state.warn.append(_TIME_BUDGET)
        return None

    async def _guard_json(self, ctx: RequestContext, state: _State, response: JsonResult) -> JsonResult:
        choices = response.body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return response
        choice = choices[0]
        message = choice.get("message") if ctx.endpoint == "chat" else None
        text = (message or {}).get("content") if ctx.endpoint == "chat" else choice.get("text")
        logprobs = logprob_entries(choice.get("logprobs"))
        entries = state.policy.output
        if entries and isinstance(text, str):
            answer: str = text
            context = self._output_context(state, logprobs, final=True)
            run = await self._scan_output(
                state,
                self._heavy_output(state, len(answer), final=True),
                lambda deadline: self.engine.run(entries, [("assistant", answer)], context, deadline_ns=deadline),
            )
            if run is None or run.timed_out:
                if run is not None:
                    state.output.update(run.entries)
                error = self._output_timed_out(ctx, state)
                if error is not None:
                    return self._withheld(response, error)
            else:
                state.output = run.entries
                ctx.tags["guard"]["output"] = run.record()
                if run.blocked is not None:
                    self.counts["output_blocked"] += 1
                    return self._withheld(response, GuardBlocked("output", state.policy.name, run.blocked, None))
                text = run.texts[0]
                for name in run.warn:
                    if name not in state.warn:
                        state.warn.append(name)
        if isinstance(message, dict):
            wrong = guard_fields.problem(message, stream=False)
            if wrong is not None:
                unusable = UnusableAnswer.from_(ctx.visible_deployment(), f"an answer that {wrong}")
                return self._withheld(response, unusable)
        if isinstance(message, dict) and guard_fields.carries_fields(message):
            try:
                scanned = await self._scan_fields(ctx, state, guard_fields.texts([message]))
            except GuardBlocked as error:
                return self._withheld(response, error)
            guard_fields.put_back([message], scanned, state.restore)
        if isinstance(text, str) and state.restore:
            text = restore(text, state.restore)
        if isinstance(text, str):
            if message is not None:
                message["content"] = text
            else:
                choice["text"] = text
        self._strip(state, choice)
        if state.warn:
            self.counts["warned"] += 1
            response.headers[WARN_HEADER] = ",".join(state.warn)
        return response

    async def _scan_fields(
        self, ctx: RequestContext, state: _State, found: dict[guard_fields.Key, str]
    ) -> dict[guard_fields.Key, str]:
        """The data scanners over an answer's arguments and refusal: their texts, redacted; raises on a block."""
        entries = [entry for entry in state.policy.output if entry.name in guard_fields.DATA_SCANNERS]
        if not found or not entries or state.output_unscanned:
            return found
        keys = list(found)
        pairs = [("assistant", found[key]) for key in keys]
        context = self._output_context(state, None, final=True)

        heavy = self._heavy_output(state, sum(len(text) for _, text in pairs), final=False)

        def work(deadline: int) -> tuple[Run, dict[str, GuardEntry]]:
            folded = _folded_copy(state.output) if heavy else state.output
            return self.engine.run(entries, pairs, context, folded, deadline), folded

        result = await self._scan_output(state, heavy, work)
        if result is None or result[0].timed_out:
            if result is not None:
                state.output.update(result[1])
            error = self._output_timed_out(ctx, state)
            if error is not None:
                raise error
            return found
        run, state.output = result
        ctx.tags["guard"]["output"] = [e.record() for e in state.output.values()]
        if run.blocked is not None:
            self.counts["output_blocked"] += 1
            raise GuardBlocked("output", state.policy.name, run.blocked, None)
        for name in run.warn:
            if name not in state.warn:
                state.warn.append(name)
        return dict(zip(keys, run.texts, strict=True))

    @staticmethod
    def _withheld(response: JsonResult, error: GatewayError) -> JsonResult:
        """The error answer in place of a blocked one, with the gateway's own ``x-`` headers kept."""
        blocked = JsonResult.from_error(error)
        blocked.headers.update({k: v for k, v in response.headers.items() if k.startswith("x-")})
        return blocked

    @staticmethod
    def _strip(state: _State, choice: dict[str, Any]) -> None:
        if state.strip_logprobs:
            choice["logprobs"] = None
        elif state.strip_top and isinstance(choice.get("logprobs"), dict):
            for entry in choice["logprobs"].get("content") or ():
                if isinstance(entry, dict):
                    entry["top_logprobs"] = []

    async def _guard_stream(
        self, ctx: RequestContext, state: _State, source: AsyncIterator[Chunk]
    ) -> AsyncIterator[Chunk]:
        """Hold the text back in windows, scan each before it leaves, end with an error event on a block."""
        chat = ctx.endpoint == "chat"
        vault = state.restore
        buffer = ""  # model text not yet released
        released = ""  # model text already released (the whole-scope scanners read it all)
        carry = ""  # restored text held back: it may be a placeholder cut in two
        logprobs: list[dict[str, Any]] = []
        raw_logprobs: dict[str, Any] | None = None  # the client's own logprobs, for the next released chunk
        template: Chunk | None = None
        held: list[Chunk] = []  # finish and usage chunks, released after the final scan
        fields: list[Chunk] = []  # tool-call and refusal deltas: scanned whole, released after the text
        policy = state.policy
        window = [e for e in policy.output if e.scope == "window"]
        whole = [e for e in policy.output if e.scope == "whole"]
        final_only = [e for e in policy.output if e.scope == "final"]

        async def scan(segment: str, final: bool) -> str:
            nonlocal released
            if state.output_unscanned:
                released += segment
                return segment
            context = self._output_context(state, logprobs, final)
            so_far = released + segment

            chars = len(segment) + (len(so_far) if whole or (final and final_only) else 0)
            heavy = self._heavy_output(state, chars, final)

            def work(deadline: int) -> tuple[list[Run], dict[str, GuardEntry]]:
                # In the pool, into a copy: a scan still running past the budget must not write the record.
                folded = _folded_copy(state.output) if heavy else state.output
                runs = [self.engine.run(window, [("assistant", segment)], context, folded, deadline)]
                if runs[-1].blocked is None and whole and not runs[-1].timed_out:
                    runs.append(self.engine.run(whole, [("assistant", so_far)], context, folded, deadline))
                if runs[-1].blocked is None and final and final_only and not runs[-1].timed_out:
                    runs.append(self.engine.run(final_only, [("assistant", so_far)], context, folded, deadline))
                return runs, folded

            result = await self._scan_output(state, heavy, work)
            if result is None or any(run.timed_out for run in result[0]):
                if result is not None:
                    state.output.update(result[1])
                error = self._output_timed_out(ctx, state)
                if error is not None:
                    raise error
                released += segment
                return segment
            runs, state.output = result
            ctx.tags["guard"]["output"] = [e.record() for e in state.output.values()]
            if runs[-1].blocked is not None:
                self.counts["output_blocked"] += 1
                raise GuardBlocked("output", policy.name, runs[-1].blocked, None)
            released += segment
            return runs[0].texts[0]

        def emit(text: str, final: bool) -> Chunk | None:
            nonlocal carry, raw_logprobs
            out = carry + text
            carry = ""
            if vault and not final:
                out, carry = split_partial_placeholder(out)
            if vault:
                out = restore(out, vault)
            if not out and raw_logprobs is None:
                return None
            assert template is not None
            choice: dict[str, Any] = {"index": 0, "logprobs": raw_logprobs, "finish_reason": None}
            if chat:
                choice["delta"] = {"content": out}
            else:
                choice["text"] = out
            raw_logprobs = None
            return {**{k: v for k, v in template.items() if k != "choices"}, "choices": [choice]}

        try:
            async for chunk in source:
                choices = chunk.get("choices") or []
                first = choices[0] if choices and isinstance(choices[0], dict) else None
                if first is None:
                    held.append(chunk)  # the usage chunk
                    continue
                delta = first.get("delta") if chat else None
                # Most deltas carry only text (or the role): one C-level key check, no field walk.
                plain = not isinstance(delta, dict) or delta.keys() <= _PLAIN_DELTA
                if not plain:
                    wrong = guard_fields.problem(delta, stream=True)  # type: ignore[arg-type]
                    if wrong is not None:
                        raise UnusableAnswer.from_(ctx.visible_deployment(), f"a stream event that {wrong}")
                piece = (delta or {}).get("content") if chat else first.get("text")
                logprobs.extend(logprob_entries(first.get("logprobs")))
                if first.get("logprobs") is not None and not state.strip_logprobs:
                    self._strip(state, first)
                    raw_logprobs = _merge_logprobs(raw_logprobs, first.get("logprobs"))
                if first.get("finish_reason"):
                    if piece:
                        buffer += piece
                    held.append(_without_content(chunk, chat))
                    continue
                if not piece:
                    if template is not None and _carries_more_than_role(first):
                        # A tool call or refusal after text: the text before it leaves first, scanned.
                        out, buffer = emit(await scan(buffer, final=False), final=False), ""
                        if out is not None:
                            yield out
                    if state.strip_logprobs:
                        first["logprobs"] = None
                    if chat and guard_fields.carries_fields(guard_fields.chunk_delta(chunk)):
                        fields.append(chunk)
                        continue
                    yield chunk  # the role chunk: no text to scan
                    continue
                template = template or chunk
                buffer += piece
                if not plain and _carries_more_than_role(first):
                    # A tool call or refusal riding on a text delta (probe-new M3): the text goes to the
                    # buffer, the rest is held with the other fields and scanned whole.
                    rest = _without_content(chunk, chat)
                    if state.strip_logprobs:
                        rest["choices"][0]["logprobs"] = None
                    fields.append(rest)
                if len(buffer) >= self.window_chars and _may_cut_now(buffer, len(piece), self.window_chars):
                    cut = _cut(buffer, self.window_chars)
                    if cut:
                        segment, buffer = buffer[:cut], buffer[cut:]
                        out = emit(await scan(segment, final=False), final=False)
                        if out is not None:
                            yield out
            if template is None:
                template = held[0] if held else {"choices": []}
            out = emit(await scan(buffer, final=True), final=True)
            if out is not None:
                yield out
            # The finish chunk may carry the last fragment of arguments too (its delta is our copy).
            deltas = [guard_fields.chunk_delta(chunk) for chunk in (*fields, *held)] if chat else []
            deltas = [delta for delta in deltas if guard_fields.carries_fields(delta)]
            if deltas:
                scanned = await self._scan_fields(ctx, state, guard_fields.texts(deltas))
                guard_fields.put_back(deltas, scanned, state.restore)
            for chunk in fields:
                yield chunk
            for chunk in held:
                if state.strip_logprobs:
                    for choice in chunk.get("choices") or ():
                        choice["logprobs"] = None
                yield chunk
        finally:
            # A block (or the client leaving) must stop the model at once, not when the generator is collected.
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()


def _folded_copy(entries: dict[str, GuardEntry]) -> dict[str, GuardEntry]:
    """The record's entries to fold a scan into: a scan still running past the budget must not write them."""
    return {name: dataclasses.replace(e, details=dict(e.details)) for name, e in entries.items()}
