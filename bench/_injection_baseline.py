"""The injection scanner's code at another commit, importable beside this tree's, on this tree's model file.

``load(ref)`` copies the scanner's modules as they are at ``ref`` (``git show``) into a temporary
package, with the lexicon and patterns of this tree (not the scanner's code: both sides read the
same ones) and this tree's ``injection_model.npz``, and rewrites their ``opsgate.guard.*`` imports
to it. Old and new code then run in one process, side by side, on the same model and data, so a
comparison shows what the code change did and nothing else (a retrained model or corpus is on both
sides alike). Used by ``bench/injection_speed.py`` and ``bench/injection_parity.py``.
"""

from __future__ import annotations

import atexit
import importlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
GUARD = ROOT / "src" / "opsgate" / "guard"
# The scanner's code, taken at the baseline commit.
CODE = (
    "injection",
    "injection_model",
    "injection_arrays",
    "injection_signals",
    "injection_decoders",
    "injection_agent",
    "linear_re",
)
# Read by the scanner but not its code: this tree's copies on both sides.
SHARED = ("injection_lexicon", "injection_patterns")


def load(ref: str) -> tuple[ModuleType, ModuleType]:
    """(``injection``, ``injection_model``) as at ``ref``, with this tree's lexicon, patterns and model file."""
    package = f"injection_at_{re.sub(r'[^0-9A-Za-z]', '_', ref)}"
    if package not in sys.modules:
        scratch = tempfile.mkdtemp(prefix="opsgate-baseline-")
        atexit.register(shutil.rmtree, scratch, True)
        folder = Path(scratch) / package
        (folder / "data").mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        shutil.copy(GUARD / "data" / "injection_model.npz", folder / "data" / "injection_model.npz")
        names = "|".join(CODE + SHARED)
        at_ref = {name: _at(ref, name) for name in CODE}
        shared: tuple[str, ...] = SHARED
        if _lacks_gates(at_ref["injection_signals"]):
            # A ref from before a signal was added has no gate for it: the gates are rules (data), so this
            # tree's injection_signals is on both sides (its code is then not compared).
            shared = (*SHARED, "injection_signals")
        for name in CODE + SHARED:
            source = at_ref[name] if name not in shared else (GUARD / f"{name}.py").read_text()
            (folder / f"{name}.py").write_text(re.sub(rf"\bopsgate\.guard\.({names})\b", rf"{package}.\1", source))
        sys.path.insert(0, str(folder.parent))
    return importlib.import_module(f"{package}.injection"), importlib.import_module(f"{package}.injection_model")


def _at(ref: str, name: str) -> str:
    """The guard module ``name``'s source at ``ref`` (this tree's where the ref has no such module yet)."""
    command = ["git", "-C", str(ROOT), "show", f"{ref}:src/opsgate/guard/{name}.py"]
    shown = subprocess.run(command, capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else (GUARD / f"{name}.py").read_text()


def _lacks_gates(signals_source: str) -> bool:
    """Whether an injection_signals source has no gate for one of this tree's signals."""
    from opsgate.guard.injection_patterns import SIGNALS

    return any(f'"{signal.name}"' not in signals_source for signal in SIGNALS)
