"""A stream's window cuts never split an identifier made of digits and separators (probe-guard finding 6).

The stage on its own, the probe's case: 600-659 characters of words with no sentence end, then a card
number written with spaces, in 7-character pieces. The old cut (the last space once 4 windows were
held) fell inside the card at 15 of these 60 offsets, and neither half was a card to the PII scanner.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from opsgate.domain.config import parse_config
from opsgate.domain.context import Chunk, RequestContext, StreamResult
from opsgate.pipeline.guard import GuardStage
from opsgate.pipeline.guard_windows import cut, may_cut_now
from opsgate.pipeline.validation import ValidationStage

CONFIG = parse_config(
    {
        "models": [
            {"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}
        ],
        "guard": {
            "enabled": True,
            "stream_window_chars": 160,
            "policies": [{"name": "p", "input": [], "output": [{"scanner": "pii", "action": "redact"}]}],
        },
    }
)
CARD = "4111 1111 1111 1111"


def _chunk(content: str) -> Chunk:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "x",
        "choices": [{"index": 0, "delta": {"content": content}}],
    }


async def _stream(text: str) -> list[str]:
    stage = GuardStage.from_config(CONFIG)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    ctx = RequestContext(endpoint="chat", raw_body=json.dumps(body).encode(), headers={})
    await ValidationStage(CONFIG).before(ctx)
    await stage.before(ctx)

    async def source() -> AsyncIterator[Chunk]:
        for start in range(0, len(text), 7):
            yield _chunk(text[start : start + 7])

    response = await stage.after(ctx, StreamResult(source=source()))
    assert isinstance(response, StreamResult)
    return [
        (item["choices"][0].get("delta") or {}).get("content") or ""
        async for item in response.chunks()
        if item.get("choices")
    ]


@pytest.mark.parametrize("pad", range(600, 660))
async def test_a_card_after_a_long_sentence_never_reaches_the_client_raw(pad: int) -> None:
    text = ("word " * 200)[:pad] + f"card {CARD} and more words after it"
    pieces = await _stream(text)
    released = "".join(pieces)
    assert CARD not in released
    assert "<CREDIT_CARD>" in released
    assert len(pieces) >= 2  # still released in windows, not held to the end


async def test_a_long_run_of_digits_is_still_released_in_bounded_windows() -> None:
    pieces = await _stream("12 34 " * 600)
    assert len([p for p in pieces if p]) >= 2
    assert max(len(p) for p in pieces) <= 16 * 160 + 7


def test_cuts_fall_at_sentence_ends_or_spaces_outside_digit_runs() -> None:
    assert cut("One. Two 4111 1111. three", 5) == len("One. Two 4111 1111.")  # the run ended at the stop
    assert cut("Pay 4111 1111. 1111 1111 now", 5) == len("Pay 4111 1111. 1111 1111 ")  # not at the inner stop
    held = "word " * 130 + "call +1 415 555 01"  # the number may go on in the next chunk
    assert cut(held, 160) == len("word " * 130 + "call ")
    assert cut("word " * 130 + "4111 1111 ", 160) == len("word " * 130)


PAD = "The weather was fine that day and we walked along the river. "
ADDRESS = "Ship it to 221B Baker Street\nLondon NW1 6XE\nUnited Kingdom"


@pytest.mark.parametrize("pad", range(0, 200, 3))
async def test_an_address_on_two_lines_is_never_cut_between_them(pad: int) -> None:
    # A cut at the street line's end left "London NW1 6XE" alone in the next window, no address to the
    # scanner, and it reached the client raw (10 of these 67 offsets, 18 with truncated sentences).
    text = (PAD * 5)[: 100 + pad] + " " + ADDRESS + ". " + PAD * 3
    released = "".join(await _stream(text))
    assert "Baker Street" not in released and "NW1 6XE" not in released
    assert "<STREET_ADDRESS>" in released


async def test_code_with_digits_is_still_cut_at_its_lines() -> None:
    code = "".join(f"    total = total + values[{i}] * {i}\n" for i in range(60))
    pieces = [p for p in await _stream(code) if p]
    assert len(pieces) >= 8 and max(len(p) for p in pieces) <= 2 * 160


def test_a_line_an_address_may_go_on_from_is_no_cut() -> None:
    assert cut("Deliver to 12 Oak Rd,\nLeeds LS1 4AP and s" + "x" * 150, 160) == 0  # wait for a better place
    before = "A sentence ends here. " * 8 + "\n"
    assert cut(before + "Send it to 742 Evergreen Terrace\nSpringf" + "x" * 140, 160) == len(before)


@pytest.mark.parametrize(
    "lines",
    [
        [f"2026-12-07 03:{i % 60:02d}:11 worker {i} took {i % 97} ms" for i in range(400)],  # logs
        [f"row{i},{i * 7},{i * 13}" for i in range(400)],  # CSV: digits, no spaces
        [f"Step {i}: open the valve {i % 5} turns" for i in range(400)],
    ],
    ids=["logs", "csv", "steps"],
)
async def test_lines_with_digits_are_released_in_windows_of_about_the_usual_size(lines: list[str]) -> None:
    # Every line looks like an address's (a digit, no code): only the last few may hold a cut back. Before
    # that bound, CSV was held for 16 windows (2,559 characters) and logs for 4.
    text = "\n".join(lines) + "\n"
    pieces = [p for p in await _stream(text) if p]
    assert "".join(pieces) == text
    assert max(len(p) for p in pieces) <= 2 * 160
    assert len(pieces) >= len(text) // (2 * 160)


def _windows(pieces: list[str], gated: bool) -> list[str]:
    held, out = "", []
    for piece in pieces:
        held += piece
        if len(held) >= 160 and (not gated or may_cut_now(held, len(piece), 160)):
            at = cut(held, 160)
            if at:
                out.append(held[:at])
                held = held[at:]
    return [*out, held]


@pytest.mark.parametrize(
    "text", [PAD * 40, "Item 3. Next step here and more words follow. " * 40, CARD + " and. " * 60], ids=str.__len__
)
def test_the_cut_gate_releases_what_trying_every_chunk_would(text: str) -> None:
    # Trying a cut only when a chunk could have made one possible must not hold text longer: a window
    # filled by a chunk with no boundary in it is cut at the sentence end already held (review of 5319939:
    # prose windows had grown from 116 to 206 characters on average, the first text a sentence later).
    pieces = [text[i : i + 5] for i in range(0, len(text), 5)]
    assert _windows(pieces, gated=True) == _windows(pieces, gated=False)
