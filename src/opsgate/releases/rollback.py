"""Automatic rollback: a running canary that burns its error budget fast, or is significantly worse
than the control on guard flags or quality, is rolled back by the gateway itself.

Every ``interval_seconds`` each replica reads the canary arms' records (the request log, the same
rows every report reads) and applies:

- the burn-rate rule of the SLO alerts (``slo/``'s page rule by default: the long and the short
  window both burn faster than ``burn_rate`` times the budget of ``slo_target``), on the canary arm's
  error rate, once the short window holds ``min_requests`` canary requests;
- the always-valid sequential test (mSPRT) on the guard flag rate, positive feedback (one rating per
  request, its latest) and the pass rate of online-evaluation scores, canary against control, at
  ``alpha`` — valid however often it looks.

Those quality signals are steered by clients (their ratings, their inputs, what they ask for), and one
rollback changes the release for every tenant of the alias. So a quality rule fires only when the
canary is significantly worse both over all requests and without each tenant's requests in turn
(every p-value at most ``alpha``, every difference the same way): no single tenant can decide a release
for the others, however it rates or what it sends. The operator's own traffic (no tenant: auth off, or
an operator key) is never left out, so with auth off, or with only operator traffic, the rule is the
plain test; with auth on and a single tenant on the alias, that tenant's ratings alone never roll back
(the experiment report still shows the difference).

The burn-rate rule counts the server errors the client did not cause: an answer past the deployment's
size bounds (``AnswerTooLarge``, which the breaker spares as possibly asked for) is not an error here
(``metrics.client_caused``). Clients still steer some real errors (a long generation that times out),
so the burn rule, like the quality rules, must also hold without each tenant's requests in turn: every
leave-one-out row burns past ``burn_rate`` in both windows, and its short window holds ``min_requests``
judged canary requests. When a single tenant (with or without operator traffic) used the alias over the
long window, that tenant is the alias's whole audience then, and the plain rule applies: a single-tenant
deployment (auth off, operator keys, or one tenant key) still rolls a broken canary back, and the
rollback only returns that tenant to the active release. The rollback's reason names the tenants the
canary's errors came from (the top few).

A rollback goes through ``ReleaseStore.rollback`` with the revision the watcher saw, so two replicas
deciding together roll back once (the other gets a conflict and lets it be). It is audited in the
hash chain (``release_rolled_back`` by ``system:auto-rollback``, with the reason and the numbers)
and sent through the SLO alert path: a row in ``slo_alerts`` and the configured webhooks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import GatewayError
from opsgate.domain.slo_config import duration_seconds
from opsgate.releases import metrics, stats
from opsgate.releases.store import ReleaseStore
from opsgate.slo.webhooks import send
from opsgate.store.sql import SqlRecordStore

log = logging.getLogger("opsgate.releases.rollback")
ACTOR = "system:auto-rollback"


class AutoRollback:
    """Watches running canaries and rolls back the ones that hurt."""

    def __init__(self, config: GatewayConfig, source: Callable[[], SqlRecordStore]) -> None:
        self.config = config.releases.auto_rollback
        self.alerts = config.alerts
        self.source = source
        self.checks = 0
        self.rollbacks: list[dict[str, Any]] = []
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Start watching."""
        self._task = asyncio.create_task(self._run(), name="opsgate-auto-rollback")

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_seconds)
            try:
                for event in await asyncio.to_thread(self.check):
                    await self._notify(event)
                self.last_error = None
            except Exception as error:  # the store may be down: try again next tick
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning("auto-rollback check failed: %s", error)

    def check(self, now: float | None = None) -> list[dict[str, Any]]:
        """One pass over every running canary (blocking); returns the rollbacks made."""
        now = time.time() if now is None else now
        self.checks += 1
        store = self.source()
        releases = ReleaseStore(store)
        _, states, _ = releases.snapshot()
        done: list[dict[str, Any]] = []
        for alias, state in states.items():
            if not state.arms or state.experiment is None or not any(a["arm"] == "canary" for a in state.arms):
                continue
            experiment = releases.experiment(state.experiment)
            if experiment is None:
                continue
            reason = self.judge(store, experiment, now)
            if reason is None:
                continue
            try:
                releases.rollback(alias, ACTOR, reason=reason["summary"], expect=state.revision)
            except GatewayError as error:  # another replica was first, or an operator acted meanwhile
                log.info("auto-rollback of %s skipped: %s", alias, error.message)
                continue
            event = {"alias": alias, "experiment": experiment["id"], "ts": now, **reason}
            self._alert_row(store, event, now)
            self.rollbacks.append(event)
            log.warning("auto-rollback: %s: %s", alias, reason["summary"])
            done.append(event)
        return done

    def judge(self, store: SqlRecordStore, experiment: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Why the canary of ``experiment`` must go, or None."""
        alias, exp_id, started = experiment["alias"], experiment["id"], experiment["started_at"]
        windows: list[tuple[str, dict[str, metrics.ArmData]]] = []
        for name, window in (("long", self.config.long_window), ("short", self.config.short_window)):
            since = max(started, now - duration_seconds(window))
            data = metrics.collect(store, alias, exp_id, since, now + 1)
            arm = data.get("canary")
            if arm is None or arm.judged == 0:
                return None if name == "long" else self._quality(store, experiment, now)
            windows.append((window, data))
        return self._burn(windows) or self._quality(store, experiment, now)

    def _burn(self, windows: list[tuple[str, dict[str, metrics.ArmData]]]) -> dict[str, Any] | None:
        """The burn-rate rule over every canary request, and without each tenant's in turn (when two or
        more tenants used the alias over the long window)."""
        allowed = 1.0 - self.config.slo_target
        long_name, long_data = windows[0]
        tenants = sorted({t for arm in long_data.values() for t in arm.tenants if t is not None})
        left_out = tenants if len(tenants) > 1 else []
        burns: dict[str, float] = {}
        for index, (window, data) in enumerate(windows):
            errors, judged = burn_rows(data["canary"], left_out)
            if index == len(windows) - 1 and judged.min() < self.config.min_requests:  # the short window
                return None
            rates = errors / np.maximum(judged, 1) / allowed  # no judged request: no burn
            if not bool(np.all(rates > self.config.burn_rate)):
                return None
            burns[window] = float(rates[0])
        by_tenant = _errors_by_tenant(long_data["canary"])
        text = ", ".join(f"{w} {b:.1f}x" for w, b in burns.items())
        also = f", and without any one of its {len(left_out)} tenants" if left_out else ""
        sources = ", ".join(f"{e['tenant'] or 'operator'}: {e['errors']}" for e in by_tenant)
        return {
            "rule": "burn_rate",
            "burn_rates": burns,
            "tenants": len(left_out),
            "errors_by_tenant": by_tenant,
            "summary": f"canary burns its error budget ({text} > {self.config.burn_rate:g}x of a "
            f"{self.config.slo_target:.4g} availability target{also}; {long_name} window errors by tenant: "
            f"{sources or 'none'})",
        }

    def _quality(self, store: SqlRecordStore, experiment: dict[str, Any], now: float) -> dict[str, Any] | None:
        data = metrics.collect(store, experiment["alias"], experiment["id"], experiment["started_at"], now + 1)
        control, canary = data.get("control"), data.get("canary")
        if control is None or canary is None:
            return None
        tau = float((experiment.get("settings") or {}).get("tau", 0.02))
        alpha = self.config.alpha
        # Scores in [0, 1]: compare the share at or above 0.5 (a pass), a rate the sequential test takes.
        names = ["guard_flag_rate", "feedback_positive_rate", *(f"score:{scorer}" for scorer in canary.scores)]
        for name in names:
            xa, na, xb, nb = leave_one_tenant_out(control, canary, name)
            if na[0] == 0 or nb[0] == 0:
                continue
            worse = 1 if name == "guard_flag_rate" else -1
            p_values = stats.msprt_p_value(xa, na, xb, nb, tau)
            with np.errstate(divide="ignore", invalid="ignore"):
                diffs = xb / nb - xa / na
            # Worse overall and without each tenant in turn: max(p) is the p-value of "all of these".
            p_value = float(p_values.max())
            if p_value <= alpha and bool(np.all(diffs * worse > 0)):
                diff = float(diffs[0])
                tenants = len(xa) - 1
                also = f", and without any one of its {tenants} tenants" if tenants else ""
                return {
                    "rule": name,
                    "diff": diff,
                    "p_value": p_value,
                    "tenants": tenants,
                    "summary": f"canary significantly worse on {name} ({diff:+.4f}, always-valid p = "
                    f"{p_value:.4g} <= {alpha:g}{also})",
                }
        return None

    def _alert_row(self, store: SqlRecordStore, event: dict[str, Any], now: float) -> None:
        details = {
            "firing": [f"page: {event['summary']}"],
            "current": event.get("burn_rates") or event.get("diff"),
            "target": self.config.slo_target,
            "budget_remaining": None,
            "burn_rates": event.get("burn_rates") or {},
            "errors_by_tenant": event.get("errors_by_tenant"),
            "release": event["alias"],
            "experiment": event["experiment"],
            "action": "rolled back",
        }
        with store.connection() as conn, store.transaction(conn):
            row = store.execute(
                conn,
                "INSERT INTO slo_alerts (slo, tenant, severity, state, since, resolved_at, details, notified_firing, "
                "notified_resolved) VALUES (?, '', 'page', 'resolved', ?, ?, ?, 1, 1) RETURNING id",
                [f"release:{event['alias']}", now, now, orjson.dumps(details).decode()],
            ).fetchone()
        event["alert_id"] = int(row[0]) if row else 0
        event["details"] = details

    async def _notify(self, event: dict[str, Any]) -> None:
        # The SLO alert path's webhooks, as a firing page (the rollback already resolved it: recorded so).
        if not self.alerts.webhooks:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload = {
            "alert_id": event["alert_id"],
            "slo": f"release:{event['alias']}",
            "tenant": None,
            "severity": "page",
            "state": "resolved",
            "since": event["ts"],
            "resolved_at": event["ts"],
            "details": event["details"],
            "status": "firing",
        }
        await asyncio.gather(
            *(send(self._session, hook, payload, self.alerts.retries) for hook in self.alerts.webhooks)
        )

    def status(self) -> dict[str, Any]:
        """For ``/readyz``."""
        return {"checks": self.checks, "rollbacks": len(self.rollbacks), "last_error": self.last_error}


def _rate(rates: metrics.TenantRates, name: str) -> tuple[int, int]:
    """(count, n) of the rate ``name`` in one tenant's share of an arm."""
    if name == "guard_flag_rate":
        return rates.flagged, rates.requests
    if name == "feedback_positive_rate":
        return rates.positive, rates.rated
    passed = rates.passed.get(name.removeprefix("score:"))
    return (passed[0], passed[1]) if passed else (0, 0)


