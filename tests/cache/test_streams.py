"""Stored answers are whole; streams are assembled into them and replayed from them."""

from __future__ import annotations

import copy
from typing import Any

from opsgate.cache.streams import StreamAssembler, replay_chunks

HEAD = {"id": "c-1", "created": 1, "model": "m"}


def chat_stream() -> list[dict[str, Any]]:
    head = {**HEAD, "object": "chat.completion.chunk"}
    return [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "Hel"}, "logprobs": {"content": [{"t": 1}]}}]},
        {**head, "choices": [{"index": 0, "delta": {"content": "lo"}, "logprobs": {"content": [{"t": 2}]}}]},
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "get", "arguments": '{"a'}}]
                    },
                }
            ],
        },
        {
            **head,
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '": 1}'}}]}}],
        },
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**head, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}},
    ]


def assemble(endpoint: str, chunks: list[dict[str, Any]]) -> dict[str, Any]:
    assembler = StreamAssembler(endpoint)
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.body()


def test_a_chat_stream_assembles_into_a_chat_completion() -> None:
    body = assemble("chat", chat_stream())
    assert body == {
        **HEAD,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
                    ],
                },
                "logprobs": {"content": [{"t": 1}, {"t": 2}]},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def test_replay_and_assemble_round_trip() -> None:
    body = assemble("chat", chat_stream())
    replayed = replay_chunks(copy.deepcopy(body), "chat")
    assert replayed[0]["object"] == "chat.completion.chunk"
    assert replayed[-1]["choices"] == [] and replayed[-1]["usage"] == body["usage"]
    assert assemble("chat", replayed) == body


def test_text_completion_round_trip() -> None:
    body = {
        **HEAD,
        "object": "text_completion",
        "choices": [{"index": 0, "text": "Hi there", "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    chunks = replay_chunks(body, "completion")
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["Hi there", ""]
    assert assemble("completion", chunks) == body


def test_no_usage_no_usage_chunk() -> None:
    body = {
        **HEAD,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
    }
    assert all(chunk["choices"] for chunk in replay_chunks(body, "chat"))
