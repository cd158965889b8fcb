"""The request path, readable in one place: the ordered stages, built once from config."""

from __future__ import annotations

from opsgate.domain.config import GatewayConfig
from opsgate.pipeline.record import RecordSink, RecordStage
from opsgate.pipeline.request_id import RequestIdStage
from opsgate.pipeline.stage import Handler, Pipeline, Stage
from opsgate.pipeline.validation import ValidationStage


def build_pipeline(config: GatewayConfig, terminal: Handler, sink: RecordSink) -> Pipeline:
    """request id → record → validation → backend.

    Record sits second so its ``after`` runs last: it sees the final response of every request,
    including ones a later stage rejected. Later issues insert auth, limits, guards, cache and
    routing between validation and the backend.
    """
    stages: list[Stage] = [RequestIdStage(), RecordStage(config, sink), ValidationStage(config)]
    return Pipeline(stages, terminal)
