"""Turning pydantic locations into OpenAI ``param`` paths."""

from opsgate.pipeline.validation import param_path


def test_param_paths() -> None:
    assert param_path(("messages", 0, "role")) == "messages[0].role"
    assert param_path(("stop", "list[str]", 4)) == "stop[4]"
    assert param_path(("response_format", "type")) == "response_format.type"
    assert param_path(()) is None
