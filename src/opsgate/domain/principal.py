"""Who is calling: the principal an API key resolves to, shared by every stage and admin route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from opsgate.domain.reliability_config import LimitRule

Role = Literal["admin", "developer", "viewer", "service"]
ROLES: tuple[Role, ...] = ("admin", "developer", "viewer", "service")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``tenant`` None means the operator: a key that sees every tenant (the bootstrap admin key, or
    every caller when auth is off). A tenant's keys see only that tenant's data.
    """

    key_id: str | None
    tenant: str | None
    role: Role
    name: str = ""
    # Model aliases this key may call; None allows every alias.
    models: tuple[str, ...] | None = None
    # The key's own rate limits and budgets (a ``per: key`` rule), enforced by the limits stage.
    limits: LimitRule | None = None
    # The key id those limits are counted under: the first key of its rotations (None: its own id).
    limit_counter: str | None = None
    # The limits of the limited keys that minted this one, each with the key id it is counted under: its
    # requests count against them too, so keys minted by a budget-limited key share that budget.
    inherited_limits: tuple[tuple[str, LimitRule], ...] = ()

    @property
    def is_operator(self) -> bool:
        """Whether this caller sees every tenant."""
        return self.tenant is None

    def can_read_tenant(self, tenant: str | None) -> bool:
        """Whether data belonging to ``tenant`` may be shown to this caller."""
        return self.tenant is None or self.tenant == tenant

    def allows_model(self, alias: str) -> bool:
        """Whether this key may call ``alias``."""
        return self.models is None or alias in self.models


# Every caller when auth is off (local use only: the gateway says so loudly at start and in /readyz).
ANONYMOUS_OPERATOR = Principal(key_id=None, tenant=None, role="admin", name="auth-disabled")
