"""Stage: apply the alias's release (or the client's prompt) before the request goes further.

From the in-memory ``ReleaseCache`` (no database on the request path): pick the arm for the user
(sticky hash; the key, then the request, when there is no ``user``), render the release's or the
client's prompt (``metadata: {"prompt": "name@label", "variables": {...}}``) in Jinja2's sandbox in
front of the request's messages, fill the parameters the client left unset, and hand the release's
deployment weights to the router through ``ctx.scratch``. The record's tags say which prompt
version, release, experiment and arm served. With no release and no prompt it is one dict lookup.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from opsgate.domain.context import GatewayResponse, JsonResult, RequestContext, StreamOutcome
from opsgate.domain.errors import GatewayError, InvalidRequestError
from opsgate.domain.requests import ChatCompletionRequest, ChatMessage
from opsgate.pipeline.stage import PassStage
from opsgate.releases.cache import Arm, ReleaseCache
from opsgate.releases.prompts import PromptVersion, parse_ref
from opsgate.releases.shadow import ShadowMirror

WEIGHTS_KEY = "deployment_weights"  # read by routing/router.py: {deployment label: weight}
_PARAMETERS = ("temperature", "top_p", "max_tokens", "seed", "stop", "response_format")


class ReleaseStage(PassStage):
    """Resolves releases, arms and prompts from the cache."""

    name = "release"

    def __init__(self, cache: ReleaseCache, shadow: ShadowMirror | None = None) -> None:
        self.cache = cache
        self.shadow = shadow
        self.rng = random.Random()

    async def before(self, ctx: RequestContext) -> GatewayResponse | None:
        """Apply the release and prompt, if any."""
        alias, body = ctx.alias, ctx.body
        if alias is None or body is None:
            return None
        resolved = self.cache.aliases.get(alias.name)
        metadata = getattr(body, "metadata", None)
        if resolved is None and not metadata:
            return None  # the common path: nothing to apply
        variables: Any = (metadata or {}).get("variables")
        if variables is not None and not isinstance(variables, dict):
            raise InvalidRequestError("metadata.variables must be an object.", param="metadata.variables")
        variables = variables or {}
        prompt: PromptVersion | None = None
        ref = (metadata or {}).get("prompt")
        if ref is not None:
            prompt = await self._client_prompt(ctx, ref)
            ctx.scratch["release.client_prompt"] = True  # it wins over a release's prompt (shadow too)
        elif variables:
            raise InvalidRequestError("metadata.variables needs metadata.prompt.", param="metadata.variables")
        tags = ctx.tags
        if resolved is not None:
            user = getattr(body, "user", None)
            arm = resolved.pick(user or ctx.api_key_id or ctx.request_id)
            self._apply_release(ctx, arm)
            if resolved.state.experiment is not None:
                tags["experiment"] = resolved.state.experiment
                tags["arm"] = arm.name
            if prompt is None and arm.prompt is not None:
                prompt = arm.prompt
            if resolved.shadow is not None and self.shadow is not None:
                ctx.scratch["release.shadow"] = (resolved.shadow, resolved.shadow_fraction, resolved.state.experiment)
        if prompt is not None:
            self._render(ctx, prompt, variables)
        return None

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: the cache's clock and age, aliases with releases, shadow counters."""
        out = self.cache.status()
        if self.shadow is not None:
            out["shadow"] = self.shadow.status()
        return out

    async def after(self, ctx: RequestContext, response: GatewayResponse) -> GatewayResponse:
        """Mirror a share of successful answers to the shadow release, off the request path."""
        shadow = ctx.scratch.get("release.shadow")
        if shadow is None or self.shadow is None or self.rng.random() >= shadow[1]:
            return response
        mirror, (arm, _, experiment) = self.shadow, shadow
        if isinstance(response, JsonResult):
            if response.error is None:
                mirror.submit(ctx, arm, experiment)
        else:  # a stream: mirrored (not streamed) once it has ended well

            def mirror_stream(outcome: StreamOutcome) -> None:
                if outcome.completed and outcome.error is None:
                    mirror.submit(ctx, arm, experiment)

            response.on_finish.append(mirror_stream)
        return response

    async def _client_prompt(self, ctx: RequestContext, ref: object) -> PromptVersion:
        parse_ref(ref)  # a malformed reference is a 400 before any lookup
        assert isinstance(ref, str)
        tenant = ctx.principal.tenant
        found = self.cache.prompt_lookup(tenant, ref)
        if found is None:
            found = await asyncio.to_thread(self.cache.prompt_resolve, tenant, ref)
        if isinstance(found, GatewayError):
            raise found
        return found

    @staticmethod
    def _apply_release(ctx: RequestContext, arm: Arm) -> None:
        release = arm.release
        if release is None:
            ctx.tags["release"] = "base"
            return
        ctx.tags["release"] = release.id
        ctx.tags["release_number"] = release.number
        spec = release.spec
        if spec.get("deployments"):
            ctx.scratch[WEIGHTS_KEY] = spec["deployments"]
        _fill(ctx, spec.get("parameters") or {})

    @staticmethod
    def _render(ctx: RequestContext, prompt: PromptVersion, variables: dict[str, Any]) -> None:
        body = ctx.body
        if not isinstance(body, ChatCompletionRequest):
            raise InvalidRequestError("prompts apply to chat completions.", param="metadata.prompt")
        rendered = prompt.render(variables)
        ctx.scratch["release.original_messages"] = body.messages
        body.messages = [ChatMessage(role=m["role"], content=m["content"]) for m in rendered] + body.messages
        _fill(ctx, prompt.parameters)
        ctx.tags["prompt"] = prompt.name
        ctx.tags["prompt_version"] = prompt.version
        if prompt.tenant is not None:
            ctx.tags["prompt_tenant"] = prompt.tenant


def _fill(ctx: RequestContext, parameters: dict[str, Any]) -> None:
    """Set the parameters the client left unset (the client's own choice wins)."""
    body = ctx.body
    if body is None or not parameters:
        return
    chosen = body.model_fields_set
    for key in _PARAMETERS:
        if key in parameters and key not in chosen and key in type(body).model_fields:
            value = parameters[key]
            if key == "response_format" and isinstance(body, ChatCompletionRequest):
                from opsgate.domain.requests import ResponseFormat

                value = ResponseFormat.model_validate(value)
            setattr(body, key, value)
