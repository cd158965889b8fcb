"""The SLO engine: status (current value, error budget, burn rates, state), history and time series.

One status call reads each distinct (window, scope) once and shares the sums between objectives,
so 30 days of traffic answer in milliseconds from the rollups.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.domain.slo_config import (
    MEASURED_SLIS,
    AlertsConfig,
    BurnRateRule,
    SloConfig,
    SloDefinition,
    duration_seconds,
)
from opsgate.slo import sli
from opsgate.slo.reader import FINE_KEEP_SECONDS, FINE_MAX_SECONDS, RollupReader, Scope, StoreSource, table_for
from opsgate.store.rollups import FINE_SECONDS, FINE_TABLE, HOUR_SECONDS, HOUR_TABLE, LATENCY_COLUMNS

MAX_POINTS = 2000
# Sums already read during one status call, by (feedback?, scope, window seconds).
_Cache = dict[tuple[Any, ...], dict[str, float]]


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return 1e9 if value > 0 else -1e9
    return round(value, digits)


def visible(definition: SloDefinition, tenant: str | None) -> bool:
    """Whether a caller scoped to ``tenant`` (None: operator) may see this objective."""
    return tenant is None or definition.filter.tenant in (None, tenant)


def scope_of(definition: SloDefinition, tenant: str | None) -> Scope:
    """What an objective reads for a caller: its own filter, narrowed to the caller's tenant."""
    f = definition.filter
    return Scope(tenant=f.tenant if f.tenant is not None else tenant, model=f.model, deployment=f.deployment)


# The furthest back a history reaches: a little over a year of hourly rollups.
MAX_HISTORY_SECONDS = 400 * 86400


