"""Process logging: plain lines on stderr; request records are JSON on the ``opsgate.requests`` logger."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    """Set up stderr logging once per process (worker processes call it too)."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
