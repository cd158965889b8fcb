"""Output cut by ``max_tokens`` on the embedded model never ends in half a character (U+FFFD).

Byte-level BPE splits an emoji or a CJK character over several tokens; a cap that lands between
them must hold the partial bytes back, streaming or not, instead of decoding them as U+FFFD.
"""

from __future__ import annotations

import openai
from openai.types.chat import ChatCompletionMessageParam

from tests.support import Gateway

# SmolLM2 answers this with emoji and kanji, which its vocabulary spells in byte tokens.
ASK = "Reply with only emoji and Japanese: 🎉🍣🐉 寿司 東京 猫"
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": ASK}]
CAPS = range(1, 13)


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def test_truncated_answers_hold_back_partial_characters(embedded: Gateway) -> None:
    answers: dict[int, str] = {}
    for cap in CAPS:
        response = client(embedded).chat.completions.create(
            model="smollm2", messages=PROMPT, max_tokens=cap, temperature=0
        )
        answers[cap] = response.choices[0].message.content or ""
    assert any(not text.isascii() for text in answers.values()), answers  # the prompt elicits non-ASCII
    assert not {cap: text for cap, text in answers.items() if "\ufffd" in text}


def test_truncated_streams_hold_back_partial_characters(embedded: Gateway) -> None:
    answers: dict[int, str] = {}
    for cap in CAPS:
        stream = client(embedded).chat.completions.create(
            model="smollm2", messages=PROMPT, max_tokens=cap, temperature=0, stream=True
        )
        answers[cap] = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert any(not text.isascii() for text in answers.values()), answers
    assert not {cap: text for cap, text in answers.items() if "\ufffd" in text}
