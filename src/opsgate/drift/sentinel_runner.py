"""One sentinel run: a deployment's golden prompts through the gateway's own ``/v1``, compared, stored.

Each call is an ordinary gateway request — auth, limits, guard, recording — pinned to the deployment
with ``x-opsgate-pin-deployment`` (honoured for operator admin callers only, ``routing/pin.py``), at
temperature 0 with the configured seed, ``Cache-Control: no-cache, no-store`` so neither a cached
answer nor this one's entry gets in the way, and ``metadata.opsgate_purpose = "sentinel"`` so the
request log shows it. Answers are embedded with the bundled MiniLM in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from opsgate.domain.config import GatewayConfig
from opsgate.domain.sentinel_config import MAX_PROMPTS, SentinelAlias, SentinelConfig
from opsgate.drift.sentinel_compare import Verdict, compare_item, verdict
from opsgate.drift.sentinel_store import RunItem, SentinelStore
from opsgate.evals.client import Poster, TransportFailure
from opsgate.store.encoding import storable_text
from opsgate.store.finished_thread import finished_in_thread

log = logging.getLogger("opsgate.sentinel")
PURPOSE = "sentinel"
PIN_HEADER = "x-opsgate-pin-deployment"


@dataclass(frozen=True)
class Golden:
    """A golden prompt ready to send."""

    id: str
    messages: list[dict[str, str]]
    max_tokens: int

    @property
    def hash(self) -> str:
        """Changes when the prompt or its max_tokens change (the baseline of an edited prompt is redone)."""
        raw = orjson.dumps([self.messages, self.max_tokens], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()[:32]


class Embedder:
    """The bundled MiniLM, loaded on first use; ``embed`` runs in a worker thread."""

    def __init__(self, model_path: str | None) -> None:
        self.model_path = model_path
        self._encoder: Any = None
        self._lock = threading.Lock()

    def _encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._encoder is None:
                from opsgate.backends.minilm import shared_encoder

                self._encoder = shared_encoder(self.model_path)
            vectors, _ = self._encoder.encode(texts)
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit vector per text."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return await asyncio.to_thread(self._encode, texts)


def deployments_of(config: GatewayConfig, alias: str) -> list[str]:
    """The labels the sentinel watches for ``alias`` (its configured subset, else every deployment)."""
    model = next((m for m in config.models if m.name == alias), None)
    if model is None:
        return []
    labels = [f"{alias}#{i}" for i in range(len(model.deployments))]
    chosen = config.sentinel.models[alias].deployments if alias in config.sentinel.models else None
    return [label for label in labels if chosen is None or label in chosen]


def watched(config: GatewayConfig) -> dict[str, list[str]]:
    """Alias → deployment labels, for every configured alias that exists and is a chat alias."""
    out = {}
    for alias in config.sentinel.models:
        model = next((m for m in config.models if m.name == alias), None)
        if model is None or model.kind == "embedding":
            continue
        out[alias] = deployments_of(config, alias)
    return out


def golden_prompts(settings: SentinelConfig, alias_config: SentinelAlias, store: SentinelStore) -> list[Golden]:
    """The alias's inline prompts, then its dataset's items (the operator's datasets), MAX_PROMPTS at most."""
    out = [Golden(p.id, p.chat_messages(), p.max_tokens or settings.max_tokens) for p in alias_config.prompts]
    if alias_config.dataset is not None:
        from opsgate.evals.store import EvalStore

        evals = EvalStore(store.store)
        dataset = evals.find_dataset(None, alias_config.dataset)
        if dataset is None:
            raise LookupError(f"sentinel dataset '{alias_config.dataset}' does not exist (operator datasets)")
        seen = {golden.id for golden in out}
        for index, item in enumerate(evals.dataset_items(dataset.id)[: alias_config.dataset_items]):
            messages = item.messages or [{"role": "user", "content": item.prompt or ""}]
            key = storable_text(f"{dataset.name}:{item.id or index}"[:64])
            if key in seen:  # an id cut to 64 characters, or one an inline prompt already has
                key = f"{dataset.name}:{index}"[:64]
            if key in seen:
                continue
            seen.add(key)
            out.append(Golden(key, [{"role": str(m["role"]), "content": str(m["content"])} for m in messages],
                              settings.max_tokens))  # fmt: skip
    return out[:MAX_PROMPTS]


class SentinelRunner:
    """Runs golden prompts against one deployment at a time and records the outcome."""

    def __init__(self, config: GatewayConfig, store: SentinelStore, poster: Poster, embedder: Embedder) -> None:
        self.config = config
        self.settings = config.sentinel
        self.store = store
        self.poster = poster
        self.embedder = embedder
        self.objectives = [o for o in config.slo.objectives if getattr(o, "sli", None) == "behaviour_change"]

    async def run(self, alias: str, deployment: str, kind: str, actor: str, rebaseline: bool = False) -> dict[str, Any]:
        """Run ``alias``'s golden prompts on ``deployment``; store and return the run (without items)."""
        started = time.time()
        run_id = "sen_" + uuid.uuid4().hex[:20]
        problem: str | None = None
        try:
            prompts = await asyncio.to_thread(golden_prompts, self.settings, self.settings.models[alias], self.store)
        except LookupError as error:  # a configured dataset that is not (yet) in the store
            log.warning("sentinel: %s; run of %s skipped", error, deployment)
            prompts, problem = [], str(error)
        baselines = {} if rebaseline else await asyncio.to_thread(self.store.baselines, alias, deployment)
        items = [await self._call(alias, deployment, run_id, golden) for golden in prompts]
        answered = [i for i in items if i.answer is not None]
        vectors = await self.embedder.embed([i.answer or "" for i in answered])
        for item, vector in zip(answered, vectors, strict=True):
            item.embedding = vector
        for item in items:
            compare_item(item, baselines.get(item.prompt_id), self.settings.similarity_threshold)
        result = verdict(items, baselines, self.settings.min_changed_prompts)
        if rebaseline and result.status == "baseline":
            kind = "baseline"
        run = {
            "id": run_id,
            "alias": alias,
            "deployment": deployment,
            "kind": kind,
            "status": result.status,
            "started_at": started,
            "finished_at": time.time(),
            "prompts": len(items),
            "changed": result.changed,
            "failed": result.failed,
            "share": result.share if result.compared else None,
            "model_changed": result.model_changed,
            "fingerprint_changed": result.fingerprint_changed,
            "summary": {
                "compared": result.compared,
                "raw_share": result.raw_share,
                **result.details,
                **({"error": problem} if problem else {}),
            },
            "actor": actor,
        }
        await finished_in_thread(self._store, run, items)
        if result.status == "changed":
            self._warn(deployment, run_id, result)
        elif result.status == "failed":
            log.warning("sentinel: every golden prompt failed on deployment %s (run %s)", deployment, run_id)
        return run

    def _store(self, run: dict[str, Any], items: list[RunItem]) -> None:
        alias, deployment, run_id = run["alias"], run["deployment"], run["id"]
        self.store.save_run(run, items)
        # Per prompt: a prompt that failed keeps its old baseline (a re-baseline while the deployment
        # is down must not wipe what the next run compares with).
        fresh = [i for i in items if i.status == "baseline"]
        if fresh:
            self.store.add_baselines(alias, deployment, run_id, fresh, run["finished_at"])
        if run["status"] in ("changed", "unchanged"):
            self.measure(alias, deployment, run["finished_at"])

    def measure(self, alias: str, deployment: str, now: float) -> list[tuple[str, float]]:
        """Write the behaviour_change SLI of each objective whose filter covers (alias, deployment): the
        largest share among the newest runs of the deployments in the objective's scope."""
        from opsgate.slo.reader import RollupReader

        written = []
        for objective in self.objectives:
            scope = objective.filter
            if scope.model not in (None, alias) or scope.deployment not in (None, deployment):
                continue
            shares = self.store.latest_shares(scope.model, scope.deployment)
            value = max((share for _, _, share in shares), default=0.0)
            RollupReader(self.store.store).add_measurement(objective.name, now, value, scope.tenant)
            written.append((objective.name, value))
        return written

    @staticmethod
    def _warn(deployment: str, run_id: str, result: Verdict) -> None:
        moved = [f"model {m}" for m in result.details["model"]]
        moved += [f"system_fingerprint {f}" for f in result.details["system_fingerprint"]]
        log.warning(
            "deployment %s changed behaviour: %d of %d answers changed%s (run %s)",
            deployment,
            result.changed,
            result.compared,
            "; " + ", ".join(moved) if moved else "",
            run_id,
        )

    async def _call(self, alias: str, deployment: str, run_id: str, golden: Golden) -> RunItem:
        item = RunItem(prompt_id=golden.id, status="failed", prompt_hash=golden.hash)
        body = {
            "model": alias,
            "messages": golden.messages,
            "temperature": 0,
            "seed": self.settings.seed,
            "max_tokens": golden.max_tokens,
            # opsgate_purpose as explain/bias calls say it; purpose as evals say it (drift/features.py and
            # the online evaluator read that one), so no feature mistakes golden prompts for traffic.
            "metadata": {
                "opsgate_purpose": PURPOSE,
                "purpose": PURPOSE,
                "sentinel_run": run_id,
                "sentinel_prompt": golden.id,
            },
        }
        headers = {
            "Content-Type": "application/json",
            "Cache-Control": "no-cache, no-store",
            PIN_HEADER: deployment,
        }
        try:
            status, meta, content = await self.poster.post(
                "chat/completions", orjson.dumps(body), headers, self.settings.timeout_seconds
            )
        except TransportFailure as error:
            item.error = str(error)[:500]
            return item
        item.request_id = meta.get("x-request-id")
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            data = None
        if status != 200 or not isinstance(data, dict):
            message = ((data or {}).get("error") or {}).get("message") if isinstance(data, dict) else None
            item.error = f"HTTP {status}: {message or content[:300].decode('utf-8', 'replace')}"[:500]
            return item
        served = meta.get("x-opsgate-deployment")
        if served is not None and served != deployment:
            item.error = f"served by {served}, not the pinned {deployment}"  # never compare another deployment
            return item
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        content_text = (choice.get("message") or {}).get("content") if isinstance(choice.get("message"), dict) else None
        item.answer = content_text if isinstance(content_text, str) else ""
        model, fingerprint = data.get("model"), data.get("system_fingerprint")
        item.upstream_model = model if isinstance(model, str) else None
        item.fingerprint = fingerprint if isinstance(fingerprint, str) else None
        return item
