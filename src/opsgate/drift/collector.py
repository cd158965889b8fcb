"""The drift collector: a record sink that summarises traffic off the request path.

``write`` extracts the record's few cheap features (lengths, verdict names, ~2 KB of each text: see
``features.extract``) and puts them in a queue bounded by count and by bytes (a full queue drops
and counts: the request path never waits on drift, and a 4 MB prompt costs what a short one does).
Records of aliases that are not configured models (a 404 for ``ghost-model``) are never summarised.
A summariser thread turns records into per-bucket summaries; an
embedding thread runs the embedded MiniLM on the few texts that would enter a bucket's reservoir
(bounded by a sample rate, a per-second budget and its own bounded queue). Every
``flush_interval`` seconds the summariser upserts this replica's changed buckets; a bucket is
forgotten once it ended and was flushed. A row the store refuses as data is dropped and counted
(``flush_refused``); it never blocks the other rows.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from numpy.typing import NDArray

from opsgate.domain.drift_config import DriftConfig
from opsgate.drift.features import Observation, complete, extract
from opsgate.drift.summary import WindowSummary
from opsgate.drift.windows import NO_TENANT, BucketRow, WindowStore
from opsgate.store.failures import refused_data, store_down

log = logging.getLogger("opsgate.drift.collector")
Embedder = Callable[[list[str]], NDArray[np.float32]]
BucketKey = tuple[str, int, str]  # alias, bucket start, tenant
EMBED_QUEUE = 512
EMBED_BATCH = 16
EMBED_CHARS = 2000  # MiniLM reads 256 tokens; more text is cut before tokenizing anyway
KnownAliases = Callable[[], Collection[str]]


def replica_id() -> str:
    """This process's id in the drift tables: host, pid and a random part (a restart writes new rows)."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def minilm_embedder(model_dir: str | None) -> Embedder:
    """The embedded MiniLM as an embedder (loaded now, in the calling thread)."""
    from opsgate.backends.minilm import shared_encoder

    encoder = shared_encoder(model_dir)

    def embed(texts: list[str]) -> NDArray[np.float32]:
        vectors, _ = encoder.encode(texts, max_batch=EMBED_BATCH)
        return vectors

    return embed


