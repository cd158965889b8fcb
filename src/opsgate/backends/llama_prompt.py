"""Chat prompts as tokens: the template's own control tokens are special, message text never is.

Tokenizing the whole rendered template with ``special=True`` turns ``<|im_start|>`` typed by a user
into the real control token, so a user could close their turn and forge a system or assistant turn.
Here the template is rendered with a placeholder in place of each message's content; control tokens
are looked for in that rendering only, and each content is tokenized as plain text in its place.
For contents without control text the tokens are exactly those of the old whole-prompt tokenization
(llama.cpp also splits at control tokens and tokenizes the text between them on its own).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence

from llama_cpp import Llama
from llama_cpp import llama_cpp as lib

from opsgate.domain.errors import InvalidRequestError

Render = Callable[[list[dict[str, str]]], str]

# The token kinds llama.cpp matches only when asked to parse special tokens.
_SPECIAL_ATTRS = lib.LLAMA_TOKEN_ATTR_CONTROL | lib.LLAMA_TOKEN_ATTR_UNKNOWN


def control_tokens(llama: Llama) -> dict[str, int]:
    """Text -> id of every control token in the vocabulary (a one-off scan at load)."""
    vocab = llama._model.vocab
    found: dict[str, int] = {}
    for token in range(lib.llama_vocab_n_tokens(vocab)):
        if lib.llama_vocab_get_attr(vocab, token) & _SPECIAL_ATTRS:
            text = llama._model.token_get_text(token)
            if text:
                found.setdefault(text, token)
    return found


class ChatTokenizer:
    """Tokenizes rendered chat prompts, keeping client text out of the control tokens."""

    def __init__(self, llama: Llama, render: Render) -> None:
        self.llama = llama
        self.render = render
        self.control = control_tokens(llama)
        longest_first = sorted(self.control, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if longest_first else None

    def tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The prompt's tokens: template markers as control tokens, contents as text."""
        nonce = secrets.token_hex(8)  # unguessable, so no content can fake a placeholder
        masked = [{**m, "content": f"\ue000{nonce}:{i}\ue001"} for i, m in enumerate(messages)]
        parts = re.split(f"\ue000{nonce}:(\\d+)\ue001", self.render(masked))
        if [int(i) for i in parts[1::2]] != list(range(len(messages))):
            return self._rewritten(messages)
        out: list[int] = []
        text: list[str] = []
        for at, part in enumerate(parts):
            if at % 2:
                text.append(messages[int(part)]["content"])
                continue
            start = 0
            for match in self._pattern.finditer(part) if self._pattern else ():
                text.append(part[start : match.start()])
                self._plain(text, out)
                out.append(self.control[match.group()])
                start = match.end()
            text.append(part[start:])
        self._plain(text, out)
        return out

    def _plain(self, text: list[str], out: list[int]) -> None:
        joined = "".join(text)
        text.clear()
        if joined:
            out.extend(self.llama.tokenize(joined.encode("utf-8"), add_bos=False, special=False))

    def _rewritten(self, messages: Sequence[dict[str, str]]) -> list[int]:
        # The template does not copy contents verbatim (it trims or splits them), so their places
        # are unknown: safe only when no content holds control text.
        if self._pattern is not None and any(self._pattern.search(m["content"]) for m in messages):
            raise InvalidRequestError(
                "A message contains this model's control tokens (such as <|im_start|>), which its "
                "chat template cannot keep apart from its own.",
                param="messages",
                code="invalid_prompt",
            )
        prompt = self.render(list(messages))
        return list(self.llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
