"""The overhead benchmark's records and report: one wrk run, a target, the Markdown tables and summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import median

# What the task set as the bar, and LiteLLM 1.110.2 (one worker, same setup) as reported to us.
TARGET_RPS = 3000.0
TARGET_ADDED_P50_MS = 1.0
REFERENCE_LITELLM = {"rps_at_8": 112.0, "p50_ms_at_1": 9.7}
TARGET_VS_BARE_PCT = 75.0  # opsgate's req/s as a % of a bare Starlette + aiohttp proxy's (--bare)


@dataclass
class WrkRun:
    """One measured wrk run."""

    target: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    proxy_cpu_pct: float | None
    other_load_pct: float  # CPU (% of one core) used by processes outside this benchmark during the run
    gc_pauses: int | None = None  # with --gc-probe: collections in the proxy during the run (all generations)
    gc_total_ms: float | None = None  # ... their summed pause
    gc_max_ms: float | None = None  # ... and the longest one
    # With the durable log on: journal bytes not yet stored when the run ended (the writer runs at
    # idle priority, so a saturated gateway leaves it behind), and how long it took to catch up.
    backlog_bytes: int | None = None
    catch_up_s: float | None = None


@dataclass
class Target:
    """Something wrk can be pointed at."""

    name: str
    url: str
    pid: int | None = None  # the proxy process whose CPU use is reported (None: direct)
    gc_probe: Path | None = None  # where bench/_gc_probe.py writes GC totals on SIGUSR1
    api_key: str | None = None  # the key wrk sends, when this target has auth on
    admin_key: str | None = None  # with auth on: the key /readyz shows the journal backlog to
    runs: list[WrkRun] = field(default_factory=list)


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for the table ('-' for none)."""
    return "-" if value is None else f"{value:,.{digits}f}"


