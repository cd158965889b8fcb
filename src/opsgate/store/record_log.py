"""The request log as one object: the sink the pipeline writes to, and the queries the API and CLI run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson

from opsgate.audit.chain import ChainReport, verify_chain
from opsgate.domain.config import RecordConfig
from opsgate.domain.errors import GatewayError
from opsgate.store.backlog import BacklogGate
from opsgate.store.crypto import PayloadCipher
from opsgate.store.journal import Journal
from opsgate.store.nesting import bounded_record_json
from opsgate.store.query import RecordQuery
from opsgate.store.rejected import RejectedLines, replay_rejected
from opsgate.store.sql import SqlRecordStore
from opsgate.store.writer import RecordWriter
from opsgate.store.writer_process import WriterProcess

log = logging.getLogger("opsgate.store")


class StoreUnavailable(GatewayError):
    """The record store cannot be reached right now."""

    status = 503
    error_type = "store_unavailable"


def open_store(url: str) -> SqlRecordStore:
    """The store a URL names: ``sqlite:///path`` or ``postgresql://…``."""
    if url.startswith("sqlite:///"):
        from opsgate.store.sqlite import SqliteRecordStore

        return SqliteRecordStore.from_url(url)
    from opsgate.store.postgres import PostgresRecordStore

    return PostgresRecordStore.from_url(url)


# The columns a record cannot do without, all plain values the pipeline sets itself.
_ESSENTIAL = (
    "id",
    "client_request_id",
    "ts",
    "tenant",
    "api_key_id",
    "endpoint",
    "model",
    "deployment",
    "status",
    "latency_ms",
)


LOST_LOG_INTERVAL = 10.0  # seconds between log lines about records the journal could not take

# A backstop far above what the request and output caps let a record reach: past it (a misbehaving
# upstream's gigabytes), the record keeps its essentials. No store takes a single value near 1 GB
# (PostgreSQL's limit, SQLite's default), and one write of 2 GiB or more is cut short by Linux.
MAX_LINE_BYTES = 256 * 1024 * 1024


class RecordTooLarge(ValueError):
    """A record whose JSON line is past ``MAX_LINE_BYTES``."""


def essentials(record: dict[str, Any], error: Exception) -> dict[str, Any]:
    """The plain columns of ``record`` and why the rest was not stored (``tags.record_error``)."""
    kept = {key: record.get(key) for key in _ESSENTIAL}
    kept = {key: value if isinstance(value, str | int | float) else None for key, value in kept.items()}
    kept["tags"] = {"record_error": f"{type(error).__name__}: {error}"[:500]}
    return kept


