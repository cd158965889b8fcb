"""The request path, readable in one place: the ordered stages, built once from config."""

from __future__ import annotations

from opsgate.auth.authenticator import Authenticator
from opsgate.backends.registry import ModelRegistry
from opsgate.domain.config import GatewayConfig
from opsgate.pipeline.record import RecordSink, RecordStage
from opsgate.pipeline.request_id import RequestIdStage
from opsgate.pipeline.stage import Handler, Pipeline, Stage
from opsgate.pipeline.validation import ValidationStage


def build_pipeline(
    config: GatewayConfig,
    terminal: Handler,
    sink: RecordSink,
    registry: ModelRegistry,
    authenticator: Authenticator | None = None,
    release: Stage | None = None,
) -> Pipeline:
    """request id → record → auth → record admission → validation → release → limits (reserve) → guard → cache
    → backend, then out.

    ``after`` hooks run in reverse: cache fill, then settle the limits with the real usage, then the
    record — which sits second so its ``after`` runs last and sees the final response of every
    request, including ones a later stage rejected or answered from cache.
    """
    record = RecordStage(config, sink)
    stages: list[Stage] = [RequestIdStage(), record]
    if authenticator is not None and authenticator.enabled:
        from opsgate.pipeline.auth import AuthStage

        stages.append(AuthStage(authenticator))
    if record.admission is not None:  # the journal's backlog bound: after auth (refusals are attributed)
        stages.append(record.admission)
    stages.append(ValidationStage(config))
    if release is not None:  # releases, arms and prompts (pipeline/release.py), before anything counts tokens
        stages.append(release)
    if config.limits.enabled or config.auth.enabled:  # with auth, keys may carry their own limits
        from opsgate.pipeline.limits import LimitsStage

        stages.append(LimitsStage.from_config(config))
    if config.guard.enabled:
        from opsgate.pipeline.guard import GuardStage

        stages.append(GuardStage.from_config(config))
    if config.cache.enabled:
        from opsgate.pipeline.cache import CacheStage

        stages.append(CacheStage.from_config(config, registry))
    return Pipeline(stages, terminal)
