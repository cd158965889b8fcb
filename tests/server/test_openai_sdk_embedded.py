"""The official openai SDK against the embedded model, over real HTTP: sync, async, streaming."""

from __future__ import annotations

import math

import openai
import pytest

from tests.support import Gateway

PROMPT = [{"role": "user", "content": "Name three colors."}]


def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def test_chat_completion(embedded: Gateway) -> None:
    response = client(embedded).chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=12)
    choice = response.choices[0]
    assert response.object == "chat.completion"
    assert response.model == "smollm2"
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert 0 < response.usage.completion_tokens <= 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    records = embedded.records_for(response.id.removeprefix("chatcmpl-"))
    assert records and records[0]["status"] == 200
    assert records[0]["prompt_tokens"] == response.usage.prompt_tokens
    assert records[0]["completion_tokens"] == response.usage.completion_tokens
    assert records[0]["output_text"] == choice.message.content


def test_max_tokens_is_a_hard_limit_and_reports_length(embedded: Gateway) -> None:
    response = client(embedded).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=3,
        temperature=0,
    )
    assert response.usage is not None and response.usage.completion_tokens == 3
    assert response.choices[0].finish_reason == "length"


def test_streaming_with_usage_matches_content(embedded: Gateway) -> None:
    stream = client(embedded).chat.completions.create(
        model="smollm2",
        messages=PROMPT,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish = None
    usage = None
    content_chunks = 0
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            pieces.append(delta.content)
            content_chunks += 1
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces).strip()
    assert finish in ("stop", "length")
    assert usage is not None
    assert 0 < usage.completion_tokens <= 16
    # Each generated token is one chunk unless it is an incomplete UTF-8 sequence.
    assert content_chunks <= usage.completion_tokens


def test_streaming_without_include_usage_sends_no_usage(embedded: Gateway) -> None:
    stream = client(embedded).chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=5, stream=True)
    chunks = list(stream)
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_seeded_greedy_output_is_repeatable(embedded: Gateway) -> None:
    def ask() -> str | None:
        return (
            client(embedded)
            .chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=10, temperature=0, seed=7)
            .choices[0]
            .message.content
        )

    assert ask() == ask()


def test_logprobs(embedded: Gateway) -> None:
    response = client(embedded).chat.completions.create(
        model="smollm2",
        messages=PROMPT,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
    )
    choice = response.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert len(choice.logprobs.content) == response.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    for token in choice.logprobs.content:
        assert token.logprob <= 0
        assert len(token.top_logprobs) == 3
        # Greedy decoding picks the most likely token, so it heads its own top list.
        assert math.isclose(token.top_logprobs[0].logprob, token.logprob, abs_tol=1e-5)
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)


def test_stop_sequence_is_not_in_output(embedded: Gateway) -> None:
    base = (
        client(embedded)
        .chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=20, temperature=0)
        .choices[0]
        .message.content
    )
    assert base and len(base) > 4
    stop = base[3:5]
    stopped = (
        client(embedded)
        .chat.completions.create(model="smollm2", messages=PROMPT, max_tokens=20, temperature=0, stop=[stop])
        .choices[0]
    )
    assert stopped.finish_reason == "stop"
    assert stop not in (stopped.message.content or "")
    assert base.startswith(stopped.message.content or "")


def test_json_object_response_format(embedded: Gateway) -> None:
    import json

    response = client(embedded).chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Reply with a JSON object with a key 'a'."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )
    content = response.choices[0].message.content or ""
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still must be the start of a JSON object
        assert content.lstrip().startswith("{")


def test_text_completion_with_logprobs(embedded: Gateway) -> None:
    response = client(embedded).completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=2
    )
    choice = response.choices[0]
    assert choice.text
    assert response.usage is not None and response.usage.completion_tokens == 5
    assert choice.logprobs is not None
    assert len(choice.logprobs.tokens or []) == 5
    assert "".join(choice.logprobs.tokens or []) == choice.text


def test_text_completion_stream(embedded: Gateway) -> None:
    stream = client(embedded).completions.create(
        model="smollm2",
        prompt="Once upon a time",
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.text
    assert text and usage is not None and usage.completion_tokens == 8


@pytest.mark.asyncio
async def test_async_client_streams(embedded: Gateway) -> None:
    aclient = openai.AsyncOpenAI(base_url=embedded.base_url, api_key="unused", max_retries=0)
    stream = await aclient.chat.completions.create(
        model="smollm2", messages=PROMPT, max_tokens=8, stream=True, stream_options={"include_usage": True}
    )
    text = ""
    usage = None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
    await aclient.close()
    assert text and usage is not None and usage.completion_tokens > 0


def test_embeddings(embedded: Gateway) -> None:
    import numpy as np

    response = client(embedded).embeddings.create(
        model="all-minilm-l6-v2",
        input=["The cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew 5%."],
    )
    vectors = np.array([d.embedding for d in response.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3
    assert response.usage.prompt_tokens > 0


def test_embeddings_base64_matches_float(embedded: Gateway) -> None:
    import base64

    import numpy as np

    raw = client(embedded).embeddings.with_raw_response.create(
        model="all-minilm-l6-v2", input="hello", encoding_format="base64"
    )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    plain = client(embedded).embeddings.create(model="all-minilm-l6-v2", input="hello").data[0].embedding
    assert np.allclose(decoded, plain, atol=1e-6)


def test_models_list(embedded: Gateway) -> None:
    ids = [m.id for m in client(embedded).models.list()]
    assert ids == ["smollm2", "all-minilm-l6-v2"]
    assert client(embedded).models.retrieve("smollm2").id == "smollm2"