def aggregate(runs: list[WrkRun]) -> WrkRun:
    """One row from several rounds: the median of each number (counts are summed)."""
    if len(runs) == 1:
        return runs[0]
    cpu = [r.proxy_cpu_pct for r in runs if r.proxy_cpu_pct is not None]
    return WrkRun(
        target=runs[0].target,
        connections=runs[0].connections,
        rps=median([r.rps for r in runs]),
        p50_ms=median([r.p50_ms for r in runs]),
        p90_ms=median([r.p90_ms for r in runs]),
        p99_ms=median([r.p99_ms for r in runs]),
        max_ms=max(r.max_ms for r in runs),
        requests=sum(r.requests for r in runs),
        non_2xx=sum(r.non_2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
        proxy_cpu_pct=median(cpu) if cpu else None,
        other_load_pct=median([r.other_load_pct for r in runs]),
        gc_pauses=None if runs[0].gc_pauses is None else sum(r.gc_pauses or 0 for r in runs),
        gc_total_ms=None if runs[0].gc_total_ms is None else sum(r.gc_total_ms or 0.0 for r in runs),
        gc_max_ms=None if runs[0].gc_max_ms is None else max(r.gc_max_ms or 0.0 for r in runs),
        backlog_bytes=None if runs[0].backlog_bytes is None else max(r.backlog_bytes or 0 for r in runs),
        catch_up_s=None if any(r.catch_up_s is None for r in runs) else max(r.catch_up_s or 0.0 for r in runs),
    )


def backlog_cell(run: WrkRun) -> str:
    """'backlog KiB / catch-up s' for a run with the durable log, '-' without."""
    if run.backlog_bytes is None:
        return "-"
    catch_up = "not within 120 s" if run.catch_up_s is None else f"{run.catch_up_s:.2f}"
    return f"{run.backlog_bytes / 1024:,.0f} / {catch_up}"


def report(targets: list[Target], connections: list[int]) -> tuple[str, dict[str, Any]]:
    """The Markdown tables and the summary numbers."""
    rows = {(t.name, c): aggregate([r for r in t.runs if r.connections == c]) for t in targets for c in connections}
    lines = [
        "| connections | target | req/s | p50 ms | p99 ms | non-2xx | socket errors | proxy CPU % | other load % "
        "| journal backlog after run KiB / catch-up s (worst round) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with_gc = any(r.gc_pauses is not None for r in rows.values())
    if with_gc:
        lines[0] += " GC pauses in proxy: count / total ms / longest ms |"
        lines[1] += "---:|"
    for c in connections:
        for t in targets:
            r = rows[(t.name, c)]
            gc_cell = (
                f" {r.gc_pauses} / {r.gc_total_ms:.0f} / {r.gc_max_ms:.1f} |"
                if r.gc_pauses is not None and r.gc_total_ms is not None and r.gc_max_ms is not None
                else " - |"
            )
            lines.append(
                f"| {c} | {t.name} | {fmt(r.rps, 0)} | {fmt(r.p50_ms, 3)} | {fmt(r.p99_ms, 3)} | {r.non_2xx} "
                f"| {r.socket_errors} | {fmt(r.proxy_cpu_pct, 0)} | {fmt(r.other_load_pct, 0)} | {backlog_cell(r)} |"
                + (gc_cell if with_gc else "")
            )
    summary: dict[str, Any] = {"per_proxy": {}}
    lines += [
        "",
        "| proxy | connections | added p50 ms (proxy - direct) | throughput ratio (proxy / direct) |",
        "|---|---:|---:|---:|",
    ]
    for t in targets:
        if t.name == "direct":
            continue
        per: dict[str, Any] = {}
        for c in connections:
            direct, proxied = rows[("direct", c)], rows[(t.name, c)]
            added = proxied.p50_ms - direct.p50_ms
            ratio = proxied.rps / direct.rps
            per[str(c)] = {
                "added_p50_ms": round(added, 3),
                "throughput_ratio": round(ratio, 4),
                "rps": round(proxied.rps, 1),
            }
            lines.append(f"| {t.name} | {c} | {added:.3f} | {ratio:.3f} |")
        summary["per_proxy"][t.name] = per
    checks = []
    for name, gw in summary["per_proxy"].items():
        if not name.startswith("opsgate"):
            continue
        if "1" in gw:
            ok = gw["1"]["added_p50_ms"] <= TARGET_ADDED_P50_MS
            checks.append(
                f"{name}: added p50 at 1 connection {gw['1']['added_p50_ms']:.3f} ms "
                f"(target ≤ {TARGET_ADDED_P50_MS:g} ms: {'met' if ok else 'NOT met'})"
            )
        high = [c for c in connections if 8 <= c <= 32]
        if high:
            worst = min(gw[str(c)]["rps"] for c in high)
            ok = worst >= TARGET_RPS
            checks.append(
                f"{name}: lowest req/s at 8-32 connections {worst:,.0f} "
                f"(target ≥ {TARGET_RPS:,.0f}: {'met' if ok else 'NOT met'})"
            )
    checks.append(
        f"reference LiteLLM 1.110.2 (reported): {REFERENCE_LITELLM['rps_at_8']:g} req/s at 8 connections, "
        f"{REFERENCE_LITELLM['p50_ms_at_1']:g} ms p50 at 1 connection"
    )
    summary["checks"] = checks
    lines += [""] + [f"- {c}" for c in checks]
    if any(t.name == "bare" for t in targets):
        bare_lines, summary["vs_bare"] = vs_bare(targets, connections, rows)
        lines += ["", *bare_lines]
    names = {t.name for t in targets}
    pairs = [(a, b) for a, b in (("opsgate-nostore", "baseline-nostore"), ("opsgate", "baseline")) if {a, b} <= names]
    if pairs:
        base_lines, summary["vs_baseline"] = vs_baseline(targets, connections, pairs)
        lines += ["", *base_lines]
    return "\n".join(lines), summary


def vs_bare(
    targets: list[Target], connections: list[int], rows: dict[tuple[str, int], WrkRun]
) -> tuple[list[str], dict[str, Any]]:
    """Each opsgate's req/s as a % of the bare proxy's: median over rounds, and round by round.

    Each round runs the targets back to back, so a round's own ratio is the least touched by a busy
    neighbour; both are shown.
    """
    bare = next(t for t in targets if t.name == "bare")
    lines = [
        f"| proxy | connections | req/s | bare req/s | % of bare (medians) | % of bare per round "
        f"(target ≥ {TARGET_VS_BARE_PCT:g}%) | CPU per request / bare's, per round | median |",
        "|---|---:|---:|---:|---:|---|---|---:|",
    ]
    out: dict[str, Any] = {}
    for t in targets:
        if not t.name.startswith(("opsgate", "baseline")):
            continue
        per: dict[str, Any] = {}
        for c in connections:
            pct = rows[(t.name, c)].rps / rows[("bare", c)].rps * 100.0
            mine = [r.rps for r in t.runs if r.connections == c]
            base = [r.rps for r in bare.runs if r.connections == c]
            rounds = [a / b * 100.0 for a, b in zip(mine, base, strict=True)]
            cpu = cpu_ratios([r for r in t.runs if r.connections == c], [r for r in bare.runs if r.connections == c])
            per[str(c)] = {
                "pct_of_bare": round(pct, 1),
                "pct_of_bare_per_round": [round(x, 1) for x in rounds],
                "median_of_round_pcts": round(median(rounds), 1),
                "cpu_per_request_vs_bare_per_round": [round(x, 3) for x in cpu],
                "cpu_per_request_vs_bare_median": round(median(cpu), 3) if cpu else None,
            }
            lines.append(
                f"| {t.name} | {c} | {fmt(rows[(t.name, c)].rps, 0)} | {fmt(rows[('bare', c)].rps, 0)} "
                f"| {pct:.1f}% {'met' if pct >= TARGET_VS_BARE_PCT else 'NOT met'} "
                f"| {' / '.join(f'{x:.1f}' for x in rounds)} "
                f"| {' / '.join(f'{x:.2f}' for x in cpu) or '-'} | {f'{median(cpu):.2f}x' if cpu else '-'} |"
            )
        out[t.name] = per
    return lines, out


def vs_baseline(
    targets: list[Target], connections: list[int], pairs: list[tuple[str, str]]
) -> tuple[list[str], dict[str, Any]]:
    """This tree's req/s and p99 over the baseline checkout's (``--baseline-src``), same settings, per round.

    The two run back to back in every round, so the per-round ratio is the one a busy machine
    disturbs least; the median of those is the headline.
    """
    by_name = {t.name: t for t in targets}
    lines = [
        "| this tree / baseline | connections | req/s ratio per round | median | p99 ratio per round | median "
        "| CPU per request ratio per round | median |",
        "|---|---:|---|---:|---|---:|---|---:|",
    ]
    out: dict[str, Any] = {}
    for mine_name, base_name in pairs:
        mine, base = by_name[mine_name], by_name[base_name]
        per: dict[str, Any] = {}
        for c in connections:
            a = [r for r in mine.runs if r.connections == c]
            b = [r for r in base.runs if r.connections == c]
            rps = [x.rps / y.rps for x, y in zip(a, b, strict=True)]
            p99 = [x.p99_ms / y.p99_ms for x, y in zip(a, b, strict=True)]
            cpu = cpu_ratios(a, b)
            per[str(c)] = {
                "rps_ratio_per_round": [round(x, 3) for x in rps],
                "rps_ratio_median": round(median(rps), 3),
                "p99_ratio_per_round": [round(x, 3) for x in p99],
                "p99_ratio_median": round(median(p99), 3),
                "cpu_per_request_ratio_per_round": [round(x, 3) for x in cpu],
                "cpu_per_request_ratio_median": round(median(cpu), 3) if cpu else None,
            }
            lines.append(
                f"| {mine_name} / {base_name} | {c} | {' / '.join(f'{x:.2f}' for x in rps)} | {median(rps):.2f} "
                f"| {' / '.join(f'{x:.2f}' for x in p99)} | {median(p99):.2f} "
                f"| {' / '.join(f'{x:.3f}' for x in cpu) or '-'} | {f'{median(cpu):.3f}' if cpu else '-'} |"
            )
        out[f"{mine_name}/{base_name}"] = per
    return lines, out


def cpu_ratios(mine: list[WrkRun], base: list[WrkRun]) -> list[float]:
    """Round by round, ``mine``'s proxy CPU per request over ``base``'s (CPU % / req/s); empty without CPU figures.

    On a shared machine this is steadier than the req/s ratio: a neighbour taking the core lowers both
    the proxy's req/s and its CPU %, not what each request costs.
    """
    out: list[float] = []
    for x, y in zip(mine, base, strict=True):
        if not (x.proxy_cpu_pct and y.proxy_cpu_pct and x.rps and y.rps):
            return []
        out.append((x.proxy_cpu_pct / x.rps) / (y.proxy_cpu_pct / y.rps))
    return out
