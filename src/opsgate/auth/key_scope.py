"""A key that a tenant's key creates, rotates or revokes is never broader than the calling key.

The operator may restrict a tenant admin's own key (model aliases, limits, expiry). Without this
bound that admin could mint or rotate into an unrestricted key and step out of the restrictions.
Operator keys (no tenant) are not bounded.

A field the request leaves out inherits the caller's restriction, so a restricted admin's keys are
restricted the same way (a ``limits`` object inherits each dimension it does not name). A field set
broader, ``null`` ("no restriction") included, is a 403 ``key_broader_than_caller`` naming it.
Revocation only takes power away, so it is bounded by role: a tenant key may revoke any key of its
tenant whose role grants strictly less than its own (a viewer, service or developer key, whatever
its models, limits or expiry). A key with the same role (another admin) it may revoke only when that
key is no broader than itself, so a restricted tenant admin cannot cut off the unrestricted admin the
operator made (or lock out whoever restricted it). A key whose role grants more is refused (``role``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from opsgate.auth.key_store import MAX_LIMIT_CHAIN, KeyInfo, KeySpec, KeyStore
from opsgate.auth.permissions import GRANTS
from opsgate.domain.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from opsgate.domain.principal import Principal

BROADER = "key_broader_than_caller"
LIMIT_DIMENSIONS = ("requests_per_minute", "tokens_per_minute", "concurrent", "spend_per_day", "spend_per_month")
# Every field given: nothing is inherited, everything is compared (a rotation copies a whole key).
ALL_FIELDS = frozenset({"role", "models", "limits", "expires_at"})


def caller_key(keys: KeyStore, principal: Principal) -> KeyInfo:
    """The calling tenant key as the store holds it now (not the auth cache's copy of up to a TTL ago)."""
    info = keys.get(principal.key_id, principal.tenant) if principal.key_id else None
    if info is None or info.state() != "active":
        raise AuthenticationError("Invalid API key (unknown, expired or revoked).", code="invalid_api_key")
    return info


def check_revocation(keys: KeyStore, principal: Principal, key_id: str) -> None:
    """A tenant key may revoke a key of its tenant with a lesser role, or an equal role no broader (403 otherwise)."""
    target = keys.require(key_id, principal.tenant)  # another tenant's key: 404, as before
    if target.state() != "active":  # revoking a revoked or expired key changes nothing
        return
    caller = caller_key(keys, principal)
    if target.key_id == caller.key_id or GRANTS[target.role] < GRANTS[caller.role]:
        return  # itself, or a lesser role: taking that power away never widens the caller's
    bound_by_caller(target.spec(), caller, subject=f"Key '{key_id}'")  # same role: scope must be no broader


def bound_by_caller(
    spec: KeySpec,
    caller: KeyInfo,
    given: Collection[str] = ALL_FIELDS,
    *,
    subject: str = "The new key",
    expiry_param: str = "expires_at",
) -> KeySpec:
    """``spec`` with ``caller``'s restrictions on the fields not in ``given``; 403 where it is broader."""
    if not GRANTS[spec.role] <= GRANTS[caller.role]:
        raise _broader(
            f"{subject} would have role '{spec.role}', which grants more than your key's '{caller.role}'.", "role"
        )
    models = _models(spec.models, caller.models, "models" in given, subject)
    limits = _limits(spec.limits, caller.limits, "limits" in given, subject)
    expires_at = _expiry(spec.expires_at, caller.expires_at, "expires_at" in given, subject, expiry_param)
    if (models, limits, expires_at) == (spec.models, spec.limits, spec.expires_at):
        return spec
    return replace(spec, models=models, limits=limits, expires_at=expires_at)


def counted_against_caller(spec: KeySpec, caller: KeyInfo) -> KeySpec:
    """``spec``, its requests also counted against ``caller``'s limits and those of the keys above it.

    Bounding each limit of a minted key by the caller's is not enough: every minted key would get a budget
    of its own, so a budget-limited admin could mint keys (or rotate into fresh counters) and spend its
    budget many times over (probe-g G4). A minted key's requests reserve on its own counters and on each
    limited key above it, so the budget is shared by all of them.
    """
    chain = caller.chain_for_minted()
    if not chain:
        return spec
    if len(chain) > MAX_LIMIT_CHAIN:
        raise InvalidRequestError(
            f"Your key is already limited by {len(chain)} keys above it (at most {MAX_LIMIT_CHAIN}); create this key "
            "with a key higher up.",
            code="limit_chain_too_deep",
        )
    return replace(spec, limit_chain=chain)


def _broader(message: str, param: str) -> PermissionDeniedError:
    return PermissionDeniedError(message, param=param, code=BROADER)


def _models(
    wanted: tuple[str, ...] | None, allowed: tuple[str, ...] | None, given: bool, subject: str
) -> tuple[str, ...] | None:
    if allowed is None:
        return wanted
    if not given:
        return allowed
    if wanted is None:
        raise _broader(f"{subject} would allow every model; your key allows only: {', '.join(allowed)}.", "models")
    extra = [m for m in wanted if m not in allowed]
    if extra:
        raise _broader(f"{subject} would allow model '{extra[0]}', which your key does not.", "models")
    return wanted


def _limits(
    wanted: dict[str, Any] | None, caller: dict[str, Any] | None, given: bool, subject: str
) -> dict[str, Any] | None:
    bounds = {name: caller[name] for name in LIMIT_DIMENSIONS if caller and caller.get(name) is not None}
    if not bounds:
        return wanted
    if not given:
        return bounds
    if wanted is None:
        raise _broader(f"{subject} would have no limits; your key has {_describe(bounds)}.", "limits")
    merged = dict(wanted)
    for name, bound in bounds.items():
        if name not in wanted:
            merged[name] = bound  # a dimension left out inherits the caller's
        elif wanted[name] is None or wanted[name] > bound:
            shown = "no limit" if wanted[name] is None else wanted[name]
            raise _broader(f"{subject} would have {name} {shown}; your key's is {bound}.", "limits")
    return merged


def _expiry(wanted: float | None, caller: float | None, given: bool, subject: str, param: str) -> float | None:
    if caller is None:
        return wanted
    if not given:
        return caller
    if wanted is None or wanted > caller:
        when = "never expire" if wanted is None else f"expire at {wanted:.0f}"
        raise _broader(f"{subject} would {when}; your key expires at {caller:.0f} (epoch seconds).", param)
    return wanted


def _describe(limits: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in limits.items())
