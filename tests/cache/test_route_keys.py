"""Cache keys and releases: the route a release picked is part of the key, exactly and semantically."""

from __future__ import annotations

from opsgate.cache.keys import SemanticRules, request_keys, route_identity
from opsgate.domain.requests import ChatCompletionRequest

RULES = SemanticRules("embedder", max_messages=3)
BODY = ChatCompletionRequest.model_validate(
    {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
)


def _keys(route: dict[str, float] | None) -> tuple[str, str | None]:
    keys = request_keys("chat", BODY, "t", "scope", RULES, route)
    return keys.exact, keys.bucket


def test_requests_routed_to_other_deployments_never_share_a_key_or_bucket() -> None:
    base, old, new, split = _keys(None), _keys({"m#0": 1}), _keys({"m#1": 1}), _keys({"m#0": 1, "m#1": 1})
    for exact, bucket in (old, new, split):
        assert exact != base[0] and bucket != base[1]
    assert len({old, new, split}) == 3
    assert len({k for pair in (base, old, new, split) for k in pair}) == 8  # exact keys and buckets all differ
    assert _keys({"m#0": 1, "m#1": 0}) != old  # a backup at weight 0 may still answer


def test_requests_routed_alike_share_one_key() -> None:
    assert _keys({"m#0": 1}) == _keys({"m#0": 7.5})
    assert _keys({"m#0": 1, "m#1": 3}) == _keys({"m#1": 30, "m#0": 10})
    assert _keys(None) == _keys({})  # no weights: the alias's own routing
    assert route_identity({"a": 1, "b": 3}) == {"a": 0.25, "b": 0.75}
