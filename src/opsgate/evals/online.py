"""Continuous evaluation of live traffic: a record sink that samples answers and scores them later.

``OnlineEvaluator.write`` is a ``RecordSink`` (the gateway fans every finished record out to its
sinks), so sampling costs the request path a dict lookup, a random number and, for a sampled
record, a token-bucket check and a queue put — never a model call or a database write. A
bounded queue and a rate cap bound the work: when the scorers or the judge are slow or down,
samples are dropped and counted (``/readyz`` → ``eval_online``), the gateway is not slowed.

A background task on the gateway's loop takes samples off the queue, scores them in a worker
thread with the reference-free scorers (and, opt-in, a judge called through the gateway's own
``/v1``, recorded with ``purpose=eval``), and stores them as items of the online run
``online:<tenant>:<alias>`` — the same tables offline runs use. Every ``measure_interval_seconds``
it turns the stored scores into the ``eval_degradation`` SLI of each objective that has it: the
drop of ``quality_scorer``'s mean in the recent ``window`` relative to the ``baseline_window``
before it (0 when not worse), written where the SLO engine reads measured SLIs, so a degradation
shows in ``/admin/slo`` and its alerts like any other objective. Each replica measures its own
view; the points are idempotent for the engine (it reads the latest).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from opsgate.domain.config import GatewayConfig
from opsgate.domain.eval_config import OnlineEvalConfig, duration_seconds
from opsgate.drift.features import synthetic
from opsgate.evals.dataset import DatasetItem
from opsgate.evals.online_budget import FairBudget
from opsgate.evals.online_sample import OnlineSample, sample_of
from opsgate.evals.scoring import Sample, Score, Scorer, ScorerRegistry
from opsgate.evals.store import EvalStore, ItemResult
from opsgate.store.finished_thread import finished_in_thread

log = logging.getLogger("opsgate.evals.online")
RecordDict = dict[str, Any]
_QUALITY_PARTS = ("refusal", "pii_leak", "toxicity", "json_valid")


class OnlineEvaluator:
    """Samples live records and scores them off the request path."""

    def __init__(
        self,
        config: OnlineEvalConfig,
        store: Callable[[], EvalStore],
        aliases: set[str],
        objectives: list[Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self.rates = {alias: config.rate_for(alias) for alias in aliases}
        self.rates = {alias: rate for alias, rate in self.rates.items() if rate > 0}
        unknown = sorted(set(config.models) - aliases)
        if unknown:
            log.warning("eval.online.models names aliases that do not exist: %s", ", ".join(unknown))
        self.objectives = [o for o in objectives or [] if o.sli == "eval_degradation"]
        self._random = (rng or random.Random()).random
        self._budget = FairBudget(config.max_per_second, time.monotonic())  # max_per_second, shared per tenant
        self.queue: asyncio.Queue[OnlineSample] | None = None
        self.held_bytes = 0  # of the samples queued or being scored (bounded by queue_bytes)
        self._task: asyncio.Task[None] | None = None
        self.scorers: list[Scorer] = []
        self.judge_client: Any = None  # a GatewayClient, set when a judge is configured and the app exists
        self.judge_key_id: str | None = None  # the key id of judge_api_key, once looked up
        self._judge_key_looked = -math.inf  # monotonic time of the last lookup (a key made later is found)
        self.counts = {
            "seen": 0,
            "sampled": 0,
            "dropped_queue_full": 0,
            "dropped_queue_bytes": 0,
            "dropped_rate": 0,
            "scored": 0,
            "failed": 0,
            "skipped_no_text": 0,
            "store_failed": 0,  # scored, but the store refused the item: lost
            "dropped_erased": 0,  # scored, but its user was erased meanwhile: not stored
            "measurements": 0,
        }
        self.last_error: str | None = None

    @classmethod
    def from_config(cls, config: GatewayConfig, store: Callable[[], EvalStore] | None) -> OnlineEvaluator | None:
        """The evaluator the config asks for, or None (off, or no record store to keep scores in)."""
        online = config.eval.online
        if not online.enabled:
            return None
        if store is None:
            log.warning("eval.online is enabled but record.store is not set: online evaluation is off")
            return None
        aliases = {m.name for m in config.models if m.kind != "embedding"}
        return cls(online, store, aliases, list(config.slo.objectives))

    # -- the sink (event loop, every request) -------------------------------------------------------

    def write(self, record: RecordDict) -> None:
        """Maybe take the record as a sample; never blocks, never raises."""
        rate = self.rates.get(record.get("model") or "")
        if rate is None or self.queue is None:
            return
        self.counts["seen"] += 1
        if record.get("status") != 200 or record.get("endpoint") not in ("chat", "completion"):
            return
        if self._random() >= rate:
            return
        if self._own_call(record):
            return  # never score our own evaluation calls (a judge judging itself)
        tenant = record.get("tenant")
        if not self._budget.take(tenant if isinstance(tenant, str) else None, time.monotonic()):
            self.counts["dropped_rate"] += 1
            return
        if self.queue.full():
            self.counts["dropped_queue_full"] += 1
            return
        sample = sample_of(record)  # the fields scoring needs, not the record (prompt cut, held bytes known)
        size = sample.held_bytes
        if self.held_bytes + size > self.config.queue_bytes:
            self.counts["dropped_queue_bytes"] += 1
            return
        self.held_bytes += size
        self.queue.put_nowait(sample)
        self.counts["sampled"] += 1

    def _own_call(self, record: RecordDict) -> bool:
        """The gateway's own evaluation (or sentinel, bias) traffic: an operator's request claiming such a
        purpose (drift's rule: a tenant's claim is ignored, so no client opts out of being scored), or a
        ``purpose: eval`` call made with the judge's own key (``judge_api_key`` may be a tenant's)."""
        tags = record.get("tags")
        tenant = record.get("tenant")
        if synthetic(record, tags if isinstance(tags, dict) else {}, tenant if isinstance(tenant, str) else None):
            return True
        metadata = record.get("metadata")
        return (
            self.judge_key_id is not None
            and record.get("api_key_id") == self.judge_key_id
            and isinstance(metadata, dict)
            and metadata.get("purpose") == "eval"
        )

    def _find_judge_key(self) -> None:
        """The id of ``judge_api_key`` (records carry key ids, not secrets); a worker-thread lookup."""
        key = self.config.judge_api_key
        if key is None or self.judge_key_id is not None or time.monotonic() - self._judge_key_looked < 60:
            return
        self._judge_key_looked = time.monotonic()
        from opsgate.auth.key_store import KeyStore

        try:
            found = KeyStore(self._store().store).lookup(key.get_secret_value())
        except Exception as error:  # the store is down: try again with the next batch
            log.warning("online evaluation: cannot look up judge_api_key: %s", error)
            return
        self.judge_key_id = found.key_id if found is not None else None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the scorers and start the background task."""
        registry = ScorerRegistry(extra=[])
        self.scorers = [registry.build(name) for name in self.config.scorers]
        self.queue = asyncio.Queue(self.config.queue_size)
        self._task = asyncio.create_task(self._run(), name="opsgate-online-eval")

    async def stop(self) -> None:
        """Stop the task (samples still queued are dropped; they were a sample anyway)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.queue = None
        if self.judge_client is not None:
            await self.judge_client.http.close()
            self.judge_client = None

    def attach_app(self, app: Any) -> None:
        """Judge calls go to ``app``'s own ``/v1`` in-process (recorded like any request)."""
        if not self.config.judge and not any(m.judge for m in self.config.models.values()):
            return
        from opsgate.evals.client import AsgiPoster, GatewayClient

        key = self.config.judge_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}
        self.judge_client = GatewayClient(AsgiPoster(app, headers, ("127.0.0.1", 50001)), timeout=120.0)

    def status(self) -> dict[str, Any]:
        """Counters for ``/readyz``."""
        return {
            **self.counts,
            "queue": self.queue.qsize() if self.queue is not None else 0,
            "queue_size": self.config.queue_size,
            "held_bytes": self.held_bytes,
            "queue_bytes": self.config.queue_bytes,
            "aliases": sorted(self.rates),
            "tenants_sharing": self._budget.active,
            "last_error": self.last_error,
        }

    # -- the background task ------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self.queue is not None
        next_measure = time.monotonic() + self.config.measure_interval_seconds
        while True:
            batch: list[OnlineSample] = []
            timeout = max(0.01, min(self.config.flush_seconds, next_measure - time.monotonic()))
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout))
                while len(batch) < 256 and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
            except TimeoutError:
                pass
            try:
                if self.judge_key_id is None and self.config.judge_api_key is not None:
                    await finished_in_thread(self._find_judge_key)
                if batch:
                    try:
                        await self.score_batch(batch)
                    finally:  # scored or not, the batch no longer holds its bytes
                        self.held_bytes -= sum(sample.held_bytes for sample in batch)
                if time.monotonic() >= next_measure:
                    next_measure = time.monotonic() + self.config.measure_interval_seconds
                    await finished_in_thread(self.measure)
            except Exception as error:  # keep sampling; say what went wrong
                self.last_error = f"{type(error).__name__}: {error}"[:300]
                log.warning("online evaluation: %s", self.last_error)

    async def score_batch(self, samples: list[OnlineSample]) -> None:
        """Score and store a batch (scoring in a worker thread; judge calls through the gateway)."""
        results = await finished_in_thread(self._score_all, samples)
        for sample, result in results:
            judge = self.config.judge_for(sample.model)
            if judge and self.judge_client is not None and result.status == "ok":
                await self._judge(judge, sample, result)
        by_run: dict[tuple[str | None, str], list[ItemResult]] = {}
        for sample, result in results:
            by_run.setdefault((sample.tenant, sample.model), []).append(result)
        await finished_in_thread(self._store_all, by_run)

    def _store_all(self, by_run: dict[tuple[str | None, str], list[ItemResult]]) -> None:
        """Store each (tenant, model) group on its own: one group's failure never loses the others'
        samples (a batch mixes tenants)."""
        store = self._store()
        for (tenant, model), results in by_run.items():
            try:
                self._stored(store.write_results(store.ensure_online_run(tenant, model), tenant, model, results))
            except Exception as error:
                self._store_error(tenant, model, error)
                self._store_one_by_one(store, tenant, model, results)

    def _store_one_by_one(self, store: EvalStore, tenant: str | None, model: str, results: list[ItemResult]) -> None:
        """After a group failed: only the items the store refuses are lost, each counted in ``store_failed``.
        Three refusals in a row mean the store is down: the rest are counted without more tries."""
        in_a_row = 0
        for index, result in enumerate(results if len(results) > 1 else []):
            if in_a_row == 3:
                self.counts["store_failed"] += len(results) - index
                return
            try:
                self._stored(store.write_results(store.ensure_online_run(tenant, model), tenant, model, [result]))
                in_a_row = 0
            except Exception as error:
                self._store_error(tenant, model, error)
                self.counts["store_failed"] += 1
                in_a_row += 1
        if len(results) == 1:
            self.counts["store_failed"] += 1

    def _stored(self, dropped: int | None) -> None:
        """Count the items ``write_results`` dropped because their user was erased after the request."""
        self.counts["dropped_erased"] += dropped or 0

    def _store_error(self, tenant: str | None, model: str, error: Exception) -> None:
        self.last_error = f"storing online items of {tenant or '-'}:{model}: {type(error).__name__}: {error}"[:300]
        log.warning("online evaluation: %s", self.last_error)

    def _score_all(self, samples: list[OnlineSample]) -> list[tuple[OnlineSample, ItemResult]]:
        return [(sample, self._score_one(sample)) for sample in samples]

    def _score_one(self, record: OnlineSample) -> ItemResult:
        output = record.output
        result = ItemResult(
            item_key=str(record.id),
            idx=None,
            status="ok",
            input=record.input,
            output=output,
            request_id=record.id,
            latency_ms=record.latency_ms,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cost=record.cost,
            ts=record.ts,
            user=record.user,
            request_ts=record.ts,
        )
        if not isinstance(output, str):
            self.counts["skipped_no_text"] += 1  # metadata_only, or encrypted without output in clear
            result.status = "failed"
            result.error = "no answer text in the record"
            return result
        logprobs = None if record.logprob_mean is None else [{"logprob": record.logprob_mean}]
        sample = Sample(DatasetItem(prompt=record.input or "-"), output, logprobs)
        scores: dict[str, dict[str, Any]] = {}
        for scorer in self.scorers:
            try:
                scores[scorer.name] = _run_sync(scorer, sample).to_dict()
            except Exception as error:
                scores[scorer.name] = {"value": None, "passed": None, "details": {"error": str(error)[:200]}}
        scores["quality"] = quality(scores, record.asked_json).to_dict()
        result.scores = scores
        self.counts["scored"] += 1
        return result

    async def _judge(self, judge: str, record: OnlineSample, result: ItemResult) -> None:
        from opsgate.evals.judge import PointwiseJudge

        scorer = PointwiseJudge(
            self.judge_client, judge, self.config.judge_repeats, metadata={"eval_run": "online"}, temperature=0.7
        )
        sample = Sample(DatasetItem(prompt=record.input or "-"), result.output or "")
        try:
            score = await scorer.score(sample)
            (result.scores or {})["judge"] = score.to_dict()
        except ValueError as error:
            self.counts["failed"] += 1
            (result.scores or {})["judge"] = {"value": None, "passed": None, "details": {"error": str(error)[:200]}}

    def measure(self, now: float | None = None) -> list[tuple[str, float]]:
        """Write the eval_degradation SLI of each objective that has one; returns (objective, value)."""
        from opsgate.slo.reader import RollupReader

        now = time.time() if now is None else now
        window = duration_seconds(self.config.window)
        baseline = duration_seconds(self.config.baseline_window)
        store = self._store()
        written = []
        for objective in self.objectives:
            model, tenant = objective.filter.model, objective.filter.tenant
            scope = tenant if tenant is not None else _any()
            recent, n_recent = store.score_mean(model, self.config.quality_scorer, now - window, now, scope)
            normal, n_normal = store.score_mean(
                model, self.config.quality_scorer, now - window - baseline, now - window, scope
            )
            if recent is None or normal is None or min(n_recent, n_normal) < self.config.min_samples:
                continue
            degradation = max(0.0, (normal - recent) / normal) if normal > 0 else 0.0
            RollupReader(store.store).add_measurement(objective.name, now, degradation, tenant)
            self.counts["measurements"] += 1
            written.append((objective.name, degradation))
        return written


def _any() -> Any:
    from opsgate.evals.store import ANY_TENANT

    return ANY_TENANT


def _run_sync(scorer: Scorer, sample: Sample) -> Score:
    """Run a scorer that does not await anything (the reference-free ones) without an event loop."""
    coroutine = scorer.score(sample)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError(f"scorer {scorer.name} awaits; it cannot run online")


def quality(scores: dict[str, dict[str, Any]], asked_json: bool) -> Score:
    """1 when the answer passes every available check: no refusal, no PII leak, not toxic, and valid JSON
    when JSON was asked for; 0 otherwise."""
    failed = []
    for name in _QUALITY_PARTS:
        if name == "json_valid" and not asked_json:
            continue
        passed = (scores.get(name) or {}).get("passed")
        if passed is False:
            failed.append(name)
    return Score(0.0 if failed else 1.0, not failed, {"failed": failed} if failed else {})
