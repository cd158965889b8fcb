"""``/admin/prompts``, ``/admin/releases`` and ``/admin/experiments``: the same library calls as the CLI.

Prompts are tenant-scoped: a tenant's key reads and writes its own tenant's prompts only (another
tenant's prompt is a 404, like a missing one); an operator works on the shared prompts (tenant
null), or on a tenant's with ``?tenant=``. Releases and experiments change what an alias does for
every tenant, so they are operator-only, reads included. Store calls run in worker threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from opsgate.domain.config import GatewayConfig
from opsgate.domain.errors import InvalidRequestError, NotFoundError
from opsgate.releases import metrics
from opsgate.releases.prompts import LABEL, PromptStore, check_name, diff
from opsgate.releases.store import ReleaseStore, check_weight, validate_release_spec
from opsgate.server.access import actor_of, require_operator, scoped_tenant
from opsgate.server.admin import require_record_log
from opsgate.server.http_io import json_response, read_json_value
from opsgate.server.query_params import NoQuery, QueryModel, parse_query, whole_number
from opsgate.store.query import check_params
from opsgate.store.record_log import RecordLog
from opsgate.store.sql import SqlRecordStore

_MAX_BODY_BYTES = 256 * 1024  # prompt templates may be long; the body limit middleware caps admin JSON too


class ReleasesHolder(Protocol):
    """What these routes need from the gateway."""

    config: GatewayConfig
    record_log: RecordLog | None


Handler = Callable[[Request, SqlRecordStore], Awaitable[Response]]


def _route(holder: ReleasesHolder, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        record_log = require_record_log(holder, "and prompts and releases live in it")
        check_params(request.query_params, request.path_params)  # path ids too
        return await handler(request, record_log.store)

    return endpoint


async def _body(request: Request) -> dict[str, Any]:
    body = await read_json_value(request, _MAX_BODY_BYTES, empty={})
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_body")
    return body


def _revision(body: dict[str, Any]) -> int | None:
    value = body.get("revision")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise InvalidRequestError("revision must be a whole number.", param="revision")
    return value


class PromptQuery(QueryModel):
    """Prompt routes: an operator may name a tenant (the shared prompts otherwise)."""

    tenant: str | None = None


class DiffQuery(PromptQuery):
    """Two versions of a prompt to compare."""

    from_: Annotated[int, whole_number(0, 10**9 - 1), Field(alias="from")]
    to: Annotated[int, whole_number(0, 10**9 - 1)]


def _prompt_tenant(request: Request) -> str | None:
    return scoped_tenant(request, parse_query(request, PromptQuery).tenant)


def release_routes(holder: ReleasesHolder) -> list[Route]:
    """The routes, bound to ``holder``."""

    def aliases() -> dict[str, list[str]]:
        config = holder.config
        return {alias.name: [f"{alias.name}#{i}" for i in range(len(alias.deployments))] for alias in config.models}

    def alias_of(request: Request) -> str:
        alias = request.path_params["alias"]
        if alias not in aliases():
            raise NotFoundError(f"The model '{alias[:100]}' does not exist.", param="alias", code="model_not_found")
        return str(alias)

    # -- prompts ----------------------------------------------------------------------------------

    async def list_prompts(request: Request, store: SqlRecordStore) -> Response:
        tenant = _prompt_tenant(request)
        data = await asyncio.to_thread(PromptStore(store).list_all, tenant)
        return json_response({"object": "list", "tenant": tenant, "data": data})

    async def create_prompt(request: Request, store: SqlRecordStore) -> Response:
        tenant = _prompt_tenant(request)
        body = await _body(request)
        unknown = sorted(set(body) - {"name", "messages", "variables", "parameters", "notes", "label"})
        if unknown:
            raise InvalidRequestError(f"Unknown field '{unknown[0]}'.", param=unknown[0])
        prompts = PromptStore(store)
        name = check_name(body.get("name"))
        label = body.get("label")
        if label is not None:
            check_name(label, "label", LABEL)
        actor = actor_of(request)

        def create() -> tuple[Any, bool]:
            version, created = prompts.create(
                tenant, name, body.get("messages"), body.get("variables", []), body.get("parameters"),
                body.get("notes"), actor,
            )  # fmt: skip
            if label is not None:
                prompts.set_label(tenant, name, label, version.version, actor)
            return version, created

        version, created = await asyncio.to_thread(create)
        return json_response({**version.to_dict(), "created": created}, 201 if created else 200)

    async def show_prompt(request: Request, store: SqlRecordStore) -> Response:
        tenant = _prompt_tenant(request)
        name = check_name(request.path_params["name"])
        prompts = PromptStore(store)
        versions = await asyncio.to_thread(prompts.versions, tenant, name)
        if not versions:
            raise NotFoundError(f"no prompt '{name}'.", param="name", code="prompt_not_found")
        labels = await asyncio.to_thread(prompts.labels, tenant, name)
        return json_response({"name": name, "labels": labels, "versions": [v.to_dict() for v in versions]})

    async def diff_prompt(request: Request, store: SqlRecordStore) -> Response:
        query = parse_query(request, DiffQuery)
        tenant = scoped_tenant(request, query.tenant)
        name = check_name(request.path_params["name"])
        prompts = PromptStore(store)
        found = []
        for param, number in (("from", query.from_), ("to", query.to)):
            version = await asyncio.to_thread(prompts.get, tenant, name, number)
            if version is None:
                raise NotFoundError(f"no prompt {name}@{number}.", param=param, code="prompt_not_found")
            found.append(version)
        return json_response({"from": found[0].ref, "to": found[1].ref, "diff": diff(found[0], found[1])})

    async def label_prompt(request: Request, store: SqlRecordStore) -> Response:
        tenant = _prompt_tenant(request)
        name = check_name(request.path_params["name"])
        body = await _body(request)
        label = check_name(body.get("label"), "label", LABEL)
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**9:
            raise InvalidRequestError("version must be a version number.", param="version")
        before = await asyncio.to_thread(PromptStore(store).set_label, tenant, name, label, version, actor_of(request))
        return json_response({"name": name, "label": label, "version": version, "before": before})

    # -- releases ---------------------------------------------------------------------------------

    async def list_releases(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "read releases")
        parse_query(request, NoQuery)
        releases = ReleaseStore(store)
        _, states, _ = await asyncio.to_thread(releases.snapshot)
        return json_response({"object": "list", "data": [s.to_dict() for s in states.values()]})

    async def create_release(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "create releases")
        parse_query(request, NoQuery)
        body = await _body(request)
        alias = body.pop("alias", None)
        if not isinstance(alias, str) or alias not in aliases():
            raise NotFoundError("alias must name a configured model.", param="alias", code="model_not_found")
        notes = body.pop("notes", None)
        activate = body.pop("activate", False)
        if not isinstance(activate, bool):
            raise InvalidRequestError("activate must be true or false.", param="activate")
        releases, prompts = ReleaseStore(store), PromptStore(store)
        actor = actor_of(request)

        def create() -> dict[str, Any]:
            spec = validate_release_spec(alias, body, aliases()[alias], prompts)
            release = releases.create(alias, spec, notes, actor)
            out = release.to_dict()
            if activate:
                out["state"] = releases.activate(alias, release.id, actor).to_dict()
            return out

        return json_response(await asyncio.to_thread(create), 201)

    async def show_release(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "read releases")
        parse_query(request, NoQuery)
        alias = alias_of(request)
        releases = ReleaseStore(store)
        state = await asyncio.to_thread(releases.state, alias)
        listed = await asyncio.to_thread(releases.list_all, alias)
        history = await asyncio.to_thread(releases.history, alias)
        return json_response(
            {
                "alias": alias,
                "state": state.to_dict() if state else None,
                "releases": [r.to_dict() for r in listed],
                "history": history,
            }
        )

    def change(action: str) -> Handler:
        async def handler(request: Request, store: SqlRecordStore) -> Response:
            require_operator(request, "change releases")
            parse_query(request, NoQuery)
            alias = alias_of(request)
            body = await _body(request)
            releases = ReleaseStore(store)
            actor, expect = actor_of(request), _revision(body)
            release = body.get("release")
            if release is not None and not isinstance(release, str | int):
                raise InvalidRequestError("release is an id or a number.", param="release")
            if action == "canary":
                weight = check_weight(body.get("weight"), "weight")
                if release is None:
                    raise InvalidRequestError("release is required.", param="release")
                state = await asyncio.to_thread(releases.canary, alias, str(release), weight, actor, expect)
            elif action == "activate":
                if release is None:
                    raise InvalidRequestError("release is required.", param="release")
                ref = await asyncio.to_thread(_resolve_release, releases, alias, str(release))
                state = await asyncio.to_thread(releases.activate, alias, ref, actor, expect)
            elif action == "promote":
                state = await asyncio.to_thread(releases.promote, alias, actor, expect)
            else:
                to = body.get("to")
                reason = body.get("reason")
                if to is not None and not isinstance(to, str | int):
                    raise InvalidRequestError("to is a release id, a number or 'base'.", param="to")
                if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
                    raise InvalidRequestError("reason is text of at most 1000 characters.", param="reason")
                state = await asyncio.to_thread(
                    releases.rollback, alias, actor, None if to is None else str(to), reason, expect
                )
            return json_response(state.to_dict())

        return handler

    # -- experiments ------------------------------------------------------------------------------

    async def list_experiments(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "read experiments")
        parse_query(request, NoQuery)
        data = await asyncio.to_thread(ReleaseStore(store).experiments, None)
        return json_response({"object": "list", "data": data})

    async def start_experiment(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "start experiments")
        parse_query(request, NoQuery)
        body = await _body(request)
        alias = body.get("alias")
        if not isinstance(alias, str) or alias not in aliases():
            raise NotFoundError("alias must name a configured model.", param="alias", code="model_not_found")
        settings = body.get("settings") or {}
        if not isinstance(settings, dict) or not set(settings) <= {"tau", "alpha", "notes"}:
            raise InvalidRequestError("settings may hold tau, alpha, notes.", param="settings")
        for key, high in (("tau", 1.0), ("alpha", 0.5)):
            if key in settings:
                check_weight(settings[key], f"settings.{key}", 1e-6, high)
        state = await asyncio.to_thread(
            ReleaseStore(store).start_experiment, alias, body.get("arms"), settings, actor_of(request),
            _revision(body),
        )  # fmt: skip
        return json_response(state.to_dict(), 201)

    async def show_experiment(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "read experiments")
        parse_query(request, NoQuery)
        found = await asyncio.to_thread(ReleaseStore(store).experiment, request.path_params["experiment"][:64])
        if found is None:
            raise NotFoundError("no such experiment.", param="experiment", code="experiment_not_found")
        alpha = float((found.get("settings") or {}).get("alpha", 0.05))
        return json_response(await asyncio.to_thread(metrics.report, store, found, alpha))

    async def stop_experiment(request: Request, store: SqlRecordStore) -> Response:
        require_operator(request, "stop experiments")
        parse_query(request, NoQuery)
        releases = ReleaseStore(store)
        found = await asyncio.to_thread(releases.experiment, request.path_params["experiment"][:64])
        if found is None or found["status"] != "running":
            raise NotFoundError("no running experiment with that id.", param="experiment", code="experiment_not_found")
        # By id, under the store's lock: never the alias's other experiment (409 if it runs another now;
        # an orphaned row, running without arms, is closed and the alias left as it is).
        state = await asyncio.to_thread(
            releases.stop_experiment, found["alias"], actor_of(request), experiment=found["id"]
        )
        return json_response(state.to_dict())

    r = _route
    return [
        Route("/admin/prompts", r(holder, list_prompts), methods=["GET"]),
        Route("/admin/prompts", r(holder, create_prompt), methods=["POST"]),
        Route("/admin/prompts/{name}", r(holder, show_prompt), methods=["GET"]),
        Route("/admin/prompts/{name}/diff", r(holder, diff_prompt), methods=["GET"]),
        Route("/admin/prompts/{name}/labels", r(holder, label_prompt), methods=["POST"]),
        Route("/admin/releases", r(holder, list_releases), methods=["GET"]),
        Route("/admin/releases", r(holder, create_release), methods=["POST"]),
        Route("/admin/releases/{alias}", r(holder, show_release), methods=["GET"]),
        Route("/admin/releases/{alias}/canary", r(holder, change("canary")), methods=["POST"]),
        Route("/admin/releases/{alias}/activate", r(holder, change("activate")), methods=["POST"]),
        Route("/admin/releases/{alias}/promote", r(holder, change("promote")), methods=["POST"]),
        Route("/admin/releases/{alias}/rollback", r(holder, change("rollback")), methods=["POST"]),
        Route("/admin/experiments", r(holder, list_experiments), methods=["GET"]),
        Route("/admin/experiments", r(holder, start_experiment), methods=["POST"]),
        Route("/admin/experiments/{experiment}", r(holder, show_experiment), methods=["GET"]),
        Route("/admin/experiments/{experiment}/stop", r(holder, stop_experiment), methods=["POST"]),
    ]


def _resolve_release(releases: ReleaseStore, alias: str, ref: str) -> str:
    if ref.isascii() and ref.isdigit() and len(ref) <= 9:  # "²" is a digit to isdigit(), not to int()
        match = [r for r in releases.list_all(alias) if r.number == int(ref)]
        if not match:
            raise NotFoundError(f"{alias} has no release {ref}.", param="release", code="release_not_found")
        return match[0].id
    return ref
