"""The pipeline's terminal step: hand the validated request to a deployment of its alias.

Routing (weights, retries, fallbacks, breakers) will choose the deployment; until then the
alias's first deployment serves.
"""

from __future__ import annotations

from opsgate.backends.base import Backend
from opsgate.backends.registry import ModelRegistry
from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamResult
from opsgate.domain.requests import EmbeddingRequest


class BackendCall:
    """Calls the backend for ``ctx.alias`` and wraps its answer as a gateway response."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def choose(self, ctx: RequestContext) -> Backend:
        """The deployment that serves this request."""
        assert ctx.alias is not None
        return self.registry.deployments(ctx.alias.name)[0]

    async def __call__(self, ctx: RequestContext) -> GatewayResponse:
        """Serve the request."""
        backend = self.choose(ctx)
        ctx.deployment = backend.label
        headers = {"x-opsgate-deployment": backend.label}
        body = ctx.body
        if isinstance(body, EmbeddingRequest):
            return JsonResult(await backend.embed(ctx), headers=headers)
        assert body is not None
        if body.stream:
            source = await backend.open_stream(ctx)
            return StreamResult(source=source, include_usage=body.include_usage(), headers=headers)
        return JsonResult(await backend.generate(ctx), headers=headers)
