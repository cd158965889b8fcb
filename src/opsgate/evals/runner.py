"""Runs: a dataset version, a model and scorers give one stored result per item.

Items run concurrently (a fixed pool of workers); each finished item — its answer, latency, tokens, cost,
scores, or its error — goes to a ``ResultWriter`` that stores batches in a worker thread at least
every ``flush_seconds``, so a run killed mid-way has everything but the last fraction of a second
stored, and ``--resume`` calls only the items not finished (failed items are tried again). A
failed call (timeout, 5xx, a judge reply that does not parse) is stored as a failed item with its
error and counted; the run goes on.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opsgate.evals.client import GatewayClient
from opsgate.evals.dataset import DatasetItem
from opsgate.evals.item_text import open_items
from opsgate.evals.scoring import Sample, Scorer
from opsgate.evals.store import EvalStore, ItemResult
from opsgate.releases.shadow import ItemPayloads


def item_key(index: int) -> str:
    """The key of a dataset item in a run: its position, zero-padded so keys sort in order."""
    return f"{index:06d}"


@dataclass
class RunSettings:
    """How the model is called."""

    model: str
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = 0
    concurrency: int = 8
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Stored with the run (so a resume calls the model the same way)."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "concurrency": self.concurrency,
            **({"extra": self.extra} if self.extra else {}),
        }


class ResultWriter:
    """Collects finished items and stores them in batches from one worker thread."""

    def __init__(
        self,
        store: EvalStore,
        run_id: str,
        tenant: str | None,
        model: str,
        flush_seconds: float = 0.2,
        batch: int = 256,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.tenant = tenant
        self.model = model
        self.flush_seconds = flush_seconds
        self.batch = batch
        self._pending: list[ItemResult] = []
        self._lock = threading.Condition()
        self._closed = False
        self.stored = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"eval-writer-{run_id}", daemon=True)
        self._thread.start()

    def add(self, result: ItemResult) -> None:
        """Queue one result (never blocks on the database)."""
        with self._lock:
            self._pending.append(result)
            if len(self._pending) >= self.batch:
                self._lock.notify()

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not self._pending and not self._closed:
                    self._lock.wait(self.flush_seconds)
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                try:
                    self.store.write_results(self.run_id, self.tenant, self.model, batch)
                    self.stored += len(batch)
                except Exception as error:  # keep the run going; report at close
                    self.error = error
            if closed and not batch:
                with self._lock:
                    if not self._pending:
                        return

    def close(self) -> None:
        """Store what is left and stop."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"storing results failed: {self.error}") from self.error


async def run_item(
    client: GatewayClient,
    settings: RunSettings,
    scorers: Sequence[Scorer],
    index: int,
    item: DatasetItem,
    metadata: dict[str, str],
) -> ItemResult:
    """Call the model for one item and score the answer."""
    params: dict[str, Any] = {"max_tokens": settings.max_tokens, "temperature": settings.temperature}
    if settings.seed is not None:
        params["seed"] = settings.seed
    if any(s.needs_logprobs for s in scorers):
        params["logprobs"] = True
    params.update(settings.extra)
    call = await client.chat(settings.model, item.chat_messages(), metadata, **params)
    result = ItemResult(
        item_key=item_key(index),
        idx=index,
        status="ok" if call.ok else "failed",
        input=item.input_text(),
        output=call.text if call.ok else None,
        reference=item.reference or None,
        error=call.error,
        request_id=call.request_id,
        latency_ms=round(call.latency_ms, 3),
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        cost=call.cost,
        ts=time.time(),
    )
    if not call.ok:
        return result
    sample = Sample(item, call.text, call.logprobs, settings.model)
    scores: dict[str, dict[str, Any]] = {}
    problems = []
    for scorer in scorers:
        try:
            scores[scorer.name] = (await scorer.score(sample)).to_dict()
        except Exception as error:  # a scorer's failure is this item's failure, not the run's
            problems.append(f"{scorer.name}: {error}"[:300])
    result.scores = scores
    if problems:
        result.status = "failed"
        result.error = "; ".join(problems)
    return result


@dataclass
class RunOutcome:
    """What the run did this time."""

    run_id: str
    total: int
    skipped: int
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    interrupted: bool = False


