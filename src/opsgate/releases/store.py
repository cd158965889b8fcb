"""Releases per alias: immutable versions of (deployments and weights, prompt version, parameters),
which one is active, the arms of a running canary or experiment, and the history.

Every change runs in one write transaction that is serialised across processes (SQLite's
``BEGIN IMMEDIATE``; PostgreSQL's transaction advisory lock), checks the alias's ``revision`` when
the caller names the one it saw (a stale one is a 409), appends to ``release_history`` and the audit
hash chain, and bumps ``release_clock`` so every replica's cache reloads within its poll interval.

The YAML config stays the base: an alias without an active release (or rolled back to ``base``)
serves exactly as configured.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from opsgate.audit.chain import append_entry
from opsgate.domain.errors import GatewayError, InvalidRequestError, NotFoundError
from opsgate.releases.prompts import PromptStore, check_parameters, parse_ref
from opsgate.store.sql import SqlRecordStore

_LOCK = 7041915
_RELEASE_COLUMNS = "id, alias, number, spec, notes, created_at, created_by"
_STATE_COLUMNS = "alias, active, previous, arms, experiment, revision, updated_at"
BASE = "base"  # the YAML config itself, as a rollback target and as an arm
MAX_ARMS = 8


class ReleaseConflict(GatewayError):
    """Someone changed the alias's releases since the caller looked (``revision`` moved)."""

    status = 409
    error_type = "invalid_request_error"


@dataclass(frozen=True)
class Release:
    """One immutable release of an alias."""

    id: str
    alias: str
    number: int
    spec: dict[str, Any]  # {"deployments": {label: weight} | None, "prompt": "name@N" | None, "parameters": {}}
    notes: str | None
    created_at: float
    created_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for the API and CLI."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class AliasState:
    """What serves an alias now: the active release (None: the YAML base) and any experiment's arms."""

    alias: str
    active: str | None
    previous: str | None
    arms: list[dict[str, Any]] | None  # [{"arm": "control", "release": id | None, "weight": 90.0}, ...]
    experiment: str | None
    revision: int
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        """JSON shape for the API and CLI."""
        return dict(self.__dict__)


def check_weight(value: object, param: str, low: float = 0.0, high: float = 100.0) -> float:
    """A finite weight in range; NaN, infinities, booleans and strings are a 400."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequestError(f"{param} must be a finite number.", param=param)
    if not low <= float(value) <= high:
        raise InvalidRequestError(f"{param} must be from {low:g} to {high:g}.", param=param)
    return float(value)


def validate_release_spec(
    alias: str, spec: object, deployments: Sequence[str], prompts: PromptStore | None
) -> dict[str, Any]:
    """Check a release body against the alias's configured deployments; pin the prompt to a version."""
    if not isinstance(spec, Mapping):
        raise InvalidRequestError("a release is an object {deployments, prompt, parameters}.", param="release")
    unknown = sorted(set(spec) - {"deployments", "prompt", "parameters"})
    if unknown:
        raise InvalidRequestError(f"unknown field '{unknown[0]}'.", param=unknown[0])
    out: dict[str, Any] = {"deployments": None, "prompt": None, "parameters": {}}
    weights = spec.get("deployments")
    if weights is not None:
        if not isinstance(weights, Mapping) or not weights or len(weights) > 64:
            raise InvalidRequestError("deployments must map deployment labels to weights.", param="deployments")
        clean: dict[str, float] = {}
        for label, weight in weights.items():
            if label not in deployments:
                raise InvalidRequestError(
                    f"'{str(label)[:80]}' is not a deployment of {alias} (known: {', '.join(deployments)}).",
                    param=f"deployments.{str(label)[:80]}",
                )
            clean[label] = check_weight(weight, f"deployments.{label}", 0.0, 1e6)
        if not any(w > 0 for w in clean.values()):
            raise InvalidRequestError("at least one deployment needs a weight above 0.", param="deployments")
        out["deployments"] = clean
    prompt = spec.get("prompt")
    if prompt is not None:
        name, selector = parse_ref(prompt)
        if prompts is None:
            raise InvalidRequestError("prompts need the record store.", param="prompt")
        found = prompts.resolve(None, f"{name}@{selector}")  # releases bind operator prompts, pinned
        out["prompt"] = found.ref
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, Mapping) or not set(parameters) <= {
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "stop",
    }:
        raise InvalidRequestError("parameters may hold temperature, top_p, max_tokens, seed, stop.", param="parameters")
    check_parameters(dict(parameters), "parameters")
    out["parameters"] = dict(parameters)
    return out