class _Budget:
    """A token bucket: at most ``rate`` embeddings per second, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(rate, 1.0)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class DriftCollector:
    """Record sink + summariser + embedder; flushes summaries to the store."""

    def __init__(
        self,
        config: DriftConfig,
        windows: WindowStore | None,
        *,
        embedder: Embedder | None = None,
        replica: str | None = None,
        seed: int | None = None,
        aliases: KnownAliases | None = None,
    ) -> None:
        """``aliases``: the configured model aliases now (called per record, so keep it cheap); records
        of any other alias are left out. None: every well-formed alias (tests, the bench)."""
        self.config = config
        self.windows = windows
        self.replica = replica or replica_id()
        self._embedder_source = embedder
        self._embed: Embedder | None = None
        self.bucket_seconds = config.bucket_seconds
        self._aliases = aliases
        self._queue: queue.Queue[tuple[Observation, int]] = queue.Queue(maxsize=config.queue)
        self._queued_bytes = 0
        self._bytes_lock = threading.Lock()
        self._embed_queue: queue.Queue[tuple[BucketKey, str, float, str]] = queue.Queue(maxsize=EMBED_QUEUE)
        self._buckets: dict[BucketKey, WindowSummary] = {}
        self._dirty: set[BucketKey] = set()
        self._forgotten: set[BucketKey] = set()  # flushed and dropped from memory; late records merge
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._budget = _Budget(config.max_embeddings_per_second)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.embed_error: str | None = None
        self.last_flush: float | None = None
        self.counts = {
            "received": 0,
            "dropped": 0,
            "summarised": 0,
            "ignored": 0,
            "unknown_alias": 0,
            "sampled": 0,
            "embed_dropped": 0,
            "embed_skipped": 0,
            "embedded": 0,
            "embed_late": 0,
            "flushed_rows": 0,
            "flush_errors": 0,
            "flush_refused": 0,
        }

    # -- the request path -------------------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        """Enqueue the record's features; drop and count them when the queue is full (never blocks)."""
        self.counts["received"] += 1
        obs = self._extract(record)
        if obs is None:
            return
        size = obs.held_bytes
        with self._bytes_lock:
            if self._queued_bytes + size > self.config.queue_bytes:
                self.counts["dropped"] += 1
                return
            self._queued_bytes += size
        try:
            self._queue.put_nowait((obs, size))
        except queue.Full:
            self._release(size)
            self.counts["dropped"] += 1

    def _extract(self, record: dict[str, Any]) -> Observation | None:
        try:
            obs = extract(record)
        except Exception:  # one odd record must not fail the request path
            log.exception("drift: could not read record %s", str(record.get("id"))[:100])
            obs = None
        if obs is None:
            self.counts["ignored"] += 1
            return None
        if self._aliases is not None and obs.alias not in self._aliases():
            self.counts["unknown_alias"] += 1  # a 404 for a made-up model: not an alias to monitor
            return None
        return obs

    def _release(self, size: int) -> None:
        with self._bytes_lock:
            self._queued_bytes -= size

    @property
    def queued_bytes(self) -> int:
        """About how many bytes the queued records hold now (bounded by ``drift.queue_bytes``)."""
        return self._queued_bytes

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the summariser and (if embeddings are on) the embedding thread."""
        self._stop.clear()
        self._threads = [threading.Thread(target=self._summarise_loop, name="drift-summarise", daemon=True)]
        if self.config.embeddings:
            self._threads.append(threading.Thread(target=self._embed_loop, name="drift-embed", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads and flush what was summarised."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.drain()
        self.flush(final=True)

    # -- summarising --------------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> None:
        """Summarise one record now (tests and the bench; the summariser thread reads the queue)."""
        obs = self._extract(record)
        if obs is not None:
            self.add_observation(obs)

    def add_observation(self, obs: Observation) -> None:
        """Summarise one record's features (the summariser thread calls this)."""
        # Language detection is the costly part of a record (py3langid); a uniform Bernoulli sample of
        # prompts keeps the chi-square valid and the summariser ahead of traffic.
        complete(obs, language=self._rng.random() < self.config.language_sample_rate)
        bucket = int(obs.ts // self.bucket_seconds) * self.bucket_seconds
        key = (obs.alias, bucket, obs.tenant or NO_TENANT)
        revived = self._revive(key) if key in self._forgotten and key not in self._buckets else None
        with self._lock:
            summary = self._buckets.get(key)
            if summary is None:
                summary = self._buckets[key] = revived or WindowSummary(capacity=self.config.reservoir)
            summary.add(obs)
            self._dirty.add(key)
            wanted = []
            if self.config.embeddings:
                for side, text, reservoir in (
                    ("prompt", obs.prompt_text, summary.prompt_embeddings),
                    ("answer", obs.answer_text, summary.answer_embeddings),
                ):
                    if text is None or self._rng.random() >= self.config.sample_rate:
                        continue
                    u = self._rng.random()
                    if reservoir.wants(u):
                        wanted.append((side, u, text[:EMBED_CHARS]))
        self.counts["summarised"] += 1
        for side, u, text in wanted:
            if not self._budget.take():
                self.counts["embed_skipped"] += 1
                continue
            try:
                self._embed_queue.put_nowait((key, side, u, text))
                self.counts["sampled"] += 1
            except queue.Full:
                self.counts["embed_dropped"] += 1

    def drain(self) -> int:
        """Summarise everything queued now; how many records."""
        done = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return done
            self._add_safely(item)
            done += 1

    def _add_safely(self, item: tuple[Observation, int]) -> None:
        obs, size = item
        self._release(size)
        try:
            self.add_observation(obs)
        except Exception:  # one odd record must not stop the summariser
            self.counts["ignored"] += 1
            log.exception("drift: could not summarise a record of %r", obs.alias[:100])

    def _summarise_loop(self) -> None:
        next_flush = time.monotonic() + self.config.flush_interval
        while not self._stop.is_set():
            timeout = max(0.01, min(0.5, next_flush - time.monotonic()))
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is not None:
                self._add_safely(item)
            if time.monotonic() >= next_flush:
                self.flush()
                next_flush = time.monotonic() + self.config.flush_interval

    # -- embedding ----------------------------------------------------------------------------------

    def _load_embedder(self) -> Embedder | None:
        source = self._embedder_source
        try:
            return minilm_embedder(self.config.embedding_model) if source is None else source
        except Exception as error:  # a missing model turns embeddings off; counts and rates still work
            self.embed_error = f"{type(error).__name__}: {error}"[:300]
            log.warning("drift: embeddings off: %s", self.embed_error)
            return None

    def _embed_loop(self) -> None:
        self._embed = self._load_embedder()
        while not self._stop.is_set():
            try:
                first = self._embed_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < EMBED_BATCH:
                try:
                    batch.append(self._embed_queue.get_nowait())
                except queue.Empty:
                    break
            self.embed_batch(batch)

    def embed_batch(self, batch: list[tuple[BucketKey, str, float, str]]) -> None:
        """Embed queued texts and put them in their buckets' reservoirs."""
        if self._embed is None:
            self.counts["embed_dropped"] += len(batch)
            return
        try:
            vectors = self._embed([text for _, _, _, text in batch])
        except Exception as error:
            self.counts["embed_dropped"] += len(batch)
            self.embed_error = f"{type(error).__name__}: {error}"[:300]
            log.exception("drift: embedding failed")
            return
        # Embeddings that come back after their bucket was flushed and forgotten (a slow, busy CPU)
        # go into its stored row, like late records.
        revived = {
            key: self._revive(key) for key, _, _, _ in batch if key in self._forgotten and key not in self._buckets
        }
        with self._lock:
            for key, stored in revived.items():
                self._buckets.setdefault(key, stored)
            for (key, side, u, _), vector in zip(batch, vectors, strict=True):
                summary = self._buckets.get(key)
                if summary is None:
                    self.counts["embed_late"] += 1  # forgotten long ago (the memory bound): lost
                    continue
                reservoir = summary.prompt_embeddings if side == "prompt" else summary.answer_embeddings
                reservoir.add(u, np.asarray(vector, dtype=np.float32))
                self._dirty.add(key)
        self.counts["embedded"] += len(batch)

    def embed_pending(self) -> int:
        """Embed everything queued now, in this thread (tests, the bench, shutdown)."""
        if self._embed is None:
            self._embed = self._load_embedder()
        done = 0
        while True:
            batch: list[tuple[BucketKey, str, float, str]] = []
            while len(batch) < EMBED_BATCH:
                try:
                    batch.append(self._embed_queue.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return done
            self.embed_batch(batch)
            done += len(batch)

    # -- flushing -----------------------------------------------------------------------------------

    def flush(self, final: bool = False, now: float | None = None) -> int:
        """Upsert changed buckets; forget buckets that ended long enough ago. Rows written."""
        now = time.time() if now is None else now
        with self._lock:
            keys = list(self._dirty)
            rows = [BucketRow(k[0], k[1], k[2], _copy(self._buckets[k])) for k in keys]
            self._dirty.clear()
        if not rows or self.windows is None:
            return 0
        written, retry = self._write_rows(rows, now)
        if retry:
            with self._lock:
                self._dirty.update(retry)  # try again at the next flush
        if written == 0 and retry:
            return 0
        self.counts["flushed_rows"] += written
        self.last_flush = now
        # A bucket is kept a while after it ends, for late records and embeddings still in the queue.
        grace = self.bucket_seconds + max(300.0, 2 * self.config.flush_interval)
        with self._lock:
            for key in list(self._buckets):
                if key not in self._dirty and (final or key[1] + grace < now):
                    del self._buckets[key]
                    self._forgotten.add(key)
                    if len(self._forgotten) > 100_000:
                        self._forgotten.clear()  # bounded memory; a very late record then starts afresh
        return written

    def _write_rows(self, rows: list[BucketRow], now: float) -> tuple[int, list[BucketKey]]:
        """Write ``rows`` in one transaction; if that fails and the store is up, one by one, so a row
        the store refuses as data (dropped, counted) never blocks the others. Rows written, keys to retry."""
        assert self.windows is not None
        try:
            return self.windows.write(self.replica, rows, now=now), []
        except Exception as error:
            self.counts["flush_errors"] += 1
            if len(rows) == 1 or self._store_down(error):
                return self._failed_row(rows[0], error) if len(rows) == 1 else (0, [_key(r) for r in rows])
        written = 0
        retry: list[BucketKey] = []
        for index, row in enumerate(rows):
            try:
                written += self.windows.write(self.replica, [row], now=now)
            except Exception as error:
                if self._store_down(error):
                    log.warning("drift: the store went away while flushing: %s: %s", type(error).__name__, error)
                    return written, retry + [_key(r) for r in rows[index:]]
                retry += self._failed_row(row, error)[1]
        return written, retry

    def _failed_row(self, row: BucketRow, error: Exception) -> tuple[int, list[BucketKey]]:
        """(0 written, the keys to retry) for a row whose write failed: none if the store refused its data."""
        if not self._store_down(error) and self._refused(error):
            self.counts["flush_refused"] += 1
            log.error(
                "drift: the store refused the summary of %r (tenant %r), dropped: %s: %s",
                row.alias[:100],
                row.tenant[:100],
                type(error).__name__,
                str(error)[:300],
            )
            return 0, []
        log.warning("drift: flushing the summary of %r failed: %s: %s", row.alias[:100], type(error).__name__, error)
        return 0, [_key(row)]

    def _store_down(self, error: Exception) -> bool:
        try:
            return store_down(self.windows.store, error) if self.windows is not None else True
        except Exception:  # the store cannot even be opened
            return True

    def _refused(self, error: Exception) -> bool:
        try:
            return refused_data(self.windows.store, error) if self.windows is not None else False
        except Exception:
            return False

    def _revive(self, key: BucketKey) -> WindowSummary:
        """A summary for a bucket forgotten after its flush that got a late record (a long stream, a
        backlog): its stored row, so the next upsert adds to it instead of replacing it."""
        self._forgotten.discard(key)
        if self.windows is not None:
            try:
                stored = self.windows.own_row(self.replica, *key, capacity=self.config.reservoir)
            except Exception:
                log.exception("drift: reading a bucket back failed; its late records start a new row part")
                stored = None
            if stored is not None:
                return stored
        return WindowSummary(capacity=self.config.reservoir)

    def status(self) -> dict[str, Any]:
        """Counters for /readyz and the admin status."""
        return {
            **self.counts,
            "queued": self._queue.qsize(),
            "queued_bytes": self._queued_bytes,
            "embed_queued": self._embed_queue.qsize(),
            "buckets": len(self._buckets),
            "replica": self.replica,
            "last_flush": self.last_flush,
            "embed_error": self.embed_error,
        }


def _key(row: BucketRow) -> BucketKey:
    return (row.alias, row.bucket, row.tenant)


def _copy(summary: WindowSummary) -> WindowSummary:
    """A snapshot to serialise outside the lock (the counters are small; the reservoirs are copied)."""
    data, blob = summary.to_row()
    return WindowSummary.from_row(data, blob, summary.capacity)
