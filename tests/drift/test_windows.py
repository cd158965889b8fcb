"""Window summaries: serialisation, weighted reservoir merges, the store (SQLite and PostgreSQL),
the collector (bounded queue, replicas' own rows, flush), history and the lease."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from opsgate.drift.checker import DriftChecker, WindowError, choose_windows
from opsgate.drift.collector import DriftCollector
from opsgate.drift.engine import Span
from opsgate.drift.history import GLOBAL, DriftHistory
from opsgate.drift.summary import Reservoir, WindowSummary, length_bin
from opsgate.drift.windows import BucketRow, WindowStore
from opsgate.store.sql import SqlRecordStore
from tests.drift.conftest import CachedEncoder, config, models, observations, summarise
from tests.drift.traffic import mixed, record
from tests.store.conftest import pg_url, store_url  # noqa: F401 - fixtures

HOUR = 3600


@pytest.fixture()
def store(store_url: str) -> Iterator[SqlRecordStore]:  # noqa: F811
    from opsgate.store.record_log import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


def test_summary_round_trips_through_a_row(encoder: CachedEncoder) -> None:
    summary = summarise(observations(mixed(random.Random(1), 300, de=0.2, attack=0.1)), encoder, capacity=32)
    data, blob = summary.to_row()
    back = WindowSummary.from_row(data, blob, 32)
    assert back.requests == 300 and back.language == summary.language
    assert back.prompt_length.bins == summary.prompt_length.bins
    assert back.input_failed["prompt_injection"] == summary.input_failed["prompt_injection"] > 0
    assert len(back.prompt_embeddings) == 32 and back.prompt_embeddings.population == 300
    # int8 storage keeps the direction: cosine with the float vectors above 0.999.
    cos = np.sum(back.prompt_embeddings.array() * summary.prompt_embeddings.array(), axis=1)
    assert cos.min() > 0.999


def test_merge_follows_traffic_not_bucket_count() -> None:
    # A busy bucket (9,000 records, all vectors "A") and a quiet one (1,000, all "B"), 64 kept each
    # as the collector keeps them (every record offered with its key): the merged sample must be
    # ~90% A, not 50/50.
    rng = np.random.default_rng(0)
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    counts = []
    for _ in range(200):
        busy, quiet = Reservoir(64), Reservoir(64)
        busy.population, quiet.population = 9000, 1000
        for key in rng.random(9000):
            busy.add(float(key), a)
        for key in rng.random(1000):
            quiet.add(float(key), b)
        merged = Reservoir.merge([busy, quiet], 64)
        counts.append(int(np.sum(merged.array()[:, 0] > 0.5)))
        assert merged.population == 10_000 and len(merged) == 64
    share = float(np.mean(counts)) / 64
    assert 0.85 <= share <= 0.95, share


def test_length_bins_are_quarter_octaves() -> None:
    assert length_bin(0) == 0 and length_bin(1) == 1 and length_bin(2) == 5 and length_bin(16) == 17
    assert length_bin(10**15) == length_bin(10**16)  # capped, never unbounded


def test_store_merges_replicas_and_buckets(store: SqlRecordStore) -> None:
    windows = WindowStore(store)
    rng = random.Random(2)
    base = 1_765_000_000 // HOUR * HOUR
    for replica in ("r1", "r2"):
        rows = []
        for hour in range(3):
            summary = WindowSummary(capacity=16)
            for obs in observations(mixed(rng, 50)):
                summary.add(obs)
            rows.append(BucketRow("chat-model", base + hour * HOUR, "", summary))
        tenant_summary = WindowSummary(capacity=16)
        for obs in observations(mixed(rng, 10)):
            tenant_summary.add(obs)
        rows.append(BucketRow("chat-model", base, "acme", tenant_summary))
        assert windows.write(replica, rows) == 4
        assert windows.write(replica, rows) == 4  # an upsert: same rows again do not double
    merged, read = windows.read("chat-model", None, base, base + 3 * HOUR, 64)
    assert read == 8 and merged.requests == 2 * (150 + 10)
    only, _ = windows.read("chat-model", "acme", base, base + 3 * HOUR, 64)
    assert only.requests == 20
    first_two, _ = windows.read("chat-model", None, base, base + 2 * HOUR, 64)
    assert first_two.requests == 2 * (100 + 10)
    assert windows.scopes(base) == [("chat-model", ""), ("chat-model", "acme")]
    assert windows.prune(base + HOUR) == 4
    assert windows.read("chat-model", None, base, base + 3 * HOUR, 64)[0].requests == 200


def test_lease_one_holder_at_a_time(store: SqlRecordStore) -> None:
    windows = WindowStore(store)
    assert windows.try_lead("a", 30, now=1000)
    assert not windows.try_lead("b", 30, now=1010)
    assert windows.try_lead("a", 30, now=1020)  # renewal
    assert windows.try_lead("b", 30, now=1051)  # a lapsed
    assert windows.leader() == ("b", 1081)
    windows.release("b")
    assert windows.try_lead("a", 30, now=1052)


def test_history_lists_newest_first_and_scopes_tenants(store: SqlRecordStore) -> None:
    history = DriftHistory(store)
    for i, (alias, tenant) in enumerate([("m1", None), ("m1", "acme"), ("m2", None), ("m1", None), ("m1", "beta")]):
        history.add(
            {
                "alias": alias,
                "tenant": tenant,
                "checked_at": 100.0 + i,
                "drifted": i % 2 == 0,
                "score": 0.1,
                "tests": [],
            }
        )
    assert [r["checked_at"] for r in history.list()] == [104.0, 103.0, 102.0, 101.0, 100.0]
    assert [r["checked_at"] for r in history.list(alias="m1", tenant=GLOBAL)] == [103.0, 100.0]
    assert [r["tenant"] for r in history.list(tenant="acme")] == ["acme"]
    assert [r["checked_at"] for r in history.list(since=103.0)] == [104.0, 103.0]
    assert len(history.list(limit=2)) == 2
    assert {(r["alias"], r["tenant"], r["checked_at"]) for r in history.latest(GLOBAL)} == {
        ("m1", None, 103.0),
        ("m2", None, 102.0),
    }
    assert history.list(drifted=True)[0]["checked_at"] == 104.0


def test_windows_are_whole_buckets_and_validated() -> None:
    settings = config(bucket="1h", current_window="1d", reference={"kind": "trailing", "window": "7d"})
    now = 1_765_000_000.0
    spans = choose_windows(settings, now)
    assert spans.current.end == (now // HOUR + 1) * HOUR and spans.current.end - spans.current.start == 86400
    assert spans.reference.end == spans.current.start and spans.reference.end - spans.reference.start == 7 * 86400
    assert spans.kind == "trailing"
    assert choose_windows(settings, now, baseline=(0.0, 1000.0)).kind == "fixed"
    with pytest.raises(WindowError, match="overlap"):
        choose_windows(settings, now, reference=Span(spans.current.start, spans.current.end))
    with pytest.raises(WindowError, match="end after"):
        choose_windows(settings, now, current=Span(10, 10))
    with pytest.raises(WindowError, match="longer"):
        choose_windows(settings, now, current=Span(0, 1e12))


def test_config_rejects_bad_values() -> None:
    from pydantic import ValidationError

    for bad in (
        {"alpha": 0},
        {"alpha": float("nan")},
        {"reservoir": 10**6},
        {"interval": "0s"},
        {"reference": {"kind": "fixed"}},
        {"reference": {"kind": "fixed", "start": 10, "end": 5}},
        {"aliases": ["bad\x00name"]},
        {"unknown": 1},
        {"min_effect": {"total_variation": 2}},
    ):
        with pytest.raises(ValidationError):
            config(**bad)


def test_collector_drops_when_full_and_never_blocks(tmp_path: Path) -> None:
    collector = DriftCollector(config(queue=10, embeddings=False), None)
    rng = random.Random(3)
    for _ in range(25):
        collector.write(record(rng))
    assert collector.counts["received"] == 25 and collector.counts["dropped"] == 15
    assert collector.drain() == 10 and collector.counts["summarised"] == 10


def test_collector_flushes_its_own_rows_and_embeds(store: SqlRecordStore, encoder: CachedEncoder) -> None:
    windows = WindowStore(store)
    settings = config(bucket="1h", flush_interval=0.1, reservoir=16, max_embeddings_per_second=1000)
    collectors = [DriftCollector(settings, windows, embedder=encoder, replica=f"r{i}", seed=i) for i in range(2)]
    rng = random.Random(4)
    ts = 1_765_000_000.0
    for collector in collectors:
        for _ in range(100):
            collector.write(record(rng, ts=ts))
        collector.drain()
        collector.embed_pending()
        assert collector.flush(now=ts) == 1
    merged, rows = windows.read("chat-model", None, int(ts // HOUR * HOUR), int(ts // HOUR * HOUR) + HOUR, 64)
    assert rows == 2 and merged.requests == 200
    assert len(merged.prompt_embeddings) == 32 and len(merged.answer_embeddings) == 32
    assert collectors[0].counts["embedded"] >= 32


def test_collector_threads_summarise_and_flush(store: SqlRecordStore) -> None:
    windows = WindowStore(store)
    collector = DriftCollector(config(flush_interval=0.1, embeddings=False), windows, replica="threads")
    collector.start()
    rng = random.Random(5)
    ts = 1_765_000_000.0
    writers = [
        threading.Thread(target=lambda: [collector.write(record(rng, ts=ts)) for _ in range(200)]) for _ in range(3)
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    from tests.support import wait_until

    bucket = int(ts // HOUR * HOUR)
    assert wait_until(lambda: windows.read("chat-model", None, bucket, bucket + HOUR, 8)[0].requests == 600, 60)
    collector.stop()
    assert collector.counts["dropped"] == 0 and collector.status()["buckets"] == 0


def test_checker_stores_results(store: SqlRecordStore) -> None:
    from opsgate.domain.config import GatewayConfig

    gateway = GatewayConfig.model_validate(
        {"models": models("chat-model"), "drift": {"enabled": True, "embeddings": False, "bucket": "1h"}}
    )
    checker = DriftChecker(gateway, store)
    windows = WindowStore(store)
    rng = random.Random(6)
    now = 1_765_000_000.0
    for hours_ago, shares in ((30, {"de": 0.02}), (2, {"de": 0.4})):
        summary = WindowSummary(capacity=16)
        for obs in observations(mixed(rng, 400, **shares)):
            summary.add(obs)
        windows.write("r", [BucketRow("chat-model", int((now - hours_ago * HOUR) // HOUR * HOUR), "", summary)])
        # Rows of an alias that is not configured (left by an older version, or a model since removed).
        windows.write("r", [BucketRow("ghost-model", int((now - hours_ago * HOUR) // HOUR * HOUR), "", summary)])
    assert checker.scopes(now) == [("chat-model", None)]  # the unconfigured alias is never checked
    result = checker.check("chat-model", now=now)
    assert result["drifted"] and result["tests"][0]["feature"] == "prompt_language"
    assert DriftHistory(store).list()[0]["id"] == result["id"]
