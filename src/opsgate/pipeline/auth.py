"""Stage: authenticate the caller of a ``/v1`` inference route and check its role.

Sits right after the record stage, so a refused request (401/403) is still recorded. The model
scope of a key is checked by validation, once the alias is known.
"""

from __future__ import annotations

from opsgate.auth.authenticator import Authenticator, presented_key
from opsgate.auth.permissions import allows
from opsgate.domain.context import GatewayResponse, RequestContext
from opsgate.domain.errors import PermissionDeniedError
from opsgate.pipeline.stage import PassStage


class AuthStage(PassStage):
    """Sets ``ctx.principal`` (hence ``ctx.tenant`` and ``ctx.api_key_id``), or refuses the request."""

    name = "auth"

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """401 without a valid key, 403 for a role that may not call models."""
        principal = await self.authenticator.authenticate(presented_key(ctx.headers))
        ctx.principal = principal
        if not allows(principal, "inference"):
            raise PermissionDeniedError(
                f"API keys with the role '{principal.role}' cannot call models.", code="role_not_allowed"
            )
        return None
