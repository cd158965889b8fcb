"""``/ui/releases``: prompts (the caller's tenant), every alias's release state and the experiments;
``/ui/experiments/{experiment}``: arms, metrics with intervals, the verdict in words and the rollback log;
``/ui/prompts/{name}``: a prompt's versions and the diff of two. Rendered on the server from the same
``opsgate.releases`` calls as the admin API, in a worker thread. Releases and experiments are
operator-only, as in the API; prompts are scoped to the caller's tenant."""

from __future__ import annotations

import re
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from opsgate.domain.principal import Principal
from opsgate.releases import metrics
from opsgate.releases.prompts import NAME, PromptStore, diff
from opsgate.releases.store import ReleaseStore
from opsgate.store.record_log import RecordLog

_ID = re.compile(r"exp_[0-9a-f]{1,32}")


class _Pages(Protocol):
    source: Any

    def render(self, request: Request, template: str, status: int = 200, /, **context: Any) -> Response: ...

    def guarded(self, page: str, handler: Any) -> Any: ...


class ReleasePages:
    """The release pages of the dashboard."""

    def __init__(self, dashboard: _Pages) -> None:
        self.dash = dashboard

    def _record_log(self) -> RecordLog | None:
        record_log: RecordLog | None = self.dash.source.record_log
        return record_log

    def _message(self, request: Request, principal: Principal, title: str, message: str, status: int) -> Response:
        return self.dash.render(
            request, "message.html", status, principal=principal, page="releases", title=title, message=message
        )

    async def overview(self, request: Request, principal: Principal) -> Response:
        """``/ui/releases``."""
        record_log = self._record_log()
        if record_log is None:
            return self._message(request, principal, "Not available", "record.store is unset: no releases.", 501)
        store = record_log.store
        prompts = await run_in_threadpool(PromptStore(store).list_all, principal.tenant)
        states: list[dict[str, Any]] = []
        experiments: list[dict[str, Any]] = []
        if principal.is_operator:
            releases = ReleaseStore(store)
            _, by_alias, _ = await run_in_threadpool(releases.snapshot)
            states = [s.to_dict() for s in by_alias.values()]
            experiments = await run_in_threadpool(releases.experiments, None, 100)
        return self.dash.render(
            request,
            "releases.html",
            principal=principal,
            page="releases",
            prompts=prompts,
            states=states,
            experiments=experiments,
            operator=principal.is_operator,
        )

    async def prompt(self, request: Request, principal: Principal) -> Response:
        """``/ui/prompts/{name}?from=&to=``: versions, labels and a diff (the newest two by default)."""
        record_log = self._record_log()
        name = request.path_params["name"]
        if record_log is None or not NAME.fullmatch(name):
            return self._message(request, principal, "Not found", "No such prompt.", 404)
        registry = PromptStore(record_log.store)
        versions = await run_in_threadpool(registry.versions, principal.tenant, name)
        if not versions:
            return self._message(request, principal, "Not found", f"No prompt '{name}'.", 404)
        labels = await run_in_threadpool(registry.labels, principal.tenant, name)
        by_number = {v.version: v for v in versions}

        def pick(param: str, default: int) -> int:
            raw = request.query_params.get(param, "")
            # ASCII and short: "²" is a digit to isdigit() but not to int(), and int() refuses 5,000 digits.
            number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None
            return number if number in by_number else default

        newest = versions[0].version
        old, new = pick("from", versions[1].version if len(versions) > 1 else newest), pick("to", newest)
        return self.dash.render(
            request,
            "prompt.html",
            principal=principal,
            page="releases",
            name=name,
            versions=versions,
            labels=labels,
            old=old,
            new=new,
            diff=diff(by_number[old], by_number[new]).splitlines(),
        )

    async def experiment(self, request: Request, principal: Principal) -> Response:
        """``/ui/experiments/{experiment}``."""
        record_log = self._record_log()
        experiment_id = request.path_params["experiment"]
        if not principal.is_operator:
            return self._message(request, principal, "Not allowed", "Experiments are for operator keys.", 403)
        if record_log is None or not _ID.fullmatch(experiment_id):
            return self._message(request, principal, "Not found", "No such experiment.", 404)
        releases = ReleaseStore(record_log.store)
        found = await run_in_threadpool(releases.experiment, experiment_id)
        if found is None:
            return self._message(request, principal, "Not found", f"No experiment '{experiment_id}'.", 404)
        alpha = float((found.get("settings") or {}).get("alpha", 0.05))
        report = await run_in_threadpool(metrics.report, record_log.store, found, alpha)
        history = await run_in_threadpool(releases.history, found["alias"], 50)
        log = [h for h in history if h["ts"] >= found["started_at"] - 1]
        return self.dash.render(
            request, "experiment.html", principal=principal, page="releases", report=report, log=log
        )


def release_pages(dashboard: _Pages) -> list[BaseRoute]:
    """The ``/ui/releases`` routes."""
    pages = ReleasePages(dashboard)
    return [
        Route("/ui/releases", dashboard.guarded("releases", pages.overview), methods=["GET"]),
        Route("/ui/prompts/{name}", dashboard.guarded("releases", pages.prompt), methods=["GET"]),
        Route("/ui/experiments/{experiment}", dashboard.guarded("releases", pages.experiment), methods=["GET"]),
    ]
