"""Red-team a gateway's guards: send attack and benign suites, report recall and false positives."""

from opsgate.redteam.report import GroupStats, Report, Thresholds, render_table, summarise
from opsgate.redteam.runner import CaseResult, RunSettings, make_client, run_case, run_suite
from opsgate.redteam.stats import Proportion, wilson_interval
from opsgate.redteam.suite import Case, Suite, SuiteError, load_suite, parse_suite

__all__ = [
    "Case",
    "CaseResult",
    "GroupStats",
    "Proportion",
    "Report",
    "RunSettings",
    "Suite",
    "SuiteError",
    "Thresholds",
    "load_suite",
    "make_client",
    "parse_suite",
    "render_table",
    "run_case",
    "run_suite",
    "summarise",
    "wilson_interval",
]
