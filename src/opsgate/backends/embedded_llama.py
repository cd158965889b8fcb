"""The embedded chat backend: a GGUF model on llama.cpp, one generation at a time, off the event loop.

Requests queue in arrival order (a bounded line, then 503 with Retry-After) and never interrupt
one another; the event loop only relays tokens, so the server stays responsive while the model works.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from opsgate.backends import openai_shapes as shapes
from opsgate.backends.in_process import InProcessBackend
from opsgate.backends.json_grammar import schema_to_grammar
from opsgate.domain.config import LlamaCppDeployment
from opsgate.domain.context import Chunk, RequestContext
from opsgate.domain.errors import BackendFailure, GatewayError, InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest, CompletionRequest

log = logging.getLogger("opsgate.backends.llama")


@dataclass(slots=True)
class _Failed:
    error: GatewayError


_TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")


def _sampling(body: ChatCompletionRequest | CompletionRequest, deployment: LlamaCppDeployment) -> dict[str, Any]:
    """Sampling settings: the request's, else the deployment's defaults."""
    return {
        "max_tokens": body.token_limit(),
        "temperature": deployment.temperature if body.temperature is None else body.temperature,
        "top_p": deployment.top_p if body.top_p is None else body.top_p,
        "stop": body.stop_list(),
        # llama.cpp seeds are 32-bit; any 64-bit seed the client sends maps onto one, never an error.
        "seed": None if body.seed is None else body.seed % 2**32,
        "presence_penalty": body.presence_penalty or 0.0,
        "frequency_penalty": body.frequency_penalty or 0.0,
    }


def cache_owner(ctx: RequestContext) -> str:
    """Whose cached prompt a job may reuse: its tenant's, else its key's (the operator, or auth off).

    llama.cpp skips a prompt prefix it still holds from the last job, so the time to answer tells
    whether the last prompt started the same way: that must never cross from one tenant to another.
    """
    principal = ctx.principal
    return f"tenant:{principal.tenant}" if principal.tenant is not None else f"key:{principal.key_id or ''}"


def build_job(ctx: RequestContext, deployment: LlamaCppDeployment) -> Any:
    """Translate the validated OpenAI request into a GenerationJob for the engine.

    Runs before the request waits for the model: everything the client got wrong (a schema the
    engine cannot compile, tools this model cannot call) is a 400 here, not a failure of the model.
    """
    from opsgate.backends.llama_engine import GenerationJob

    body = ctx.body
    assert isinstance(body, ChatCompletionRequest | CompletionRequest)
    # Parameters this engine would otherwise drop without a word: the client would believe them applied.
    if (body.best_of or 1) > 1:
        raise InvalidRequestError(
            "best_of is not served by this model: it generates one answer.",
            param="best_of",
            code="unsupported_parameter",
        )
    if (body.model_extra or {}).get("logit_bias"):
        raise InvalidRequestError(
            "logit_bias is not served by this model.", param="logit_bias", code="unsupported_parameter"
        )
    if isinstance(body, ChatCompletionRequest):
        extra = body.model_extra or {}
        for name in _TOOL_FIELDS:
            if extra.get(name) not in (None, [], "none"):
                raise InvalidRequestError(
                    f"{name} is not served by this model: it cannot call tools or functions.",
                    param=name,
                    code="unsupported_parameter",
                )
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        grammar = None
        json_mode = False
        if body.response_format is not None and body.response_format.type == "json_object":
            json_mode = True
        elif body.response_format is not None and body.response_format.type == "json_schema":
            spec = (body.response_format.model_extra or {}).get("json_schema")
            grammar = schema_to_grammar(spec.get("schema") if isinstance(spec, dict) else None)
        return GenerationJob(
            messages=messages,
            prompt=None,
            **_sampling(body, deployment),
            logprobs=bool(body.logprobs),
            top_logprobs=body.top_logprobs or 0,
            json_mode=json_mode,
            grammar=grammar,
            owner=cache_owner(ctx),
        )
    assert isinstance(body, CompletionRequest)
    if body.suffix:
        raise InvalidRequestError("suffix (fill-in-the-middle) is not served by this model", param="suffix")
    prompt = body.prompt_text()
    if not prompt:
        # llama.cpp cannot start from zero tokens (SmolLM2 adds no BOS): the client's mistake, a 400.
        raise InvalidRequestError(
            "The prompt is empty: send at least one character.", param="prompt", code="empty_prompt"
        )
    return GenerationJob(
        messages=None,
        prompt=prompt,
        **_sampling(body, deployment),
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        owner=cache_owner(ctx),
    )


class EmbeddedLlamaBackend(InProcessBackend):
    """Serves chat and completion requests from an in-process llama.cpp model."""

    kind = "chat"

    def __init__(self, deployment: LlamaCppDeployment, label: str) -> None:
        super().__init__(label, max_queue=deployment.max_queue, queue_timeout=deployment.queue_timeout)
        self.deployment = deployment
        # Set by the integrity monitor: checks the GGUF's digest on this thread before llama.cpp reads it.
        self.before_load: Callable[[], None] | None = None

    def load(self) -> Any:
        """The llama.cpp engine."""
        from opsgate.backends.llama_engine import LlamaEngine

        if self.before_load is not None:
            self.before_load()
        return LlamaEngine(self.deployment)

    def describe(self) -> dict[str, object]:
        """Where the GGUF came from."""
        return {"model_path": self.model.model_path}

    def _run(self, job: Any, emit: Any) -> None:
        if self.model is None:
            emit(_Failed(BackendFailure(self.not_loaded_reason())))
            return
        try:
            self.model.run(job, emit)
        except GatewayError as error:  # the engine's own 400s (context length, schema, template)
            emit(_Failed(error))
        except Exception as error:
            # The breaker rule: only the model's own failures count against it. Client mistakes are
            # found in build_job and the engine's checks before generation and raise
            # InvalidRequestError; whatever else raises here is the model failing (and is logged).
            log.exception("generation failed on %s", self.label)
            emit(_Failed(BackendFailure(f"generation failed: {type(error).__name__}: {error}")))

    async def _start(self, ctx: RequestContext) -> tuple[Any, asyncio.Queue[Any]]:
        job = build_job(ctx, self.deployment)
        await self.queue.acquire()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        started = time.perf_counter()
        try:
            future = loop.run_in_executor(
                self._executor, self._run, job, lambda e: loop.call_soon_threadsafe(events.put_nowait, e)
            )
        except RuntimeError:
            self.queue.release()
            raise BackendFailure(f"model {self.label} is shutting down") from None

        def finished(_: asyncio.Future[None]) -> None:
            # The slot is freed only when the thread is done, so a cancelled job never overlaps the next.
            self.queue.release()
            self.queue.observe_job(time.perf_counter() - started)

        future.add_done_callback(finished)
        return job, events

    async def generate(self, ctx: RequestContext) -> Chunk:
        """Run one generation to the end and answer with the whole response."""
        from opsgate.backends.llama_engine import DoneEvent

        job, events = await self._start(ctx)
        pieces: list[str] = []
        logprobs: list[dict[str, Any]] = []
        try:
            while True:
                event = await events.get()
                if isinstance(event, _Failed):
                    raise event.error
                if isinstance(event, DoneEvent):
                    break
                pieces.append(event.text)
                if event.logprob is not None:
                    logprobs.append(event.logprob)
        finally:
            # Whatever ends the wait early (the client left, a routing deadline, a drain) stops the
            # engine at its next check; otherwise it would hold the model for nobody.
            job.cancelled.set()
        text = "".join(pieces)
        if isinstance(ctx.body, CompletionRequest) and ctx.body.echo:
            text = ctx.body.prompt_text() + text
        assert ctx.body is not None
        return shapes.whole_response(
            ctx.endpoint,
            request_id=ctx.request_id,
            model=ctx.body.model,
            text=text,
            finish_reason=event.finish_reason,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            logprobs=logprobs if job.logprobs else None,  # chat False -> null; completions 0 -> []
        )

    async def open_stream(self, ctx: RequestContext) -> AsyncIterator[Chunk]:
        """Start a generation; errors before the first token (bad prompt, no model) raise here."""
        job, events = await self._start(ctx)
        try:
            first = await events.get()
        except BaseException:
            job.cancelled.set()  # left before the first token (e.g. during a long prompt): stop it too
            raise
        if isinstance(first, _Failed):
            raise first.error
        return self._relay(ctx, job, first, events)

    async def _relay(
        self, ctx: RequestContext, job: Any, first: Any, events: asyncio.Queue[Any]
    ) -> AsyncIterator[Chunk]:
        from opsgate.backends.llama_engine import DoneEvent

        assert ctx.body is not None
        build = shapes.ChunkBuilder(ctx.endpoint, ctx.request_id, ctx.body.model)
        finished = False
        try:
            if ctx.endpoint == "chat":
                yield build.role()
            event = first
            while True:
                if isinstance(event, _Failed):
                    raise event.error
                if isinstance(event, DoneEvent):
                    finished = True
                    yield build.finish(event.finish_reason)
                    yield build.usage(event.prompt_tokens, event.completion_tokens)
                    return
                yield build.content(event.text, event.logprob)
                event = await events.get()
        finally:
            if not finished:
                job.cancelled.set()  # the client left: stop generating at the next token
