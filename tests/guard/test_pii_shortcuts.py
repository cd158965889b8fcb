"""The PII scanner's shortcuts (numpy start places, skipped windows, literal tables, anchor groups) find what
the plain scans they replace find, on generated texts built to reach their edge cases.

The checks live in ``bench/pii_shortcuts.py`` (run there at full size: ``--scale 1``); here a tenth of
their texts, under two seeds, so a change that breaks a shortcut fails the suite, not only the tool.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "bench" / "pii_shortcuts.py"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pii_shortcuts", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHORTCUTS = _tool()
CHECKS = {
    "literals": (SHORTCUTS.check_literals, 300),
    "identifiers": (SHORTCUTS.check_identifiers, 150),
    "addresses": (SHORTCUTS.check_addresses, 30),
    "forms": (SHORTCUTS.check_forms, 15),
    "anchor_group": (SHORTCUTS.check_anchor_group, 100),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_a_shortcut_finds_what_the_plain_scan_finds(name: str, seed: int) -> None:
    check, count = CHECKS[name]
    check(random.Random(seed * 7919 + len(name)), count)  # raises AssertionError on the first difference
