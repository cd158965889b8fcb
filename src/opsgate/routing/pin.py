"""``x-opsgate-pin-deployment: <label>``: send a call to one deployment of its alias, for operators only.

The sentinel (``drift/sentinel_runner.py``) must ask every deployment of an alias the same golden
prompts, which the balancer cannot promise. A pinned call goes to that deployment alone: no retry,
no fallback alias, no release weights (it is a probe of that deployment, and an answer from another
would be compared with the wrong baseline). Its failures count toward the deployment's breaker like
any call's — a pinned call that fails is a real upstream failure — and an open breaker refuses it.

Only an operator admin (a key bound to no tenant, role ``admin``; every caller when auth is off)
may pin: anyone else gets a 403 ``pin_not_allowed`` rather than the header being ignored, so a
client that believes it pinned never silently compares answers from another deployment.
"""

from __future__ import annotations

from opsgate.domain.context import RequestContext
from opsgate.domain.errors import InvalidRequestError, PermissionDeniedError
from opsgate.routing.deployment import DeploymentHandle

PIN_HEADER = "x-opsgate-pin-deployment"


def pinned(ctx: RequestContext, handles: list[DeploymentHandle]) -> DeploymentHandle | None:
    """The deployment the request pins (None: not pinned); 403 for a non-operator, 400 for an unknown label."""
    label = ctx.headers.get(PIN_HEADER)
    if label is None:
        return None
    principal = ctx.principal
    if not principal.is_operator or principal.role != "admin":
        raise PermissionDeniedError(
            f"Only an operator admin key can pin a deployment ({PIN_HEADER}).", code="pin_not_allowed"
        )
    for handle in handles:
        if handle.label == label:
            ctx.tags["pinned_deployment"] = label
            return handle
    shown = label[:100].encode("ascii", "replace").decode()
    raise InvalidRequestError(
        f"'{shown}' is not a deployment of this model ({', '.join(h.label for h in handles)}).",
        param=PIN_HEADER,
        code="unknown_deployment",
    )
