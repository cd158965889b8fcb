"""Two-sample tests of one feature, each with a p-value, an effect size and a sentence.

Categoricals: chi-square on the contingency table (scipy), effect = total variation distance.
Numeric (lengths): chi-square on the fixed log-bins (adjacent sparse bins merged so every expected
count is large enough for the approximation), effect = relative change of the exact mean.
Rates: two-proportion z test (statsmodels), effect = absolute change.
Embeddings: squared MMD (RBF kernel, median-distance bandwidth) with a permutation test
(scipy.stats.permutation_test), effect = the unbiased MMD² itself.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps
from statsmodels.stats.proportion import proportions_ztest

from opsgate.drift.summary import Histogram

TestResult = dict[str, Any]
MIN_EXPECTED = 5.0  # chi-square's rule of thumb for every cell's expected count
TOP_CATEGORIES = 12  # categories shown in a distribution; the rest are "other"


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}%"


def _distribution(counts: Counter[str], total: int, keep: list[str]) -> dict[str, float]:
    if total <= 0:
        return {}
    out = {name: round(counts.get(name, 0) / total, 6) for name in keep}
    rest = total - sum(counts.get(name, 0) for name in keep)
    if rest > 0:
        out["other"] = round(out.get("other", 0.0) + rest / total, 6)
    return out


def _fold_rare(ref: list[float], cur: list[float]) -> tuple[list[float], list[float]]:
    """Fold cells whose expected counts are below MIN_EXPECTED together (pooled order), as chi-square needs."""
    n_ref, n_cur = sum(ref), sum(cur)
    total = n_ref + n_cur
    keep_ref, keep_cur, rare_ref, rare_cur = [], [], 0.0, 0.0
    for r, c in zip(ref, cur, strict=True):
        pooled = r + c
        if pooled * min(n_ref, n_cur) / total >= MIN_EXPECTED:
            keep_ref.append(r)
            keep_cur.append(c)
        else:
            rare_ref += r
            rare_cur += c
    if rare_ref + rare_cur > 0:
        keep_ref.append(rare_ref)
        keep_cur.append(rare_cur)
    return keep_ref, keep_cur


def _chi2(ref: list[float], cur: list[float]) -> tuple[float, float] | None:
    if len(ref) < 2 or sum(ref) <= 0 or sum(cur) <= 0:
        return None
    table = np.array([ref, cur], dtype=np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return None
    result = sps.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def categorical_test(
    feature: str, label: str, side: str, ref: Counter[str], cur: Counter[str], noun: str
) -> TestResult | None:
    """Chi-square on the shares of each category; None when there is nothing to compare."""
    n_ref, n_cur = sum(ref.values()), sum(cur.values())
    names = sorted(set(ref) | set(cur), key=lambda n: -(ref.get(n, 0) + cur.get(n, 0)))
    if n_ref <= 0 or n_cur <= 0 or len(names) < 2:
        return None
    refs = [float(ref.get(n, 0)) for n in names]
    curs = [float(cur.get(n, 0)) for n in names]
    tested = _chi2(*_fold_rare(refs, curs))
    if tested is None:
        return None
    shares = {n: (ref.get(n, 0) / n_ref, cur.get(n, 0) / n_cur) for n in names}
    tv = 0.5 * sum(abs(a - b) for a, b in shares.values())
    # Name the category that grew most: "share of 'de' prompts 2% → 31%" says more than "'en' 98% → 69%".
    moved = max(names, key=lambda n: shares[n][1] - shares[n][0])
    before, after = shares[moved]
    keep = names[:TOP_CATEGORIES]
    if moved not in keep:
        keep.append(moved)
    return {
        "feature": feature,
        "label": label,
        "side": side,
        "kind": "categorical",
        "test": "chi2",
        "statistic": tested[0],
        "p_value": tested[1],
        "effect": tv,
        "effect_name": "total variation distance",
        "summary": f"share of '{moved}' {noun} {_pct(before)} → {_pct(after)}",
        "reference_distribution": _distribution(ref, n_ref, keep),
        "current_distribution": _distribution(cur, n_cur, keep),
        "reference_stats": None,
        "current_stats": None,
    }


def numeric_test(feature: str, label: str, side: str, ref: Histogram, cur: Histogram, noun: str) -> TestResult | None:
    """Chi-square on the log-binned counts; the effect is the relative change of the mean."""
    if ref.count <= 0 or cur.count <= 0:
        return None
    bins = sorted(set(ref.bins) | set(cur.bins))
    refs = [float(ref.bins.get(b, 0)) for b in bins]
    curs = [float(cur.bins.get(b, 0)) for b in bins]
    tested = _chi2(*_merge_adjacent(refs, curs))
    if tested is None:
        tested = (0.0, 1.0)  # one bin holds everything in both windows: nothing moved
    before, after = ref.mean(), cur.mean()
    change = (after - before) / max(before, 1.0)
    sign = "+" if change >= 0 else "\u2212"  # a real minus sign, as typeset
    return {
        "feature": feature,
        "label": label,
        "side": side,
        "kind": "numeric",
        "test": "chi2_binned",
        "statistic": tested[0],
        "p_value": tested[1],
        "effect": abs(change),
        "effect_name": "relative change of the mean",
        "summary": f"mean {noun} {sign}{abs(change) * 100:.0f}% ({before:,.0f} → {after:,.0f} characters)",
        "reference_distribution": None,
        "current_distribution": None,
        "reference_stats": ref.stats(),
        "current_stats": cur.stats(),
    }


def _merge_adjacent(ref: list[float], cur: list[float]) -> tuple[list[float], list[float]]:
    """Merge neighbouring bins (they are ordered) until each has enough expected counts."""
    n_ref, n_cur = sum(ref), sum(cur)
    total = n_ref + n_cur
    need = MIN_EXPECTED * total / max(min(n_ref, n_cur), 1.0)  # pooled count giving expected >= 5
    out_ref: list[float] = []
    out_cur: list[float] = []
    acc_r = acc_c = 0.0
    for r, c in zip(ref, cur, strict=True):
        acc_r += r
        acc_c += c
        if acc_r + acc_c >= need:
            out_ref.append(acc_r)
            out_cur.append(acc_c)
            acc_r = acc_c = 0.0
    if acc_r + acc_c > 0:
        if out_ref:
            out_ref[-1] += acc_r
            out_cur[-1] += acc_c
        else:
            out_ref.append(acc_r)
            out_cur.append(acc_c)
    return out_ref, out_cur


def rate_test(
    feature: str, label: str, side: str, ref: tuple[int, int], cur: tuple[int, int], what: str
) -> TestResult | None:
    """Two-proportion z test of ``hits / total`` between the windows; the effect is the change in points."""
    (hits_ref, n_ref), (hits_cur, n_cur) = ref, cur
    if n_ref <= 0 or n_cur <= 0 or hits_ref + hits_cur == 0:
        return None
    before, after = hits_ref / n_ref, hits_cur / n_cur
    if hits_ref + hits_cur == n_ref + n_cur:
        statistic, p_value = 0.0, 1.0  # every request in both windows: no variance, nothing moved
    else:
        z, p = proportions_ztest([hits_cur, hits_ref], [n_cur, n_ref])
        statistic, p_value = float(z), float(p)
    return {
        "feature": feature,
        "label": label,
        "side": side,
        "kind": "rate",
        "test": "two_proportion_z",
        "statistic": statistic,
        "p_value": p_value,
        "effect": abs(after - before),
        "effect_name": "absolute change of the rate",
        "summary": f"{what} {_pct(before)} → {_pct(after)}",
        "reference_distribution": {"yes": round(before, 6), "no": round(1 - before, 6)},
        "current_distribution": {"yes": round(after, 6), "no": round(1 - after, 6)},
        "reference_stats": None,
        "current_stats": None,
    }


def _rbf_kernel(x: NDArray[np.float32], y: NDArray[np.float32]) -> NDArray[np.float64]:
    pooled = np.concatenate([x, y]).astype(np.float64)
    sq = np.sum(pooled * pooled, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off = d2[~np.eye(len(pooled), dtype=bool)]
    bandwidth = float(np.median(off)) if off.size else 1.0
    kernel: NDArray[np.float64] = np.exp(-d2 / max(bandwidth, 1e-12))
    return kernel


def _mmd_from_masks(kernel: NDArray[np.float64], masks: NDArray[np.float64], n_x: int, n_y: int) -> Any:
    """Unbiased MMD² for each row of ``masks`` (1 = sample x), with the kernel's diagonal zeroed."""
    km = masks @ kernel  # (batch, n)
    xx = np.einsum("bn,bn->b", km, masks)
    col = kernel.sum(axis=0)
    ky = col[None, :] - km  # rows of (1 - mask) @ kernel, kernel symmetric
    xy = np.einsum("bn,bn->b", ky, masks)
    yy = kernel.sum() - 2.0 * xy - xx
    return xx / (n_x * (n_x - 1)) + yy / (n_y * (n_y - 1)) - 2.0 * xy / (n_x * n_y)


