"""Which messages each reversible placeholder came from, so that only the end user's own values come back.

The input PII scanner mints ``<EMAIL_1>`` for every value it hides, from any message. Restoring all of
them in the answer handed the client values it never gave: a system prompt's operator data, a tool
message's record of another person — whenever the model echoed a placeholder or the client typed one
(probe-guard finding 4). ``RoleVault`` notes the role of the message each placeholder was minted from
(the engine sets ``context.role`` before each text); ``restorable`` is the vault of the placeholders
with a value from one of the policy's ``restore_roles`` (default: user) — the only ones put back.
"""

from __future__ import annotations

from collections.abc import Iterable

from opsgate.domain.guard_config import PiiScannerConfig
from opsgate.guard.base import ScanContext, Vault
from opsgate.guard.engine import Policy


class RoleVault(Vault):
    """A request's vault that remembers the roles each placeholder's value was found in."""

    def __init__(self, context: ScanContext) -> None:
        super().__init__()
        self._context = context
        self.roles: dict[str, set[str]] = {}

    def placeholder(self, kind: str, value: str) -> str:
        """The placeholder for ``value``, noted as found in the message now being scanned."""
        token = super().placeholder(kind, value)
        self.roles.setdefault(token, set()).add(self._context.role or "")
        return token

    def restorable(self, roles: Iterable[str]) -> Vault:
        """A vault of only the placeholders whose value was found in a message of one of ``roles``."""
        wanted = frozenset(roles)
        out = Vault()
        out.originals = {
            token: value for token, value in self.originals.items() if self.roles.get(token, set()) & wanted
        }
        return out


def restore_roles(policy: Policy) -> list[str]:
    """The roles whose values the reversible input PII scanner gives back (its ``restore_roles``)."""
    for entry in policy.input:
        if isinstance(entry.config, PiiScannerConfig) and entry.config.reversible:
            return list(entry.config.restore_roles)
    return []