async def execute(
    client: GatewayClient,
    store: EvalStore,
    run_id: str,
    tenant: str | None,
    settings: RunSettings,
    scorers: Sequence[Scorer],
    items: Sequence[DatasetItem],
    on_item: Callable[[ItemResult], None] | None = None,
    flush_seconds: float = 0.2,
) -> RunOutcome:
    """Run the items not finished yet; store results as they finish; summarise the run at the end."""
    done = await asyncio.to_thread(store.finished_keys, run_id)
    todo = [(i, item) for i, item in enumerate(items) if item_key(i) not in done]
    outcome = RunOutcome(run_id, len(items), len(items) - len(todo))
    writer = ResultWriter(store, run_id, tenant, settings.model, flush_seconds)
    metadata = {"purpose": "eval", "eval_run": run_id, "eval_role": "candidate"}
    queue: asyncio.Queue[tuple[int, DatasetItem]] = asyncio.Queue()
    for entry in todo:
        queue.put_nowait(entry)
    started = time.perf_counter()

    async def worker() -> None:
        while True:
            try:
                index, item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            result = await run_item(client, settings, scorers, index, item, metadata)
            writer.add(result)
            if result.status == "ok":
                outcome.ok += 1
            else:
                outcome.failed += 1
            if on_item is not None:
                on_item(result)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, settings.concurrency))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        outcome.interrupted = True
        for task in workers:
            task.cancel()
        raise
    finally:
        outcome.seconds = time.perf_counter() - started
        await asyncio.to_thread(writer.close)
        summary = await asyncio.to_thread(summarise_run, store, run_id)
        status = "interrupted" if outcome.interrupted else "completed"
        await asyncio.to_thread(store.finish_run, run_id, status, summary)
    return outcome


def summarise_run(store: EvalStore, run_id: str) -> dict[str, Any]:
    """Counts, per-scorer means and pass rates, latency percentiles, tokens and cost of a run."""
    items = store.all_items(run_id)
    ok = [i for i in items if i["status"] == "ok"]
    latencies = sorted(i["latency_ms"] for i in ok if i["latency_ms"] is not None)
    costs = [i["cost"] for i in items if i["cost"] is not None]
    scorers: dict[str, dict[str, Any]] = {}
    for item in items:
        for name, score in (item["scores"] or {}).items():
            entry = scorers.setdefault(name, {"values": [], "passed": []})
            if score["value"] is not None:
                entry["values"].append(float(score["value"]))
            if score["passed"] is not None:
                entry["passed"].append(bool(score["passed"]))
    summary_scores = {}
    for name, entry in scorers.items():
        values, passed = entry["values"], entry["passed"]
        summary_scores[name] = {
            "n": len(values),
            "mean": statistics.fmean(values) if values else None,
            "pass_rate": (sum(passed) / len(passed)) if passed else None,
        }
    return {
        "items": len(items),
        "ok": len(ok),
        "failed": len(items) - len(ok),
        "latency_ms": {
            "p50": _quantile(latencies, 0.5),
            "p95": _quantile(latencies, 0.95),
            "mean": statistics.fmean(latencies) if latencies else None,
        },
        "prompt_tokens": sum(i["prompt_tokens"] or 0 for i in items),
        "completion_tokens": sum(i["completion_tokens"] or 0 for i in items),
        "cost": sum(costs) if costs else None,
        "cost_known_items": len(costs),
        "scores": summary_scores,
    }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


async def run_pairwise(
    store: EvalStore,
    judge: Any,
    tenant: str | None,
    baseline_run: str,
    candidate_run: str,
    candidate_model: str,
    concurrency: int = 4,
    payloads: ItemPayloads | None = None,
) -> int:
    """Judge each shared item's answers (baseline vs candidate, both orders, repeated); the candidate's
    win share is stored as its ``pairwise`` score. Returns how many items were judged.

    Stored text is read through ``open_items`` (sealed shadow text opened with ``payloads``, the
    request log's cipher); an item whose text stays sealed is not judged: a judge never reads ciphertext."""
    opener = payloads or ItemPayloads()

    def readable(run_id: str) -> list[dict[str, Any]]:
        items = open_items(store.all_items(run_id), opener)
        return [i for i in items if i["status"] == "ok" and not i["sealed"]]

    base = {i["item_key"]: i for i in await asyncio.to_thread(readable, baseline_run)}
    cand = await asyncio.to_thread(readable, candidate_run)
    pairs = [(c, base[c["item_key"]]) for c in cand if c["item_key"] in base]
    limit = asyncio.Semaphore(concurrency)
    judged = 0

    async def one(candidate: dict[str, Any], baseline: dict[str, Any]) -> None:
        nonlocal judged
        async with limit:
            try:
                request, answer = candidate["input"] or "", candidate["output"] or ""
                score = await judge.compare(request, baseline["output"] or "", answer)
                entry = score.to_dict()
            except ValueError as error:
                entry = {"value": None, "passed": None, "details": {"error": str(error)[:300]}}
        entry["details"] = {**(entry.get("details") or {}), "baseline_run": baseline_run}
        await asyncio.to_thread(
            store.add_scores, candidate_run, candidate["item_key"], tenant, candidate_model, {"pairwise": entry}
        )
        judged += 1

    await asyncio.gather(*(one(c, b) for c, b in pairs))
    summary = await asyncio.to_thread(summarise_run, store, candidate_run)
    run = await asyncio.to_thread(store.get_run, tenant, candidate_run)
    await asyncio.to_thread(store.finish_run, candidate_run, (run or {}).get("status") or "completed", summary)
    return judged