FloatArray = npt.NDArray[np.float64]


def leave_one_tenant_out(
    control: metrics.ArmData, canary: metrics.ArmData, name: str
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(control count, control n, canary count, canary n) of rate ``name``: first over every request, then
    without each tenant's requests in turn (the operator's, tenant None, are never left out)."""
    empty = metrics.TenantRates()
    tenants = sorted(t for t in control.tenants.keys() | canary.tenants.keys() if t is not None)
    per = np.array(
        [[*_rate(control.tenants.get(t, empty), name), *_rate(canary.tenants.get(t, empty), name)] for t in tenants],
        dtype=np.float64,
    ).reshape(len(tenants), 4)
    operator = control.tenants.get(None, empty), canary.tenants.get(None, empty)
    total = per.sum(axis=0) + np.array([*_rate(operator[0], name), *_rate(operator[1], name)], dtype=np.float64)
    rows = np.vstack([total, total - per])
    return rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]


def burn_rows(canary: metrics.ArmData, left_out: list[str]) -> tuple[FloatArray, FloatArray]:
    """(errors, judged) of the canary arm: first over every request, then without each tenant of
    ``left_out`` in turn."""
    empty = metrics.TenantRates()
    shares = [canary.tenants.get(t, empty) for t in left_out]
    per = np.array([[r.errors, r.judged] for r in shares], dtype=np.float64)
    total = np.array([canary.errors, canary.judged], dtype=np.float64)
    rows = np.vstack([total, total - per.reshape(len(left_out), 2)])
    return rows[:, 0], rows[:, 1]


def _errors_by_tenant(canary: metrics.ArmData, top: int = 5) -> list[dict[str, Any]]:
    """The canary's errors per tenant (None: the operator's traffic), the ``top`` largest first."""
    counts = sorted(((r.errors, t) for t, r in canary.tenants.items() if r.errors), key=lambda c: -c[0])
    return [{"tenant": t, "errors": n} for n, t in counts[:top]]
