"""Service level objectives: SLIs from rollups, error budgets, burn-rate alerts, feedback and reports."""

from opsgate.slo.alerts import AlertEvaluator, AlertStore
from opsgate.slo.engine import SloEngine
from opsgate.slo.service import SloService

__all__ = ["AlertEvaluator", "AlertStore", "SloEngine", "SloService"]
