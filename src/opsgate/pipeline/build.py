"""The request path, readable in one place: the ordered stages, built once from config."""

from __future__ import annotations

from opsgate.backends.registry import ModelRegistry
from opsgate.domain.config import GatewayConfig
from opsgate.pipeline.record import RecordSink, RecordStage
from opsgate.pipeline.request_id import RequestIdStage
from opsgate.pipeline.stage import Handler, Pipeline, Stage
from opsgate.pipeline.validation import ValidationStage


def build_pipeline(config: GatewayConfig, terminal: Handler, sink: RecordSink, registry: ModelRegistry) -> Pipeline:
    """request id → record → validation → limits (reserve) → cache → backend (routing), then back out.

    ``after`` hooks run in reverse: cache fill, then settle the limits with the real usage, then the
    record — which sits second so its ``after`` runs last and sees the final response of every
    request, including ones a later stage rejected or answered from cache.
    """
    stages: list[Stage] = [RequestIdStage(), RecordStage(config, sink), ValidationStage(config)]
    if config.limits.enabled:
        from opsgate.pipeline.limits import LimitsStage

        stages.append(LimitsStage.from_config(config))
    if config.cache.enabled:
        from opsgate.pipeline.cache import CacheStage

        stages.append(CacheStage.from_config(config, registry))
    return Pipeline(stages, terminal)
