"""Per-arm metrics of an experiment, read from the request log and the evaluation items — never from
counters of our own — and the comparisons of every arm against the first (the control).

The records of an experiment are the alias's rows since it started whose ``experiment`` column (written
by the release stage, migration 0009, indexed with ``ts``) carries its id; ``arm`` says which arm. Feedback
joins by request id, one rating per request: the latest one posted for it (``/v1/feedback`` keeps each
user's latest rating of a request, so a client repeating a verdict adds nothing; the SLO readers count
ratings the same way, ``slo.reader.LATEST_FEEDBACK``). Online-evaluation scores (issue 13's
``eval_items``/``eval_scores``) join by the request id their items carry, when there are any.

Each arm also keeps the rates the rollback watcher tests per tenant (``TenantRates``), so it can ask
whether a difference, or an error budget burning, still holds without any one tenant's requests
(``rollback``).

An error is a server-side failure (status >= 500) the client did not cause. An answer past the
deployment's size bounds (``backends.base.AnswerTooLarge``, flagged in the record's tags as
``answer_too_large``) is a 502 the client may have asked for (a long answer): the router spares the
breaker for it, and the error budget here spares it too — it counts with the client's 4xx, outside the
error rate's denominator (``ArmData.judged``). A cache hit counts as a request of its arm but not in its
latency, time to first token or tokens: it measures the cache, and hits would pull an arm's latency
toward zero by however often its users repeat themselves.

Feedback is aggregated in SQL (one row per arm and tenant), so the read stays bounded however many
ratings a request has (a client can post one per ``user`` value).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from opsgate.releases import stats
from opsgate.slo.reader import LATEST_FEEDBACK
from opsgate.store.sql import SqlRecordStore

MAX_ROWS = 200_000

# The latest rating of each request of the experiment (by time, then id: ``slo.reader.LATEST_FEEDBACK``,
# which probes the feedback_request index, at most MAX_RATERS_PER_REQUEST rows a request), summed per
# (arm, tenant) of the experiment's records.
_FEEDBACK_BY_ARM = (
    "SELECT r.arm, r.tenant, COUNT(*), SUM(feedback.positive) FROM requests r "
    "JOIN feedback ON feedback.request_id = r.id "
    "WHERE r.experiment = ? AND r.ts >= ? AND r.ts <= ? AND r.model = ? AND feedback.model = ? AND feedback.ts >= ? "
    f"AND {LATEST_FEEDBACK} GROUP BY r.arm, r.tenant"
)


@dataclass
class TenantRates:
    """One tenant's share of an arm's rates: (count, of n) for guard flags, positive feedback, score passes."""

    requests: int = 0
    client_errors: int = 0
    cache_hits: int = 0
    errors: int = 0
    flagged: int = 0
    rated: int = 0
    positive: int = 0
    passed: dict[str, list[int]] = field(default_factory=dict)  # scorer -> [scores >= 0.5, scores]

    @property
    def judged(self) -> int:
        """This tenant's requests in the arm's error-rate denominator (``ArmData.judged``'s rule)."""
        return self.requests - self.client_errors - self.cache_hits


@dataclass
class ArmData:
    """The raw per-request values of one arm."""

    requests: int = 0
    client_errors: int = 0
    errors: int = 0
    flagged: int = 0
    cache_hits: int = 0  # served from the response cache: in requests, not in latency or tokens
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    cost: float = 0.0
    positive: int = 0
    rated: int = 0
    scores: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ids: set[str] = field(default_factory=set)
    tenants: dict[str | None, TenantRates] = field(default_factory=dict)  # None: the operator (or auth off)

    @property
    def judged(self) -> int:
        """Requests that count for the error rate: not the client's mistake, nor served by the cache (a hit
        cannot fail as the model would, so counting it would dilute the arm's error rate)."""
        return self.requests - self.client_errors - self.cache_hits

    def summary(self) -> dict[str, Any]:
        """The arm's metrics."""
        latency = np.asarray(self.latency) if self.latency else None
        ttft = np.asarray(self.ttft) if self.ttft else None
        return {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "error_rate": self.errors / self.judged if self.judged else None,
            "latency_ms": _percentiles(latency),
            "ttft_ms": _percentiles(ttft),
            "tokens_mean": float(np.mean(self.tokens)) if self.tokens else None,
            "cost": round(self.cost, 6),
            "feedback": {"rated": self.rated, "positive_rate": self.positive / self.rated if self.rated else None},
            "guard_flag_rate": self.flagged / self.requests if self.requests else None,
            "scores": {name: {"n": len(v), "mean": float(np.mean(v))} for name, v in self.scores.items() if v},
        }


def _percentiles(values: Any) -> dict[str, float | None]:
    if values is None or len(values) == 0:
        return {"p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def client_caused(tags: Any) -> bool:
    """Whether a 5xx record is an answer the breaker spares as possibly the client's doing: one past the
    deployment's size bounds (the record's ``answer_too_large`` tag, set with ``AnswerTooLarge``)."""
    return isinstance(tags, dict) and bool(tags.get("answer_too_large"))


def _flagged(tags: dict[str, Any]) -> bool:
    guard = tags.get("guard")
    if not isinstance(guard, dict):
        return False
    for side in ("input", "output"):
        for entry in guard.get(side) or []:
            if isinstance(entry, dict) and entry.get("verdict") == "fail":
                return True
    return False


def collect(
    store: SqlRecordStore,
    alias: str,
    experiment: str,
    since: float,
    until: float | None = None,
    arm_names: list[str] | None = None,
) -> dict[str, ArmData]:
    """Every arm's values from the records (and feedback and eval scores) of ``experiment``."""
    until = time.time() + 60 if until is None else until
    arms: dict[str, ArmData] = {name: ArmData() for name in arm_names or []}
    by_id: dict[str, tuple[ArmData, TenantRates]] = {}
    with store.connection() as conn:
        rows = store.execute(
            conn,
            "SELECT id, arm, status, latency_ms, ttft_ms, prompt_tokens, completion_tokens, cost, tags, tenant, cached "
            "FROM requests WHERE experiment = ? AND ts >= ? AND ts <= ? AND model = ? LIMIT ?",
            [experiment, since, until, alias, MAX_ROWS],
        ).fetchall()
        for rid, arm_name, status, latency, ttft, prompt, completion, cost, raw, tenant, cached in rows:
            tags = orjson.loads(raw) if isinstance(raw, str | bytes) else raw or {}
            arm = arms.setdefault(str(arm_name), ArmData())
            rates = arm.tenants.get(tenant)
            if rates is None:
                rates = arm.tenants[tenant] = TenantRates()
            by_id[rid] = (arm, rates)
            arm.requests += 1
            rates.requests += 1
            if 400 <= status < 500 or (status >= 500 and client_caused(tags)):
                arm.client_errors += 1
                rates.client_errors += 1
            elif status >= 500:
                arm.errors += 1
                rates.errors += 1
            elif cached:
                # A cache hit says nothing of the arm's model: its latency and tokens would only dilute the arm's.
                arm.cache_hits += 1
                rates.cache_hits += 1
            elif latency is not None:
                arm.latency.append(float(latency))
            if ttft is not None and status < 400 and not cached:
                arm.ttft.append(float(ttft))
            if (prompt is not None or completion is not None) and not cached:
                arm.tokens.append(float((prompt or 0) + (completion or 0)))
            arm.cost += float(cost or 0.0)
            if isinstance(tags, dict) and _flagged(tags):
                arm.flagged += 1
                rates.flagged += 1
        if by_id:
            # One rating per request, the latest posted (by time, then id), counted per arm and tenant in SQL:
            # the rows read are (arms x tenants), however many ratings a request has.
            params = [experiment, since, until, alias, alias, since]
            for arm_name, tenant, rated, positive in store.execute(conn, _FEEDBACK_BY_ARM, params).fetchall():
                arm = arms.setdefault(str(arm_name), ArmData())
                rates = arm.tenants.get(tenant)
                if rates is None:
                    rates = arm.tenants[tenant] = TenantRates()
                arm.rated += int(rated)
                rates.rated += int(rated)
                arm.positive += int(positive or 0)
                rates.positive += int(positive or 0)
            for rid, scorer, value in store.execute(
                conn,
                "SELECT i.request_id, s.scorer, s.value FROM eval_scores s JOIN eval_items i "
                "ON i.run_id = s.run_id AND i.item_key = s.item_key "
                "WHERE s.model = ? AND s.ts >= ? AND s.value IS NOT NULL AND i.request_id IS NOT NULL "
                # A shadow answer's scores are not the live arm's. The pattern is a parameter: a literal
                # '%' in the statement is a placeholder to psycopg (a 500 on PostgreSQL).
                "AND s.run_id NOT LIKE ? LIMIT ?",
                [alias, since, "shadow:%", MAX_ROWS],
            ).fetchall():
                found = by_id.get(rid)
                if found is not None:
                    arm, rates = found
                    arm.scores[str(scorer)].append(float(value))
                    passed = rates.passed.setdefault(str(scorer), [0, 0])
                    passed[0] += float(value) >= 0.5  # scores in [0, 1]: a pass
                    passed[1] += 1
    return arms


def compare(control: ArmData, other: ArmData, alpha: float, tau: float) -> dict[str, Any]:
    """``other`` against ``control``: a test and an interval for every metric, and the sequential verdicts."""
    out: dict[str, Any] = {
        "error_rate": {
            **stats.proportion_test(control.errors, control.judged, other.errors, other.judged, alpha),
            "sequential": stats.sequential_test(control.errors, control.judged, other.errors, other.judged, tau, alpha),
        },
        "guard_flag_rate": {
            **stats.proportion_test(control.flagged, control.requests, other.flagged, other.requests, alpha),
            "sequential": stats.sequential_test(
                control.flagged, control.requests, other.flagged, other.requests, tau, alpha
            ),
        },
        "feedback_positive_rate": {
            **stats.proportion_test(control.positive, control.rated, other.positive, other.rated, alpha),
            "sequential": stats.sequential_test(
                control.positive, control.rated, other.positive, other.rated, tau, alpha
            ),
        },
        "latency_ms": stats.distribution_test(control.latency, other.latency, alpha, statistic="median"),
        "ttft_ms": stats.distribution_test(control.ttft, other.ttft, alpha, statistic="median"),
        "tokens": stats.distribution_test(control.tokens, other.tokens, alpha),
        "scores": {
            name: stats.distribution_test(control.scores.get(name, []), values, alpha)
            for name, values in other.scores.items()
        },
    }
    return out


def verdict(arm: str, comparison: dict[str, Any], alpha: float) -> list[str]:
    """The comparison in words (only what the sequential tests, valid at any look, or intervals say)."""
    words: list[str] = []
    for key, label, worse_when in (
        ("error_rate", "error rate", 1),
        ("guard_flag_rate", "guard flag rate", 1),
        ("feedback_positive_rate", "positive feedback", -1),
    ):
        item = comparison[key]
        if item["diff"] is None:
            continue
        if item["sequential"]["significant"]:
            direction = "worse" if item["diff"] * worse_when > 0 else "better"
            words.append(
                f"{arm}: {label} is significantly {direction} ({item['diff']:+.4f}, "
                f"{(1 - alpha) * 100:.0f}% CI {item['ci'][0]:+.4f} to {item['ci'][1]:+.4f}; "
                f"always-valid p = {item['sequential']['p_value']:.4f})."
            )
    latency = comparison["latency_ms"]
    if latency["ci"] is not None and (latency["ci"][0] > 0 or latency["ci"][1] < 0):
        direction = "slower" if latency["ci"][0] > 0 else "faster"
        words.append(
            f"{arm}: median latency {direction} by {abs(latency['diff']):.1f} ms "
            f"(CI {latency['ci'][0]:+.1f} to {latency['ci'][1]:+.1f} ms; fixed-horizon, not for peeking)."
        )
    if not words:
        words.append(f"{arm}: no significant difference from control yet.")
    return words


def report(
    store: SqlRecordStore, experiment: dict[str, Any], alpha: float = 0.05, now: float | None = None
) -> dict[str, Any]:
    """The experiment's per-arm metrics, comparisons against the first arm, a sample-size plan and words."""
    names = [a["arm"] for a in experiment["arms"] if a["arm"] != "shadow"]
    until = experiment.get("stopped_at") or (time.time() if now is None else now)
    data = collect(store, experiment["alias"], experiment["id"], experiment["started_at"], until + 1, names)
    settings = experiment.get("settings") or {}
    tau = float(settings.get("tau", 0.02))
    out: dict[str, Any] = {
        "experiment": experiment,
        "alpha": alpha,
        "arms": {name: arm.summary() for name, arm in data.items()},
        "comparisons": {},
        "verdict": [],
    }
    if not names:
        return out
    control = data[names[0]]
    for name in names[1:]:
        comparison = compare(control, data[name], alpha, tau)
        out["comparisons"][name] = comparison
        out["verdict"].extend(verdict(name, comparison, alpha))
    base = control.errors / control.judged if control.judged else 0.0
    base = round(min(max(base, 0.01), 0.5), 3)
    try:
        out["plan"] = {
            "metric": "error_rate",
            **stats.plan(base, tau, alpha).to_dict(),
            "per_arm_so_far": min(d.requests for d in data.values()),
        }
    except ValueError as error:
        out["plan"] = {"error": str(error)}
    return out
