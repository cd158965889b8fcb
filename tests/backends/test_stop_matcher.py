"""Stop sequences found across token boundaries without releasing any part of them."""

from opsgate.backends.llama_engine import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = ""
    for piece in pieces:
        released, stopped = matcher.feed(piece)
        out += released
        if stopped:
            return out, True
    return out + matcher.flush(), False


def test_stop_split_across_tokens() -> None:
    assert feed_all(StopMatcher(["END"]), ["hello E", "N", "D more"]) == ("hello ", True)


def test_partial_match_is_released_when_it_turns_out_not_to_stop() -> None:
    assert feed_all(StopMatcher(["END"]), ["an E", "NV", "oy"]) == ("an ENVoy", False)


def test_no_stops_streams_immediately() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == ("abc", False)


def test_first_of_several_stops() -> None:
    assert feed_all(StopMatcher(["\n\n", "###"]), ["a", "b#", "##", "c"]) == ("ab", True)
