"""Shadow slots are shared fairly between tenants: one tenant's flood cannot take them all.

Before, ``ShadowMirror.submit`` had one ``in_flight`` bound for everyone: a tenant sending fast kept
every slot busy and another tenant's requests were all dropped (probe 9, F8: B 6 of 20 shadowed while
A flooded), so the experiment's shadow evaluation scored the candidate on the flooding tenant's prompts.
"""

from __future__ import annotations

import asyncio

from opsgate.domain.context import GatewayResponse, RequestContext
from opsgate.evals.store import EvalStore
from opsgate.releases.shadow import ItemPayloads, ShadowMirror
from opsgate.store.sql import SqlRecordStore
from tests.releases.test_shadow_payloads import arm, candidate, live, store

__all__ = ["store"]  # the SQLite/PostgreSQL fixture


def test_a_flooding_tenant_leaves_slots_to_others(store: SqlRecordStore) -> None:
    async def go() -> tuple[ShadowMirror, dict[str, list[bool]]]:
        gate = asyncio.Event()

        async def held_candidate(ctx: RequestContext) -> GatewayResponse:
            await gate.wait()  # every call holds its slot until the test lets them all go
            return await candidate(ctx)

        mirror = ShadowMirror(held_candidate, lambda: EvalStore(store), max_in_flight=4, payloads=ItemPayloads())
        taken = {
            "A": [mirror.submit(live(f"a-{n}", tenant="tenA"), arm(), "exp_1") for n in range(10)],
            "B": [mirror.submit(live("b-0", tenant="tenB"), arm(), "exp_1")],
            "C": [mirror.submit(live("c-0", tenant="tenC"), arm(), "exp_1")],
        }
        gate.set()
        await asyncio.wait(list(mirror._tasks), timeout=60)
        taken["A again"] = [mirror.submit(live("a-10", tenant="tenA"), arm(), "exp_1")]
        await asyncio.wait(list(mirror._tasks), timeout=60)
        return mirror, taken

    mirror, taken = asyncio.run(go())
    # A holds at most max_in_flight - 1; B, arriving during the flood, gets the slot left open; with
    # every slot then busy C is dropped (fairness is a share of slots, not a queue).
    assert taken["A"] == [True] * 3 + [False] * 7
    assert taken["B"] == [True] and taken["C"] == [False]
    assert taken["A again"] == [True]  # once the slots are free again, A uses them
    assert mirror.status() == {"in_flight": 0, "sent": 5, "dropped": 8, "failed": 0}
    evals = EvalStore(store)
    assert len(evals.all_items("shadow:exp_1:tenA")) == 4
    assert [i["item_key"] for i in evals.all_items("shadow:exp_1:tenB")] == ["b-0"]


def test_tenants_holding_slots_share_them_evenly() -> None:
    mirror = ShadowMirror(candidate, None, max_in_flight=8)
    # Bookkeeping only (no calls run): B holds 1 and A 3 of 8 slots.
    mirror.in_flight, mirror._held = 4, {"tenA": 3, "tenB": 1}
    assert mirror._admit("tenA")  # 3 < ceil(8 / 2)
    mirror.in_flight, mirror._held = 5, {"tenA": 4, "tenB": 1}
    assert not mirror._admit("tenA")  # its even share is 4
    assert mirror._admit("tenB") and mirror._admit(None)  # the operator is a tenant like any other
    mirror.in_flight, mirror._held = 7, {"tenA": 4, "tenB": 3}
    assert not mirror._admit("tenB")  # the last free slot is for a tenant holding none
    assert mirror._admit("tenC")
    # One slot in all: whoever comes first; no reserve can be kept.
    single = ShadowMirror(candidate, None, max_in_flight=1)
    assert single._admit("tenA")
