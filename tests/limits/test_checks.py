"""The arithmetic both stores share: scopes, counter keys, periods, Retry-After, message text."""

from __future__ import annotations

import datetime as dt

import pytest

from opsgate.domain.reliability_config import LimitRule
from opsgate.limits.checks import (
    Demand,
    Identity,
    Tally,
    amount_text,
    duration_text,
    exceeds,
    plan,
    retry_after,
    rule_ids,
)

WHO = Identity(key="k1", user="alice", model="gpt")


def ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("per", "model", "counted", "said"),
    [
        ("user", None, "user=alice", "user alice"),
        ("key", None, "key=k1", "key k1"),
        ("model", None, "model=gpt", "model gpt"),
        ("user+model", None, "model=gpt|user=alice", "user alice on model gpt"),
        ("key+model", None, "model=gpt|key=k1", "key k1 on model gpt"),
        ("global", None, "all", "all requests"),
        ("user", "gpt", "user=alice", "user alice on model gpt"),
        ("global", "gpt", "all", "all requests on model gpt"),
    ],
)
def test_scope_names_the_counted_party(per: str, model: str | None, counted: str, said: str) -> None:
    rule = LimitRule.model_validate({"per": per, "model": model, "requests_per_minute": 1})
    assert WHO.scope(rule) == (counted, said)


def test_per_user_counts_are_scoped_by_tenant_and_no_user_is_the_keys_own() -> None:
    """FINDINGS #5: the raw ``user`` string was the whole key, so tenant A used up tenant B's "alice",
    and every request without ``user`` (most SDK calls), of every tenant, shared one "anonymous" bucket."""
    user = LimitRule(per="user", requests_per_minute=1)
    user_model = LimitRule(per="user+model", requests_per_minute=1)
    a_alice = Identity(key="ka", user="alice", model="gpt", tenant="A")
    b_alice = Identity(key="kb", user="alice", model="gpt", tenant="B")
    assert a_alice.scope(user) == ("tenant=1:A|user=alice", "user alice")
    assert a_alice.scope(user_model) == ("model=gpt|tenant=1:A|user=alice", "user alice on model gpt")
    assert a_alice.scope(user)[0] != b_alice.scope(user)[0]
    # The same tenant's keys share its users; no tenant name or user can pose as another tenant's user.
    assert Identity(key="ka2", user="alice", model="gpt", tenant="A").scope(user) == a_alice.scope(user)
    forged = Identity(key="k", user="x|user=alice", model="gpt", tenant="A|user=x")
    assert forged.scope(user)[0] != Identity(key="k", user="x|user=alice", model="gpt", tenant="A").scope(user)[0]
    assert forged.scope(user)[0] != Identity(key="k", user="alice", model="gpt", tenant="A|user=x|user").scope(user)[0]
    # No user named: each key's own bucket, whatever the tenant, and never a named user's.
    anon_a = Identity(key="ka", user=None, model="gpt", tenant="A")
    anon_b = Identity(key="kb", user=None, model="gpt", tenant="B")
    assert anon_a.scope(user) == ("nouser=ka", "requests without a user on key ka")
    assert anon_a.scope(user)[0] != anon_b.scope(user)[0]
    assert anon_a.scope(user)[0] not in {
        Identity(key="ka", user=name, model="gpt", tenant=tenant).scope(user)[0]
        for name in ("anonymous", "ka", "nouser=ka")
        for tenant in (None, "A")
    }
    assert anon_a.scope(user_model) == ("model=gpt|nouser=ka", "requests without a user on key ka on model gpt")


def test_rule_ids_do_not_depend_on_order_or_limits() -> None:
    a = LimitRule(per="user", requests_per_minute=5)
    b = LimitRule(per="user", model="gpt", spend_per_month=10)
    c = LimitRule(per="user", tokens_per_minute=100)
    assert rule_ids([a, b, c]) == ["user@*", "user@gpt", "user@*#2"]
    assert rule_ids([b, a.model_copy(update={"requests_per_minute": 50})]) == ["user@gpt", "user@*"]


