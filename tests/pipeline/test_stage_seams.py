"""The stage lifecycle on the stage base, and the typed request context stages hand each other.

Stages no longer talk through ``ctx.tags`` for the caller (tenant, key) or a cache hit: the record
must still store them exactly as before (columns, and ``cache_hit`` in the tags before ``saved_cost``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import httpx

import opsgate.pipeline
from opsgate.domain.config import GatewayConfig
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext
from opsgate.domain.errors import AuthenticationError
from opsgate.domain.principal import Principal
from opsgate.pipeline.limits import identify
from opsgate.pipeline.record import MemorySink, RecordStage, record_tags
from opsgate.pipeline.stage import PassStage, Pipeline, Stage
from tests.conftest import upstream_config
from tests.fake_upstream import FakeUpstream
from tests.support import start_gateway

TENANT_KEY = Principal(key_id="key-a1", tenant="acme", role="developer")
ANSWER = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 2}}


def stage_classes() -> list[type]:
    """Every class in ``opsgate.pipeline`` that has a ``before`` hook (a stage), the protocol aside."""
    found: list[type] = []
    for info in pkgutil.iter_modules(opsgate.pipeline.__path__):
        module = importlib.import_module(f"opsgate.pipeline.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hasattr(cls, "before") and cls is not Stage:
                found.append(cls)
    return found


def test_every_stage_inherits_the_lifecycle() -> None:
    classes = stage_classes()
    names = {cls.__name__ for cls in classes}
    assert {"AuthStage", "CacheStage", "GuardStage", "LimitsStage", "RecordStage", "ReleaseStage"} <= names
    assert all(issubclass(cls, PassStage) for cls in classes), [c for c in classes if not issubclass(c, PassStage)]


async def test_the_base_lifecycle_does_nothing() -> None:
    stage = PassStage()
    assert await stage.start() is None
    assert await stage.close() is None
    assert stage.status() is None


def test_readyz_lists_only_stages_with_a_status(upstream: FakeUpstream) -> None:
    config = upstream_config(upstream.base_url)
    config["cache"] = {"enabled": True}
    config["limits"] = {"enabled": True}
    gateway = start_gateway(config)
    try:
        body = httpx.get(gateway.url + "/readyz", timeout=30).json()
        pipeline = gateway.app.state.gateway.pipeline
    finally:
        gateway.server.stop()
    assert {"cache", "limits"} <= set(body) and "entries" in str(body["cache"])
    silent = {stage.name for stage in pipeline.stages if stage.status() is None}
    assert {"request_id", "record", "validation"} <= silent
    # Not listed: a stage with nothing to show ("record" is the request log's own entry, not the stage's).
    assert not (silent - {"record"}) & set(body)
    assert body["record"]["store"] == "sqlite"  # the request log's status, untouched by the record stage


def test_tenant_and_key_come_from_the_principal() -> None:
    ctx = RequestContext(endpoint="chat", raw_body=b"", headers={})
    assert (ctx.tenant, ctx.api_key_id, ctx.cache_hit) == (None, None, False)
    ctx.principal = TENANT_KEY
    assert (ctx.tenant, ctx.api_key_id) == ("acme", "key-a1")
    assert ctx.tags == {}  # nothing duplicated into the record's free-form tags


def test_limits_identify_by_the_typed_key() -> None:
    from opsgate.domain.config import ModelAlias

    ctx = RequestContext(endpoint="chat", raw_body=b"", headers={"authorization": "Bearer sk-x"})
    ctx.alias = ModelAlias.model_validate(
        {"name": "m", "deployments": [{"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}]}
    )
    hashed = identify(ctx).key
    ctx.principal = TENANT_KEY
    assert identify(ctx).key == "key-a1" != hashed


class Caller(PassStage):
    """Stands in for auth: a known key, or a refusal after the principal was never set."""

    name = "caller"

    def __init__(self, principal: Principal | None) -> None:
        self.principal = principal

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        if self.principal is None:
            raise AuthenticationError("no key")
        ctx.principal = self.principal
        ctx.tags["guard"] = {"policy": "p"}
        return None


class CacheHit(PassStage):
    """Answers as the cache stage does on a hit."""

    name = "cache"

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        ctx.tags["cache_similarity"] = 0.97
        ctx.cache_hit = True
        ctx.tags["saved_cost"] = 0.25
        return JsonResult(dict(ANSWER))


async def recorded(*stages: PassStage) -> dict[str, Any]:
    sink = MemorySink()

    async def backend(_: RequestContext) -> GatewayResponse:
        return JsonResult(dict(ANSWER))

    pipeline = Pipeline([RecordStage(GatewayConfig(), sink), *stages], backend)
    await pipeline.handle(RequestContext(endpoint="chat", raw_body=b"{}", headers={}, request_id="r"))
    [record] = sink.records
    return record


async def test_a_cache_hit_is_recorded_as_before() -> None:
    record = await recorded(Caller(TENANT_KEY), CacheHit())
    assert (record["tenant"], record["api_key_id"], record["cached"], record["cost"]) == ("acme", "key-a1", True, 0.0)
    assert list(record["tags"].items()) == [
        ("guard", {"policy": "p"}),
        ("cache_similarity", 0.97),
        ("cache_hit", True),
        ("saved_cost", 0.25),
    ]


async def test_a_miss_and_a_refusal_are_recorded_as_before() -> None:
    served = await recorded(Caller(TENANT_KEY))
    assert (served["tenant"], served["api_key_id"], served["cached"]) == ("acme", "key-a1", False)
    assert served["tags"] == {"guard": {"policy": "p"}}
    refused = await recorded(Caller(None))
    assert (refused["status"], refused["tenant"], refused["api_key_id"], refused["tags"]) == (401, None, None, None)


def test_record_tags_keep_cache_hit_without_a_saved_cost() -> None:
    ctx = RequestContext(endpoint="chat", raw_body=b"", headers={})
    assert record_tags(ctx) is None
    ctx.cache_hit = True
    assert record_tags(ctx) == {"cache_hit": True}
    ctx.tags["trace_id"] = "t"
    assert list(record_tags(ctx) or {}) == ["trace_id", "cache_hit"]
    assert "cache_hit" not in ctx.tags  # the context's own tags are not changed by recording
