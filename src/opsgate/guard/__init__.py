"""Guardrails: scanners over a request's input and its answer, and the policy engine that runs them.

The stage that puts them on the request path is ``opsgate.pipeline.guard``; configuration is
``opsgate.domain.guard_config``.
"""

from opsgate.guard.base import ScanContext, Scanner, ScanResult, Vault
from opsgate.guard.engine import GuardBlocked, GuardEngine, build_scanner

__all__ = ["GuardBlocked", "GuardEngine", "ScanContext", "ScanResult", "Scanner", "Vault", "build_scanner"]