class RecordLog:
    """Journal + writer + store. ``write`` is the pipeline's sink; the rest serves the admin API and CLI."""

    def __init__(self, config: RecordConfig, *, writer: bool = True) -> None:
        if config.store is None:
            raise ValueError("record.store is not configured")
        self.config = config
        self.url = config.store
        encryption = config.encryption
        self.cipher: PayloadCipher | None = None
        if encryption.enabled:
            keys = encryption.keys.get_secret_value() if encryption.keys else None
            self.cipher = PayloadCipher.from_config(keys, encryption.key_file)
        self.clear_fields = set(encryption.index_in_clear) if encryption.enabled else {"input", "output"}
        # Process mode: this process only appends; the directory's writer process reads and stores.
        hand_over = writer and config.writer == "process"
        self.journal = Journal(config.journal_dir, fsync=config.fsync, hand_over=hand_over)
        self.writer: RecordWriter | WriterProcess | None = None
        if hand_over:
            self.writer = WriterProcess(self.journal, config)
        elif writer:
            self.writer = RecordWriter(
                self.journal,
                lambda: open_store(self.url),
                batch_size=config.batch_size,
                batch_bytes=config.batch_max_mb * 1024 * 1024,
                flush_interval=config.flush_interval_ms / 1000.0,
                retention=config.retention,
                catch_up_bytes=config.catch_up_mb * 1024 * 1024,
            )
        self._reader: SqlRecordStore | None = None
        self._reader_lock = threading.Lock()
        self._rejected = RejectedLines(self.journal.directory)
        self.essentials_only = 0  # records stored as their essentials (the full record did not serialise)
        self.lost = 0  # records the journal could not take (disk full, I/O error): not stored anywhere
        self.last_lost_error: str | None = None
        self.last_lost_at: float | None = None
        self._lost_logged_at = float("-inf")
        self._lost_unlogged = 0
        # Admission by backlog (store/backlog.py), for the processes that write: the pipeline asks it.
        self.backlog_gate: BacklogGate | None = None
        if self.writer is not None:
            # Process mode: the whole directory, measured against the writer process's stored offsets.
            pending = (
                self.writer.pending_bytes if isinstance(self.writer, WriterProcess) else self.journal.pending_bytes
            )
            self.backlog_gate = BacklogGate(
                self.journal.directory,
                pending,
                lambda: self.journal.appended_bytes,
                max_backlog_bytes=config.max_backlog_mb * 1024 * 1024,
                min_free_bytes=config.min_free_disk_mb * 1024 * 1024,
                large_body_bytes=config.shed_body_kb * 1024,
            )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the journal (claiming any left by a crash) and start the writer."""
        self.journal.open()
        if self.writer is not None:
            self.writer.start()

    def stop(self) -> None:
        """Store what is left and stop."""
        if isinstance(self.writer, WriterProcess):
            self.journal.close()  # release our segments first: the writer process finishes them
            self.writer.stop()
        elif self.writer is not None:
            self.writer.stop()
        self.journal.close()
        if self._reader is not None:
            self._reader.close()

    def status(self) -> dict[str, Any]:
        """Writer health, backlog, refused lines and where the store is (without credentials).

        ``state`` is ``degraded`` while the store is unhealthy or any refused line waits in
        ``rejected.jsonl.txt`` for ``opsgate logs replay-rejected``: those records are acknowledged but
        not searchable, and an operator has to act. ``essentials_only`` counts records stored without
        their payloads because the full record could not be serialised (see ``write``). ``backlog``
        is the admission gate's view (``store/backlog.py``); ``lost`` counts records the journal could
        not take (a full disk): the state is ``degraded`` for a minute after one.
        """
        state = self.writer.status() if self.writer is not None else {}
        set_aside = state.pop("rejected", 0)
        state.pop("last_rejected_error", None)
        rejected = {**self._rejected.summary(), "set_aside": set_aside}
        healthy = state.get("healthy", True)
        backlog = self.backlog_gate.status() if self.backlog_gate is not None else None
        shedding = backlog is not None and backlog["state"] != "ok"
        losing = self.last_lost_at is not None and time.monotonic() - self.last_lost_at < 60.0
        return {
            "store": self.url.split("://", 1)[0],
            **state,
            "state": "degraded" if not healthy or rejected["pending"] or shedding or losing else "ok",
            "rejected": rejected,
            "essentials_only": self.essentials_only,
            "backlog": backlog,
            "lost": self.lost,
            "last_lost_error": self.last_lost_error,
        }

    # -- the sink (event loop thread) ---------------------------------------------------------------

    def write(self, record: dict[str, Any]) -> None:
        """Seal payloads and append to the journal (the writer polls it). Returns once the kernel has it.

        Every request is recorded: should the full record not serialise (a value no encoder takes),
        its essentials are, with the reason in ``tags.record_error``.
        """
        try:
            line = self._line(record)
            if len(line) > MAX_LINE_BYTES:
                raise RecordTooLarge(f"record of {len(line)} bytes is over the {MAX_LINE_BYTES}-byte journal limit")
        except Exception as error:
            log.exception("request %s: its record cannot be serialised; storing the essentials", record.get("id"))
            self.essentials_only += 1
            line = self._line(essentials(record, error))
        try:
            self.journal.append(line)
        except OSError as error:
            self._lose(record, error)

    def _lose(self, record: dict[str, Any], error: OSError) -> None:
        """A record the journal refused (disk full): counted and shown, logged once per interval, not per request."""
        self.lost += 1
        self._lost_unlogged += 1
        self.last_lost_error = f"{type(error).__name__}: {error}"[:500]
        now = time.monotonic()
        self.last_lost_at = now
        if now - self._lost_logged_at >= LOST_LOG_INTERVAL:
            log.error(
                "the journal refused %d record(s) (%d lost since start; last request %s): %s",
                self._lost_unlogged,
                self.lost,
                record.get("id"),
                self.last_lost_error,
            )
            self._lost_logged_at = now
            self._lost_unlogged = 0

    def _line(self, record: dict[str, Any]) -> bytes:
        rid = record["id"]
        for field in ("request", "response"):
            value = record.get(field)
            if value is not None:
                text = bounded_record_json(value).decode()
                record[field] = self.cipher.encrypt(text, rid) if self.cipher else text
        if self.cipher is not None:
            record["payload_key_id"] = self.cipher.active_id
            if "input" not in self.clear_fields:
                record["input_text"] = None
            if "output" not in self.clear_fields:
                record["output_text"] = None
        return bounded_record_json(record) + b"\n"

    # -- queries (call from a worker thread) ----------------------------------------------------------

    @property
    def store(self) -> SqlRecordStore:
        """The store for queries: opened on first use, apart from the writer's, so reads never wait on it."""
        with self._reader_lock:
            if self._reader is None:
                try:
                    self._reader = open_store(self.url)
                except Exception as error:
                    raise StoreUnavailable(
                        f"the record store is unavailable: {type(error).__name__}: {error}"
                    ) from None
            return self._reader

    def open_payloads(self, record: dict[str, Any]) -> dict[str, Any]:
        """Decrypt and parse a record's request/response payloads (fails clearly without the key)."""
        for field in ("request", "response"):
            value = record.get(field)
            if isinstance(value, str):
                if self.cipher is not None:
                    value = self.cipher.decrypt(value, record["id"])
                elif value.startswith("enc:"):
                    record[field] = {"encrypted_with": record.get("payload_key_id")}
                    continue
                record[field] = orjson.loads(value)
        return record

    def search(self, query: RecordQuery) -> tuple[list[dict[str, Any]], str | None]:
        """One page of matching records."""
        return self.store.search(query)

    def get(self, record_id: str) -> dict[str, Any] | None:
        """One record with payloads opened."""
        record = self.store.get(record_id)
        return self.open_payloads(record) if record else None

    def iter_records(self, query: RecordQuery) -> Iterator[dict[str, Any]]:
        """Every matching record with payloads opened, streamed page by page."""
        for record in self.store.iter_records(query):
            yield self.open_payloads(record)

    def erase_user(self, user: str, actor: str) -> dict[str, Any]:
        """GDPR erasure of every record of ``user``, with before/after counts and an audit entry."""
        if self.writer is not None:
            self.writer.flush(timeout=10)  # what is journaled now must not land after the erasure
        return self.store.erase_user(user, actor)

    def usage(
        self, by: str, since: float | None, until: float | None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Usage and cost from the rollups."""
        return self.store.usage(by, since, until, tenant)

    def replay_rejected(self) -> dict[str, int]:
        """Feed the lines set aside in ``rejected.jsonl.txt`` to the store again (after fixing the cause)."""
        return replay_rejected(self.journal.directory, self.store)

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> ChainReport:
        """Walk the audit hash chain (blocking); see ``opsgate.audit.verify_chain``."""
        return verify_chain(self.store, anchor)
