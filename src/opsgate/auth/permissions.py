"""What each role may do. Roles are per tenant; an operator key (tenant None) acts across tenants."""

from __future__ import annotations

from typing import Literal

from opsgate.domain.principal import Principal, Role

Permission = Literal["inference", "read", "export", "write", "manage_keys", "audit"]

GRANTS: dict[Role, frozenset[Permission]] = {
    "admin": frozenset({"inference", "read", "export", "write", "manage_keys", "audit"}),
    "developer": frozenset({"inference", "read", "export"}),
    "viewer": frozenset({"read"}),
    # Applications: call models, nothing else.
    "service": frozenset({"inference"}),
}


def allows(principal: Principal, permission: Permission) -> bool:
    """Whether ``principal``'s role grants ``permission``.

    The audit log spans tenants (key changes, erasures, config), so only an operator admin reads it.
    """
    if permission == "audit" and not principal.is_operator:
        return False
    return permission in GRANTS[principal.role]


def admin_permission(method: str, path: str) -> Permission:
    """The permission an ``/admin``, ``/ui`` or other non-inference route needs.

    Decided by path, not per handler, so a route added later is protected by default: reads need
    ``read``, anything that changes state needs ``write``.
    """
    if path.startswith("/admin/keys"):
        return "manage_keys"
    if path.startswith("/admin/audit"):
        return "audit"
    if path.startswith("/admin/requests/export"):
        return "export"
    if path.startswith("/v1/"):
        return "inference"  # /v1/models, /v1/feedback: what an application does
    if method in ("GET", "HEAD") or path.startswith("/ui"):
        return "read"
    return "write"
