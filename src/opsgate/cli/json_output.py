"""Where a command's JSON document goes: ``--json`` is a flag (stdout), a file is ``-o/--output FILE``.

One rule for every command that writes a JSON report (issue 17, "Consistent CLI"): ``--json`` never
takes a value, so ``--json report.json`` is refused rather than read two ways.
"""

from __future__ import annotations


def json_destination(as_json: bool, output: str | None) -> str | None:
    """The path to write the JSON document to (``-``: stdout), or None when none was asked for."""
    if output:
        return output
    return "-" if as_json else None
