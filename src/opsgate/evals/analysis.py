"""Loading runs for comparison and reports: the glue between the store and ``stats``."""

from __future__ import annotations

from typing import Any

from opsgate.evals.stats import GateResult, ScorerComparison, compare_scores, gate
from opsgate.evals.store import EvalStore, TenantScope


class RunNotFound(LookupError):
    """No run with that id for this caller."""


def load_run(store: EvalStore, tenant: TenantScope, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run and its items (LookupError when missing or another tenant's)."""
    run = store.get_run(tenant, run_id)
    if run is None:
        raise RunNotFound(f"no evaluation run '{run_id}'")
    return run, store.all_items(run_id)


def scorer_directions(run: dict[str, Any]) -> dict[str, bool]:
    """Scorer name -> higher is better, from the run's settings (default True)."""
    out: dict[str, bool] = {}
    for entry in (run.get("settings") or {}).get("scorers") or []:
        if isinstance(entry, dict) and "name" in entry:
            out[str(entry["name"])] = bool(entry.get("higher_is_better", True))
    return out


def _scores_by_scorer(items: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for item in items:
        if item["status"] != "ok":
            continue
        for name, score in (item.get("scores") or {}).items():
            out.setdefault(name, {})[item["item_key"]] = score
    return out


def failure_rate(items: list[dict[str, Any]]) -> float:
    """Share of items that failed."""
    return sum(1 for i in items if i["status"] != "ok") / len(items) if items else 0.0


def compare_runs(
    store: EvalStore, tenant: TenantScope, baseline_id: str, candidate_id: str, scorers: list[str] | None = None
) -> tuple[list[ScorerComparison], float, float, dict[str, Any]]:
    """Per-scorer comparisons, the two failure rates and a header describing the runs."""
    base_run, base_items = load_run(store, tenant, baseline_id)
    cand_run, cand_items = load_run(store, tenant, candidate_id)
    directions = {**scorer_directions(base_run), **scorer_directions(cand_run)}
    base_scores, cand_scores = _scores_by_scorer(base_items), _scores_by_scorer(cand_items)
    names = sorted(set(base_scores) & set(cand_scores))
    if scorers:
        names = [n for n in names if n in scorers]
    comparisons = []
    for name in names:
        if name == "length":
            continue  # informational: neither longer nor shorter is better
        result = compare_scores(name, base_scores[name], cand_scores[name], directions.get(name, True))
        if result is not None:
            comparisons.append(result)
    header = {
        "baseline": {"run": baseline_id, "model": base_run["model"], "dataset": base_run["dataset_id"]},
        "candidate": {"run": candidate_id, "model": cand_run["model"], "dataset": cand_run["dataset_id"]},
        "same_dataset": base_run["dataset_id"] == cand_run["dataset_id"],
    }
    return comparisons, failure_rate(base_items), failure_rate(cand_items), header


def gate_runs(
    store: EvalStore,
    tenant: TenantScope,
    baseline_id: str,
    candidate_id: str,
    max_degradation: float,
    scorers: list[str] | None = None,
) -> tuple[GateResult, dict[str, Any]]:
    """The gate over a comparison; runs on different datasets never pass."""
    comparisons, base_fail, cand_fail, header = compare_runs(store, tenant, baseline_id, candidate_id, scorers)
    result = gate(comparisons, max_degradation, base_fail, cand_fail)
    if not header["same_dataset"]:
        result.passed = False
        result.reasons.append("the runs used different dataset versions: items cannot be paired")
    return result, header