def test_plan_keys_periods_and_model_filter() -> None:
    now = ts("2025-12-31T23:59:45")
    rules = [
        LimitRule(per="user", requests_per_minute=10, tokens_per_minute=1000, concurrent=2),
        LimitRule(per="key", spend_per_day=5, spend_per_month=50),
        LimitRule(per="user", model="other", requests_per_minute=1),  # not this model: no checks
    ]
    checks = plan(rules, rule_ids(rules), WHO, Demand(tokens=300, cost=0.25), now, "m1", 900)
    minute = int(now // 60)
    assert [(c.metric, c.key) for c in checks] == [
        ("requests_per_minute", f"rpm:user@*:user=alice:{minute}"),
        ("tokens_per_minute", f"tpm:user@*:user=alice:{minute}"),
        ("concurrent", "conc:user@*:user=alice"),
        ("spend_per_day", "day:key@*:key=k1:2025-12-31"),
        ("spend_per_month", "month:key@*:key=k1:2025-12"),
    ]
    rpm, tpm, conc, day, month = checks
    assert rpm.prev_key == f"rpm:user@*:user=alice:{minute - 1}"
    assert rpm.prev_share == pytest.approx(0.25) and rpm.resets_in == pytest.approx(15)
    assert (rpm.amount, tpm.amount, day.amount) == (1.0, 300.0, 0.25)
    assert conc.expires == now + 900 and conc.member == "m1"
    assert day.resets_in == pytest.approx(15) and month.resets_in == pytest.approx(15)  # New Year rolls both
    assert day.ttl >= 15 + 86400 and day.code == "budget_exceeded" and rpm.code == "rate_limit_exceeded"


def test_no_price_means_no_spend_checks() -> None:
    rules = [LimitRule(per="user", spend_per_day=5)]
    assert plan(rules, rule_ids(rules), WHO, Demand(tokens=10, cost=None), 0.0, "m", 900) == []


@pytest.mark.parametrize(
    ("into_minute", "current", "previous", "limit", "amount"),
    [
        (10.0, 3, 0, 3, 1),  # this minute is full: wait for it to become "previous" and slide out
        (30.0, 0, 6, 3, 1),  # the previous minute is what fills the window
        (5.0, 2, 4, 5, 1),
        (50.0, 40, 100, 100, 50),
        (0.0, 100, 0, 100, 100),
    ],
)
def test_retry_after_is_when_the_request_first_fits(
    into_minute: float, current: float, previous: float, limit: int, amount: int
) -> None:
    """Replay the sliding window forward: at Retry-After the request fits, a second earlier it does not."""
    start = 60 * 1000 + into_minute
    rules = [LimitRule(per="user", tokens_per_minute=limit)]

    def used_at(t: float) -> float:
        minutes_on = int(t // 60) - int(start // 60)
        buckets = {0: current, -1: previous}
        cur, prev = buckets.get(minutes_on, 0), buckets.get(minutes_on - 1, 0)
        return cur + prev * (1 - (t % 60) / 60)

    [check] = plan(rules, rule_ids(rules), WHO, Demand(tokens=amount, cost=None), start, "m", 900)
    assert exceeds(used_at(start), amount, limit)
    wait = retry_after(check, Tally(used_at(start), current, previous))
    assert not exceeds(used_at(start + wait + 1e-6), amount, limit)
    assert exceeds(used_at(start + wait - 1.0), amount, limit)


def test_text_helpers() -> None:
    assert [duration_text(s) for s in (0.2, 12, 185, 3 * 3600 + 600, 90000)] == ["1s", "12s", "3m5s", "3h10m", "1d1h"]
    assert amount_text("tokens_per_minute", 999.9999) == "1000"
    assert amount_text("requests_per_minute", 2.5) == "2.5"
    assert amount_text("spend_per_day", 0.0000326) == "0.000033"
    assert amount_text("spend_per_day", 12.0) == "12"
