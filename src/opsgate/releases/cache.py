"""What the request path reads: every alias's active release and arms, and prompt versions, in memory.

A background task polls ``release_clock`` (one row) every ``poll_seconds``; when it moved, the whole
state is read again (a few rows per alias) and swapped in as one new dict, so a request sees either
the old snapshot or the new one, never half of each. Every replica on the same database converges
within one poll interval plus the read. The release prompts are loaded with the snapshot; prompts
named by requests are read once and kept (versions are immutable; labels are dropped on every clock
move), so the request path costs a dict lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsgate.domain.errors import GatewayError
from opsgate.releases.prompts import PromptStore, PromptVersion
from opsgate.releases.store import AliasState, Release, ReleaseStore
from opsgate.store.sql import SqlRecordStore

log = logging.getLogger("opsgate.releases")
MAX_PROMPT_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class Arm:
    """One arm as the request path sees it: the release (None: the YAML base) and its prompt."""

    name: str
    release: Release | None
    prompt: PromptVersion | None
    upper: float  # cumulative share of the unit interval this arm ends at


@dataclass(frozen=True, slots=True)
class ResolvedAlias:
    """An alias with a release or an experiment: what to apply, and how to pick an arm."""

    state: AliasState
    arms: tuple[Arm, ...]  # one arm ("active") when no experiment runs
    shadow: Arm | None = None  # mirrored off the request path, never served
    shadow_fraction: float = 0.0

    def pick(self, unit: str) -> Arm:
        """The arm for ``unit`` (a user or key): sticky for the experiment's life, reproducible."""
        if len(self.arms) == 1:
            return self.arms[0]
        point = assignment_point(self.state.experiment or "", unit)
        for arm in self.arms:
            if point < arm.upper:
                return arm
        return self.arms[-1]


