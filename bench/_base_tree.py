"""Another commit's ``opsgate`` imported beside this tree's, for side-by-side benchmarks in one process.

    git archive 7ee9d11^ src | tar -x -C /tmp/base    # the tree to compare with: --base /tmp/base/src
    ... --base-ref 7ee9d11^                            # or let the script unpack it into a temporary folder

``import_tree(src, names)`` imports ``opsgate.<name>`` for each name from ``src`` (the earlier tree first, as
``bench/pii_ab.py`` does), then takes every ``opsgate`` module out of ``sys.modules``: the returned modules
keep their own objects, and the next import of ``opsgate`` finds this tree's. Each side runs its own code
top to bottom (config classes, models, helpers), so a ratio shows what changed between the two commits.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def unpack(ref: str) -> Path:
    """``git archive REF src`` unpacked into a temporary folder (removed at exit); returns its ``src``."""
    folder = Path(tempfile.mkdtemp(prefix="opsgate-base-"))
    atexit.register(shutil.rmtree, folder, True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def base_src(base: Path | None, base_ref: str | None, default_ref: str) -> tuple[Path, str]:
    """The earlier tree's ``src`` and a label for it: ``--base`` if given, else ``--base-ref`` (or the default)."""
    if base is not None:
        return base, str(base)
    ref = base_ref or default_ref
    return unpack(ref), ref


def _forget_opsgate() -> None:
    for name in [name for name in sys.modules if name == "opsgate" or name.startswith("opsgate.")]:
        del sys.modules[name]


def import_tree(src: Path, names: Iterable[str]) -> dict[str, ModuleType]:
    """``opsgate.<name>`` for each name, imported from ``src``; ``sys.modules`` left without any ``opsgate``."""
    _forget_opsgate()
    sys.path.insert(0, str(src))
    try:
        modules = {name: importlib.import_module(f"opsgate.{name}") for name in names}
        for module in modules.values():
            where = Path(module.__file__ or "").resolve()
            if not where.is_relative_to(src.resolve()):
                raise RuntimeError(f"{module.__name__} came from {where}, not {src}")
    finally:
        sys.path.remove(str(src))
        _forget_opsgate()
    return modules