class ReleaseStore:
    """Reads and changes releases (blocking: call from a worker thread)."""

    def __init__(self, store: SqlRecordStore) -> None:
        self.store = store

    # -- reads ------------------------------------------------------------------------------------

    def clock(self) -> int:
        """The change counter every replica polls."""
        with self.store.connection() as conn:
            row = self.store.execute(conn, "SELECT counter FROM release_clock WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def snapshot(self) -> tuple[int, dict[str, AliasState], dict[str, Release]]:
        """The clock, every alias's state and every release those states name, read together."""
        with self.store.connection() as conn:
            row = self.store.execute(conn, "SELECT counter FROM release_clock WHERE id = 1").fetchone()
            states = [_state(r) for r in self.store.execute(conn, f"SELECT {_STATE_COLUMNS} FROM release_state")]
            wanted = {s.active for s in states} | {a["release"] for s in states for a in s.arms or []}
            wanted.discard(None)
            releases: dict[str, Release] = {}
            if wanted:
                marks = ",".join("?" for _ in wanted)
                for r in self.store.execute(
                    conn, f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE id IN ({marks})", sorted(wanted)
                ):
                    releases[r[0]] = _release(r)
        return int(row[0]) if row else 0, {s.alias: s for s in states}, releases

    def get(self, release_id: str) -> Release | None:
        """One release by id."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn, f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE id = ?", [release_id]
            ).fetchone()
        return _release(row) if row else None

    def list_all(self, alias: str | None = None, limit: int = 200) -> list[Release]:
        """Releases, newest first."""
        where, params = (" WHERE alias = ?", [alias]) if alias else ("", [])
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                f"SELECT {_RELEASE_COLUMNS} FROM releases{where} ORDER BY created_at DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_release(r) for r in rows]

    def state(self, alias: str) -> AliasState | None:
        """The alias's state, or None if no release was ever made active."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn, f"SELECT {_STATE_COLUMNS} FROM release_state WHERE alias = ?", [alias]
            ).fetchone()
        return _state(row) if row else None

    def history(self, alias: str, limit: int = 200) -> list[dict[str, Any]]:
        """What happened to the alias, newest first."""
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                "SELECT ts, action, release, details, actor FROM release_history WHERE alias = ? "
                "ORDER BY ts DESC, id DESC LIMIT ?",
                [alias, limit],
            ).fetchall()
        return [
            {
                "ts": r[0],
                "action": r[1],
                "release": r[2],
                "details": orjson.loads(r[3]) if r[3] else None,
                "actor": r[4],
            }
            for r in rows
        ]

    def experiment(self, experiment_id: str) -> dict[str, Any] | None:
        """One experiment row."""
        with self.store.connection() as conn:
            row = self.store.execute(
                conn,
                "SELECT id, alias, kind, arms, status, settings, started_at, stopped_at, verdict, created_by "
                "FROM release_experiments WHERE id = ?",
                [experiment_id],
            ).fetchone()
        return _experiment(row) if row else None

    def experiments(self, alias: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Experiments, newest first."""
        where, params = (" WHERE alias = ?", [alias]) if alias else ("", [])
        with self.store.connection() as conn:
            rows = self.store.execute(
                conn,
                "SELECT id, alias, kind, arms, status, settings, started_at, stopped_at, verdict, created_by "
                f"FROM release_experiments{where} ORDER BY started_at DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        return [_experiment(r) for r in rows]

    # -- changes ----------------------------------------------------------------------------------

    def create(self, alias: str, spec: dict[str, Any], notes: str | None, actor: str | None) -> Release:
        """A new release of ``alias`` (already validated by ``validate_release_spec``); not active yet."""
        if notes is not None and (not isinstance(notes, str) or len(notes) > 4000 or "\x00" in notes):
            raise InvalidRequestError("notes must be text of at most 4000 characters.", param="notes")
        with self.store.connection() as conn, self.store.transaction(conn):
            self._lock(conn)
            row = self.store.execute(conn, "SELECT max(number) FROM releases WHERE alias = ?", [alias]).fetchone()
            release = Release(
                id=f"rel_{uuid.uuid4().hex[:16]}",
                alias=alias,
                number=int(row[0] or 0) + 1,
                spec=spec,
                notes=notes,
                created_at=time.time(),
                created_by=actor,
            )
            self.store.execute(
                conn,
                f"INSERT INTO releases ({_RELEASE_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                [release.id, alias, release.number, orjson.dumps(spec).decode(), notes, release.created_at, actor],
            )
            self._log(conn, alias, "created", release.id, {"number": release.number, "spec": spec}, actor)
        return release

    def activate(self, alias: str, release_id: str, actor: str | None, expect: int | None = None) -> AliasState:
        """Make ``release_id`` the active release at once (no canary); the old one becomes ``previous``.

        A running canary or experiment ends with it (its arms go): its row is closed as ``stopped``, in
        the same transaction, so it is never left ``running`` without traffic."""

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            new, action, release, details = self._set_active(conn, state, release_id, "activated")
            if state.arms:
                self._stop(conn, state, "stopped", {"ended_by": "activate", "activated": release})
                details = {**details, "experiment_stopped": state.experiment}
            return new, action, release, details

        return self._change(alias, actor, expect, change)

    def canary(
        self, alias: str, release_id: str, weight: float, actor: str | None, expect: int | None = None
    ) -> AliasState:
        """Send ``weight`` % of the alias's traffic (sticky per user) to ``release_id``; the rest stays."""
        weight = check_weight(weight, "weight", 0.0, 100.0)
        if not 0 < weight < 100:
            raise InvalidRequestError("a canary weight is above 0 and below 100.", param="weight")

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            release = self._release_of(conn, alias, release_id)
            arms: list[dict[str, Any]] = [
                {"arm": "control", "release": state.active, "weight": 100.0 - weight},
                {"arm": "canary", "release": release.id, "weight": weight},
            ]
            return self._start(conn, state, "canary", arms, {}, actor), "canary_started", release.id, {"weight": weight}

        return self._change(alias, actor, expect, change)

    def start_experiment(
        self,
        alias: str,
        arms: object,
        settings: dict[str, Any],
        actor: str | None,
        expect: int | None = None,
    ) -> AliasState:
        """An A/B(/n) experiment: ``arms`` is [{"arm": name, "release": id | "base", "weight": w}, ...]."""
        if not isinstance(arms, list) or not 2 <= len(arms) <= MAX_ARMS:
            raise InvalidRequestError(f"an experiment has 2 to {MAX_ARMS} arms.", param="arms")

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            clean: list[dict[str, Any]] = []
            for index, arm in enumerate(arms):
                if not isinstance(arm, dict) or not set(arm) <= {"arm", "release", "weight"}:
                    raise InvalidRequestError("an arm is {arm, release, weight}.", param=f"arms[{index}]")
                name = arm.get("arm") or f"arm{index}"
                if not isinstance(name, str) or not name.isidentifier() or len(name) > 32:
                    raise InvalidRequestError("an arm's name is an identifier.", param=f"arms[{index}].arm")
                ref = arm.get("release")
                release = None if ref in (None, BASE) else self._release_of(conn, alias, str(ref)).id
                weight = check_weight(arm.get("weight", 1.0), f"arms[{index}].weight", 0.0, 100.0)
                clean.append({"arm": name, "release": release, "weight": weight})
            if len({a["arm"] for a in clean}) != len(clean):
                raise InvalidRequestError("arm names must differ.", param="arms")
            if sum(a["weight"] for a in clean) <= 0:
                raise InvalidRequestError("the arms' weights add up to 0.", param="arms")
            new = self._start(conn, state, "ab", clean, settings, actor)
            return new, "experiment_started", None, {"arms": clean}

        return self._change(alias, actor, expect, change)

    def promote(self, alias: str, actor: str | None, expect: int | None = None) -> AliasState:
        """The running canary's release becomes the active release; the canary ends."""

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            canary = next((a for a in state.arms or [] if a["arm"] == "canary"), None)
            if canary is None:
                raise InvalidRequestError(f"{alias} has no canary to promote.", param="alias", code="no_canary")
            self._stop(conn, state, "promoted", {"promoted": canary["release"]})
            new, *_ = self._set_active(conn, _without_arms(state), canary["release"], "promoted")
            return new, "promoted", canary["release"], {"from": state.active}

        return self._change(alias, actor, expect, change)

    def rollback(
        self,
        alias: str,
        actor: str | None,
        to: str | None = None,
        reason: str | None = None,
        expect: int | None = None,
    ) -> AliasState:
        """End a running canary/experiment (traffic back on the active release); with none running, go back
        to the previous release, or to ``to`` (a release id of this alias, its number, or ``base``)."""

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            details: dict[str, Any] = {"reason": reason} if reason else {}
            if state.arms and to is None:
                self._stop(conn, state, "rolled_back", {"reason": reason})
                dropped = [a["release"] for a in state.arms if a["release"] != state.active]
                return _without_arms(state), "rolled_back", state.active, {**details, "dropped": dropped}
            if to is None:
                if state.previous is None and state.active is None:
                    raise InvalidRequestError(
                        f"{alias} has nothing to roll back to (no earlier release).", param="to", code="no_previous"
                    )
                target = state.previous
            elif to == BASE:
                target = None
            else:
                target = self._release_of(conn, alias, to).id
            if state.arms:
                self._stop(conn, state, "rolled_back", {"reason": reason})
            new, *_ = self._set_active(conn, _without_arms(state), target, "rolled_back")
            return new, "rolled_back", target, {**details, "from": state.active}

        return self._change(alias, actor, expect, change)

    def stop_experiment(
        self,
        alias: str,
        actor: str | None,
        verdict: dict[str, Any] | None = None,
        expect: int | None = None,
        experiment: str | None = None,
    ) -> AliasState:
        """End the running experiment without promoting anything (traffic back on the active release).

        With ``experiment`` (an id), only that one: if the alias runs another, or none, nothing of the
        alias changes (a 409, ``experiment_not_current``) — except that a row still ``running`` which
        the alias no longer runs (an orphan: its arms went with an ``activate`` before that closed it)
        is closed as ``stopped``, ``{"orphaned": true}``, without touching the alias's traffic."""

        def change(conn: Any, state: AliasState) -> tuple[AliasState, str, str | None, dict[str, Any]]:
            if experiment is not None and experiment != state.experiment:
                closed = self._close_orphan(conn, alias, experiment)
                if closed:
                    return state, "experiment_stopped", state.active, {"experiment": experiment, "orphaned": True}
                raise ReleaseConflict(
                    f"experiment {experiment} is not running on {alias} (it runs {state.experiment or 'none'}); "
                    "look again.",
                    param="experiment",
                    code="experiment_not_current",
                )
            if not state.arms:
                raise InvalidRequestError(f"{alias} has no running experiment.", param="alias", code="no_experiment")
            self._stop(conn, state, "stopped", verdict or {})
            return _without_arms(state), "experiment_stopped", state.active, {"experiment": state.experiment}

        return self._change(alias, actor, expect, change)

    # -- internals --------------------------------------------------------------------------------

    def _lock(self, conn: Any) -> None:
        if self.store.dialect == "postgres":
            self.store.execute(conn, "SELECT pg_advisory_xact_lock(?)", [_LOCK])

    def _release_of(self, conn: Any, alias: str, ref: str) -> Release:
        if ref.isascii() and ref.isdigit() and len(ref) <= 9:
            row = self.store.execute(
                conn, f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE alias = ? AND number = ?", [alias, int(ref)]
            ).fetchone()
        else:
            row = self.store.execute(
                conn, f"SELECT {_RELEASE_COLUMNS} FROM releases WHERE id = ? AND alias = ?", [ref[:64], alias]
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"{alias} has no release '{ref[:64]}' (see `opsgate release history {alias}`).",
                param="release",
                code="release_not_found",
            )
        return _release(row)

    def _change(self, alias: str, actor: str | None, expect: int | None, change: Any) -> AliasState:
        with self.store.connection() as conn, self.store.transaction(conn):
            self._lock(conn)
            row = self.store.execute(
                conn, f"SELECT {_STATE_COLUMNS} FROM release_state WHERE alias = ?", [alias]
            ).fetchone()
            state = _state(row) if row else AliasState(alias, None, None, None, None, 0, 0.0)
            if expect is not None and expect != state.revision:
                raise ReleaseConflict(
                    f"{alias} changed meanwhile (revision {state.revision}, you saw {expect}); look again.",
                    param="revision",
                    code="revision_conflict",
                )
            new, action, release, details = change(conn, state)
            new = AliasState(alias, new.active, new.previous, new.arms, new.experiment, state.revision + 1, time.time())
            values = [
                new.active,
                new.previous,
                orjson.dumps(new.arms).decode() if new.arms else None,
                new.experiment,
                new.revision,
                new.updated_at,
            ]
            if row is None:
                self.store.execute(
                    conn, f"INSERT INTO release_state ({_STATE_COLUMNS}) VALUES (?,?,?,?,?,?,?)", [alias, *values]
                )
            else:
                self.store.execute(
                    conn,
                    "UPDATE release_state SET active = ?, previous = ?, arms = ?, experiment = ?, revision = ?, "
                    "updated_at = ? WHERE alias = ?",
                    [*values, alias],
                )
            self.store.execute(conn, "UPDATE release_clock SET counter = counter + 1 WHERE id = 1")
            details = {**details, "before": _brief(state), "after": _brief(new)}
            self._log(conn, alias, action, release, details, actor)
        return new

    def _set_active(
        self, conn: Any, state: AliasState, release_id: str | None, action: str
    ) -> tuple[AliasState, str, str | None, dict[str, Any]]:
        if release_id is not None:
            release_id = self._release_of(conn, state.alias, release_id).id
        previous = state.active if state.active != release_id else state.previous
        new = AliasState(state.alias, release_id, previous, None, None, state.revision, state.updated_at)
        return new, action, release_id, {}

    def _start(
        self,
        conn: Any,
        state: AliasState,
        kind: str,
        arms: list[dict[str, Any]],
        settings: dict[str, Any],
        actor: str | None,
    ) -> AliasState:
        if state.arms:
            raise InvalidRequestError(
                f"{state.alias} already runs experiment {state.experiment}; stop, promote or roll it back first.",
                param="alias",
                code="experiment_running",
            )
        experiment_id = f"exp_{uuid.uuid4().hex[:16]}"
        self.store.execute(
            conn,
            "INSERT INTO release_experiments (id, alias, kind, arms, status, settings, started_at, created_by) "
            "VALUES (?,?,?,?,?,?,?,?)",
            [experiment_id, state.alias, kind, orjson.dumps(arms).decode(), "running",
             orjson.dumps(settings).decode(), time.time(), actor],
        )  # fmt: skip
        return AliasState(state.alias, state.active, state.previous, arms, experiment_id, state.revision, 0.0)

    def _stop(self, conn: Any, state: AliasState, status: str, verdict: dict[str, Any]) -> None:
        if state.experiment is not None:
            self.store.execute(
                conn,
                "UPDATE release_experiments SET status = ?, stopped_at = ?, verdict = ? WHERE id = ?",
                [status, time.time(), orjson.dumps(verdict).decode(), state.experiment],
            )

    def _close_orphan(self, conn: Any, alias: str, experiment: str) -> bool:
        """Close ``experiment`` if its row is still ``running`` though the alias runs something else."""
        row = self.store.execute(
            conn, "SELECT status FROM release_experiments WHERE id = ? AND alias = ?", [experiment, alias]
        ).fetchone()
        if row is None or row[0] != "running":
            return False
        self.store.execute(
            conn,
            "UPDATE release_experiments SET status = ?, stopped_at = ?, verdict = ? WHERE id = ?",
            ["stopped", time.time(), orjson.dumps({"orphaned": True}).decode(), experiment],
        )
        return True

    def _log(
        self, conn: Any, alias: str, action: str, release: str | None, details: dict[str, Any], actor: str | None
    ) -> None:
        self.store.execute(
            conn,
            "INSERT INTO release_history (alias, ts, action, release, details, actor) VALUES (?,?,?,?,?,?)",
            [alias, time.time(), action, release, orjson.dumps(details).decode(), actor],
        )
        append_entry(self.store, conn, actor, f"release_{action}", f"alias:{alias}", {"release": release, **details})


def _without_arms(state: AliasState) -> AliasState:
    return AliasState(state.alias, state.active, state.previous, None, None, state.revision, state.updated_at)


def _brief(state: AliasState) -> dict[str, Any]:
    return {"active": state.active, "arms": state.arms, "experiment": state.experiment, "revision": state.revision}


def _release(row: Sequence[Any]) -> Release:
    return Release(row[0], row[1], int(row[2]), orjson.loads(row[3]), row[4], float(row[5]), row[6])


def _state(row: Sequence[Any]) -> AliasState:
    return AliasState(
        row[0], row[1], row[2], orjson.loads(row[3]) if row[3] else None, row[4], int(row[5]), float(row[6])
    )


def _experiment(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "alias": row[1],
        "kind": row[2],
        "arms": orjson.loads(row[3]),
        "status": row[4],
        "settings": orjson.loads(row[5]) if row[5] else {},
        "started_at": row[6],
        "stopped_at": row[7],
        "verdict": orjson.loads(row[8]) if row[8] else None,
        "created_by": row[9],
    }