def mmd_test(
    x: NDArray[np.float32], y: NDArray[np.float32], permutations: int, seed: int = 0
) -> tuple[float, float, int]:
    """Unbiased MMD² of two samples and its permutation p-value (scipy), with the permutations used."""
    n_x, n_y = len(x), len(y)
    kernel = _rbf_kernel(x, y)
    np.fill_diagonal(kernel, 0.0)
    n = n_x + n_y

    def statistic(a: NDArray[np.float64], b: NDArray[np.float64], axis: int = -1) -> Any:
        index = np.asarray(a, dtype=np.int64).reshape(-1, n_x)
        masks = np.zeros((index.shape[0], n), dtype=np.float64)
        np.put_along_axis(masks, index, 1.0, axis=1)
        values = _mmd_from_masks(kernel, masks, n_x, n_y)
        return values.reshape(np.shape(a)[:-1]) if np.ndim(a) > 1 else np.float64(values[0])

    result = sps.permutation_test(
        (np.arange(n_x, dtype=np.float64), np.arange(n_x, n, dtype=np.float64)),
        statistic,
        permutation_type="independent",
        vectorized=True,
        n_resamples=permutations,
        alternative="greater",
        batch=max(1, min(permutations, 2_000_000 // max(n, 1))),
        random_state=np.random.default_rng(seed),
    )
    return float(result.statistic), float(result.pvalue), permutations


def embedding_test(
    feature: str, label: str, side: str, x: NDArray[np.float32], y: NDArray[np.float32], permutations: int, noun: str
) -> TestResult:
    """MMD permutation test between reference ``x`` and current ``y`` embeddings."""
    mmd, p_value, used = mmd_test(x, y, permutations)
    shown = f"p={p_value:.2g}" if p_value >= 1.0 / (used + 1) + 1e-12 else f"p≤{1.0 / (used + 1):.1g}"
    return {
        "feature": feature,
        "label": label,
        "side": side,
        "kind": "embedding",
        "test": "mmd_permutation",
        "statistic": mmd,
        "p_value": p_value,
        "effect": max(mmd, 0.0),
        "effect_name": "squared MMD (RBF kernel)",
        "summary": f"{noun} moved in embedding space (MMD² {max(mmd, 0.0):.3f}, {shown}, {len(x)} vs {len(y)} samples)",
        "reference_distribution": None,
        "current_distribution": None,
        "reference_stats": {"samples": float(len(x))},
        "current_stats": {"samples": float(len(y))},
        "permutations": used,
    }


def permutations_for(tests: int, alpha: float, most: int) -> int:
    """Enough permutations that the smallest p-value can pass Holm's first step (alpha / tests), twice over."""
    return int(min(most, max(199, math.ceil(2.0 * max(tests, 1) / alpha))))