class SloEngine:
    """Computes SLO status from the rollups of one store."""

    def __init__(self, store: StoreSource, slo: SloConfig, alerts: AlertsConfig) -> None:
        self.reader = RollupReader(store)
        self.slo = slo
        self.rules: list[BurnRateRule] = list(alerts.rules)
        self.min_events = alerts.min_events
        self._windows = sorted({w for r in self.rules for w in (r.long_window, r.short_window)}, key=duration_seconds)

    def definition(self, name: str, tenant: str | None = None) -> SloDefinition:
        """The objective called ``name`` (404 if unknown or not visible to ``tenant``)."""
        for definition in self.slo.objectives:
            if definition.name == name and visible(definition, tenant):
                return definition
        raise NotFoundError(f"No SLO named '{name}'.", param="name", code="slo_not_found")

    # -- status -------------------------------------------------------------------------------------

    def status(self, tenant: str | None = None, now: float | None = None) -> list[dict[str, Any]]:
        """Every objective visible to ``tenant`` (None: operator) with value, budget, burn rates and state."""
        now = time.time() if now is None else now
        cache: _Cache = {}
        return [self._status_one(d, scope_of(d, tenant), now, cache) for d in self.slo.objectives if visible(d, tenant)]

    def _sums(
        self, definition: SloDefinition, scope: Scope, seconds: float, now: float, cache: _Cache
    ) -> dict[str, float]:
        feedback = definition.sli == "csat"
        key = (feedback, scope, seconds)
        if key not in cache:
            if feedback:
                cache[key] = self.reader.feedback_sums(now - seconds, scope)
            else:
                cache[key] = self.reader.sums(now - seconds, scope, seconds)
        return cache[key]

    def _status_one(self, definition: SloDefinition, scope: Scope, now: float, cache: _Cache) -> dict[str, Any]:
        window = definition.window_seconds
        out: dict[str, Any] = {
            "name": definition.name,
            "description": definition.description,
            "sli": definition.sli,
            "target": definition.target,
            "threshold_ms": definition.threshold_ms,
            "window": definition.window,
            "filter": definition.filter.model_dump(exclude_none=True),
            "current": None,
            "events": None,
            "budget_remaining": None,
            "burn_rates": {w: None for w in self._windows},
            "state": "ok",
            "firing": [],
            "sla": None,
            "kpi": definition.kpi,
        }
        if definition.is_ratio:
            bad, total = sli.bad_and_total(definition, self._sums(definition, scope, window, now, cache))
            out["current"] = _round(sli.ratio_value(definition, bad, total))
            out["events"] = int(total)
            out["budget_remaining"] = _round(sli.budget_remaining(definition, bad, total))
            burns: dict[str, tuple[float, float]] = {}
            for label in self._windows:
                w_bad, w_total = sli.bad_and_total(
                    definition, self._sums(definition, scope, duration_seconds(label), now, cache)
                )
                burns[label] = (sli.burn_rate(definition, w_bad, w_total), w_total)
                out["burn_rates"][label] = _round(burns[label][0], 4)
            firing = [r for r in self.rules if self._fires(r, burns)]
            out["firing"] = [_rule_label(r) for r in firing]
            if any(r.severity == "page" for r in firing):
                out["state"] = "page"
            elif firing:
                out["state"] = "ticket"
        else:
            out["current"] = _round(self._point_value(definition, scope, now, cache))
            if sli.meets(definition, out["current"], definition.target) is False:
                out["state"] = "ticket"  # no budget to burn: a miss is worth a ticket, not a page
                miss = measured_miss_label(definition)
                if miss is not None:
                    # The firing label sends the miss through the alert path (alert rows, webhooks).
                    out["state"] = miss.split(":", 1)[0]
                    out["firing"] = [miss]
        out["meets_target"] = sli.meets(definition, out["current"], definition.target)
        if definition.sla is not None:
            out["sla"] = {"threshold": definition.sla, "met": sli.meets(definition, out["current"], definition.sla)}
        return out

    def _fires(self, rule: BurnRateRule, burns: dict[str, tuple[float, float]]) -> bool:
        long_burn, long_total = burns[rule.long_window]
        short_burn, _ = burns[rule.short_window]
        return long_total >= self.min_events and long_burn > rule.burn_rate and short_burn > rule.burn_rate

    def _point_value(self, definition: SloDefinition, scope: Scope, now: float, cache: _Cache) -> float | None:
        window = definition.window_seconds
        if definition.sli == "throughput":
            return self._sums(definition, scope, window, now, cache)["requests"] / window
        points = self.reader.measurements(definition.name, now - window, scope.tenant)
        if not points:
            return None
        ts, value = points[-1]
        # Freshness is an age: it keeps growing after it was measured.
        return value + (now - ts) if definition.sli == "data_freshness" else value

    # -- history ------------------------------------------------------------------------------------

    def history(
        self, name: str, since: float, tenant: str | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        """The SLI and budget left over the objective's rolling window, at points from ``since`` to now."""
        now = time.time() if now is None else now
        # Bounded: ``since`` is a reader's query parameter. The year 1 asked for 17.6 million buckets
        # (1.3 GB for six readers at once), a time after now for an array of negative size.
        since = min(max(since, now - MAX_HISTORY_SECONDS), now)
        definition = self.definition(name, tenant)
        scope = scope_of(definition, tenant)
        window = definition.window_seconds
        if definition.sli in MEASURED_SLIS:
            return [
                {"ts": ts, "sli": _round(v), "budget_remaining": None}
                for ts, v in self.reader.measurements(definition.name, since, scope.tenant)
            ]
        table, width = table_for(now - since + window)
        first = int((since - window) // width) * width
        count = int((now - first) // width) + 1
        if definition.sli == "csat":
            rows = self.reader.feedback_series(first, width, scope)
        else:
            rows = self.reader.series(first, now, width, scope, table)
        # Per-bucket bad and total, then rolling window sums by prefix differences.
        bad = np.zeros(count + 1)
        total = np.zeros(count + 1)
        for bucket, sums in rows:
            index = (bucket - first) // width + 1
            if 0 < index <= count:
                if definition.sli == "throughput":
                    bad[index], total[index] = 0.0, sums["requests"]
                else:
                    bad[index], total[index] = sli.bad_and_total(definition, sums)
        bad_prefix, total_prefix = np.cumsum(bad), np.cumsum(total)
        span = max(1, int(window // width))
        step = max(1, math.ceil((now - since) / width / 200))
        points = []
        start_index = max(span, int((since - first) // width) + 1)
        for index in range(start_index, count + 1, step):
            lo = max(0, index - span)
            w_bad = float(bad_prefix[index] - bad_prefix[lo])
            w_total = float(total_prefix[index] - total_prefix[lo])
            ts = first + index * width
            if definition.sli == "throughput":
                points.append({"ts": ts, "sli": _round(w_total / window), "budget_remaining": None})
            else:
                points.append(
                    {
                        "ts": ts,
                        "sli": _round(sli.ratio_value(definition, w_bad, w_total)),
                        "budget_remaining": _round(sli.budget_remaining(definition, w_bad, w_total)),
                    }
                )
        return points

    # -- time series for the dashboard --------------------------------------------------------------

    def timeseries(
        self, since: float, step: int, tenant: str | None = None, now: float | None = None
    ) -> list[dict[str, Any]]:
        """Traffic per ``step`` seconds: requests, errors, latency percentiles, cost, tokens."""
        return self.window(since, step, tenant, now)[0]

    def window(
        self, since: float, step: int, tenant: str | None = None, now: float | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """:meth:`timeseries` and the whole window's summary (see :func:`window_summary`)."""
        now = time.time() if now is None else now
        span = now - since
        if step % HOUR_SECONDS == 0 and span > FINE_MAX_SECONDS:
            table = HOUR_TABLE
        elif span <= FINE_KEEP_SECONDS - 86400 and step % FINE_SECONDS == 0:
            table = FINE_TABLE
        else:
            raise InvalidRequestError(
                "step must be a multiple of 10s (ranges up to 7 days) or of 1h (any range).", param="step"
            )
        if span / step > MAX_POINTS:
            raise InvalidRequestError(
                f"since/step gives more than {MAX_POINTS} points; use a larger step.", param="step"
            )
        rows = dict(self.reader.series(since, now, step, Scope(tenant=tenant), table))
        totals: dict[str, float] = {}
        out = []
        start = int(since // step) * step
        for ts in range(start, int(now) + 1, step):
            sums = rows.get(ts, {})
            for name, value in sums.items():
                totals[name] = totals.get(name, 0.0) + value
            ok = sli.ok_requests(sums)
            cumulative = [sums.get(c, 0.0) for c in LATENCY_COLUMNS]
            out.append(
                {
                    "ts": ts,
                    "requests": int(sums.get("requests", 0)),
                    "errors": int(sums.get("errors", 0)),
                    "client_errors": int(sums.get("client_errors", 0)),
                    "p50_ms": _round(sli.percentile(0.5, cumulative, ok), 1),
                    "p95_ms": _round(sli.percentile(0.95, cumulative, ok), 1),
                    "p99_ms": _round(sli.percentile(0.99, cumulative, ok), 1),
                    "cost": _round(sums.get("cost", 0.0)),
                    "prompt_tokens": int(sums.get("prompt_tokens", 0)),
                    "completion_tokens": int(sums.get("completion_tokens", 0)),
                }
            )
        return out, window_summary(totals, span)


def window_summary(totals: dict[str, float], seconds: float) -> dict[str, Any]:
    """One window's numbers (``seconds`` long), defined once on the server so every window and every
    client agree; the dashboard shows these and computes none of its own.

    An error is a server failure (5xx) among the requests that were not the client's mistake (4xx),
    as the availability and error-rate SLIs count it; percentiles come from the window's summed
    latency histogram (a real p95 of the window, not an average of per-bucket p95s).
    """
    requests = int(totals.get("requests", 0))
    errors = int(totals.get("errors", 0))
    client_errors = int(totals.get("client_errors", 0))
    eligible = requests - client_errors
    ok = sli.ok_requests(totals)
    cumulative = [totals.get(c, 0.0) for c in LATENCY_COLUMNS]
    return {
        "requests": requests,
        "errors": errors,
        "client_errors": client_errors,
        "error_rate": _round(errors / eligible) if eligible > 0 else None,
        "p50_ms": _round(sli.percentile(0.5, cumulative, ok), 1),
        "p95_ms": _round(sli.percentile(0.95, cumulative, ok), 1),
        "p99_ms": _round(sli.percentile(0.99, cumulative, ok), 1),
        "cost": _round(totals.get("cost", 0.0)),
        "prompt_tokens": int(totals.get("prompt_tokens", 0)),
        "completion_tokens": int(totals.get("completion_tokens", 0)),
        "tokens": int(totals.get("prompt_tokens", 0)) + int(totals.get("completion_tokens", 0)),
        "requests_per_minute": _round(requests / (seconds / 60), 4) if seconds > 0 else None,
        "cost_per_request": _round(totals.get("cost", 0.0) / requests) if requests else None,
    }


def scope_label(definition: SloDefinition) -> str:
    """What an objective watches, in words: ``model=chat, tenant=acme`` or ``all traffic``."""
    f = definition.filter
    parts = [f"{k}={v}" for k, v in (("model", f.model), ("deployment", f.deployment), ("tenant", f.tenant)) if v]
    return ", ".join(parts) or "all traffic"


def measured_miss_label(definition: SloDefinition) -> str | None:
    """The firing label of a measured SLI that alerts on a miss (None: a plain ticket-state miss).

    Answer quality below its own baseline (evals/online.py) and a deployment whose answers changed
    (the sentinel) page; drift (the drift monitor) is a ticket: inputs moving is worth a look, not a wake-up.
    """
    if definition.sli == "eval_degradation":
        return "page: quality below its baseline by more than the target"
    if definition.sli == "drift":
        return f"ticket: drift detected ({scope_label(definition)})"
    if definition.sli == "behaviour_change":
        f = definition.filter
        label = f.deployment or (f"of {f.model}" if f.model else "(any)")
        return f"page: deployment {label} changed behaviour"
    return None


def _rule_label(rule: BurnRateRule) -> str:
    return f"{rule.severity}: {rule.long_window}/{rule.short_window} > {rule.burn_rate:g}x"