def assignment_point(experiment: str, unit: str) -> float:
    """A uniform point in [0, 1) from the experiment and the unit (BLAKE2b; the same on every replica)."""
    digest = hashlib.blake2b(f"{experiment}\x00{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass
class ReleaseCache:
    """The in-memory view of releases and prompts, refreshed by polling the clock."""

    source: Callable[[], SqlRecordStore] | None
    poll_seconds: float = 1.0
    aliases: dict[str, ResolvedAlias] = field(default_factory=dict)
    prompts: dict[tuple[str | None, str], PromptVersion | GatewayError] = field(default_factory=dict)
    clock: int = -1
    loaded_at: float = 0.0
    refreshes: int = 0
    last_error: str | None = None
    _task: asyncio.Task[None] | None = None

    def refresh(self, force: bool = False) -> bool:
        """Reload if the clock moved (blocking: a worker thread); True if a new snapshot was swapped in."""
        if self.source is None:
            return False
        store = self.source()
        releases = ReleaseStore(store)
        clock = releases.clock()
        if clock == self.clock and not force:
            self.loaded_at = time.time()
            return False
        clock, states, by_id = releases.snapshot()
        prompts = PromptStore(store)
        pinned: dict[str, PromptVersion] = {}
        for release in by_id.values():
            ref = release.spec.get("prompt")
            if ref and ref not in pinned:
                name, _, number = ref.partition("@")
                found = prompts.get(None, name, int(number))
                if found is not None:
                    pinned[ref] = found
        resolved: dict[str, ResolvedAlias] = {}
        for alias, state in states.items():
            arms = [a for a in state.arms or [] if a["arm"] != "shadow"]
            arms = arms or [{"arm": "active", "release": state.active, "weight": 1.0}]
            shadow = next((a for a in state.arms or [] if a["arm"] == "shadow"), None)
            total = sum(float(a["weight"]) for a in arms) or 1.0
            built: list[Arm] = []
            running = 0.0
            for arm in arms:
                chosen = by_id.get(arm["release"]) if arm["release"] else None
                running += float(arm["weight"]) / total
                prompt = pinned.get(chosen.spec.get("prompt") or "") if chosen else None
                built.append(Arm(arm["arm"], chosen, prompt, running))
            mirror = None
            if shadow is not None and shadow["release"] in by_id:
                release = by_id[shadow["release"]]
                mirror = Arm("shadow", release, pinned.get(release.spec.get("prompt") or ""), 1.0)
            if len(built) == 1 and built[0].release is None and mirror is None:
                continue  # the base config: nothing to apply
            fraction = min(1.0, float(shadow["weight"]) / 100.0) if mirror is not None and shadow else 0.0
            resolved[alias] = ResolvedAlias(state, tuple(built), mirror, fraction)
        self.aliases = resolved  # one assignment: requests see the old dict or the new one
        self.prompts = {}  # labels may have moved; versions are re-read on first use
        self.clock = clock
        self.loaded_at = time.time()
        self.refreshes += 1
        return True

    def prompt_lookup(self, tenant: str | None, ref: str) -> PromptVersion | GatewayError | None:
        """A cached resolution of ``ref`` for ``tenant`` (a cached error for a missing one), or None."""
        return self.prompts.get((tenant, ref))

    def prompt_resolve(self, tenant: str | None, ref: str) -> PromptVersion | GatewayError:
        """Resolve ``ref`` from the store and keep the answer (blocking: a worker thread)."""
        if self.source is None:
            from opsgate.domain.errors import NotFoundError

            return NotFoundError("prompts need the record store (record.store).", param="metadata.prompt")
        try:
            found: PromptVersion | GatewayError = PromptStore(self.source()).resolve(tenant, ref)
        except GatewayError as error:
            found = error
        if len(self.prompts) >= MAX_PROMPT_ENTRIES:
            self.prompts = {}  # bounded: a client spraying names costs reads, never memory
        self.prompts[(tenant, ref)] = found
        return found

    async def start(self, wait_seconds: float = 3.0) -> None:
        """Load once (so the first request sees releases), then poll in the background. A store that does
        not answer within ``wait_seconds`` must not hold up the start (the pool's own timeout is 10 s,
        and a restart during a database outage would wait for it): the first load then goes on in the
        background and requests get the YAML config until it lands, as when it fails."""
        if self.source is None:
            return
        first = asyncio.create_task(asyncio.to_thread(self.refresh, True), name="opsgate-release-first-load")
        done, _ = await asyncio.wait({first}, timeout=wait_seconds)
        if done:
            self._first_load_ended(first)
        else:
            self.last_error = f"first load not finished after {wait_seconds:g} s"
            log.warning(
                "releases: the store has not answered in %g s; serving the YAML config until it does", wait_seconds
            )
        self._task = asyncio.create_task(self._run(None if done else first), name="opsgate-release-cache")

    def _first_load_ended(self, first: asyncio.Task[bool]) -> None:
        error = first.exception()
        if error is None:
            self.last_error = None
            return
        self.last_error = (
            f"{type(error).__name__}: {error}"  # the store may be down at start: keep serving the base config
        )
        log.warning("releases: first load failed (%s); serving the YAML config until it works", error)

    async def close(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, first: asyncio.Task[bool] | None) -> None:
        if first is not None:
            try:
                await asyncio.wait({first})
            except asyncio.CancelledError:
                first.cancel()  # the thread finishes on its own; nobody reads its answer
                raise
            self._first_load_ended(first)
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await asyncio.to_thread(self.refresh)
                self.last_error = None
            except Exception as error:  # keep the last snapshot; say so in /readyz
                if self.last_error is None:
                    log.warning("releases: refresh failed: %s", error)
                self.last_error = f"{type(error).__name__}: {error}"

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: the clock seen, the snapshot's age, aliases with releases, the last error."""
        return {
            "clock": self.clock,
            "age_seconds": round(time.time() - self.loaded_at, 3) if self.loaded_at else None,
            "aliases": {
                name: {
                    "active": r.state.active,
                    "experiment": r.state.experiment,
                    "arms": [a.name for a in r.arms],
                }
                for name, r in self.aliases.items()
            },
            "refreshes": self.refreshes,
            "last_error": self.last_error,
        }
