"""The tamper-evident audit log: who did what, when, with before/after, in a SHA-256 hash chain.

``append_audit`` is the one call for every admin action and config change; ``verify_chain``
walks the chain. Both are blocking SQL: from async code, run them in a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opsgate.audit.chain import (
    GENESIS,
    AuditEntry,
    ChainReport,
    append_in_transaction,
    entry_hash,
    list_entries,
    verify_chain,
)
from opsgate.domain.principal import Principal

if TYPE_CHECKING:
    from opsgate.store.record_log import RecordLog
    from opsgate.store.sql import SqlRecordStore

__all__ = [
    "GENESIS",
    "AuditEntry",
    "ChainReport",
    "actor_of",
    "append_audit",
    "entry_hash",
    "list_entries",
    "verify_chain",
]


def actor_of(principal: Principal) -> str:
    """How a caller is named in the ``actor`` column: its key id, else its name (``auth-disabled``)."""
    return principal.key_id or principal.name or principal.role


def append_audit(
    store: SqlRecordStore | RecordLog,
    actor: str | Principal | None,
    action: str,
    target: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry to the audit chain and return it (with its ``seq`` and ``hash``).

    ``store``: a record store or the gateway's ``RecordLog``. ``actor``: a ``Principal`` (its key
    id becomes the actor; key name, tenant and role go into ``details["actor"]``) or a plain name
    (``"opsgate-cli"``, ``"system"``). ``details``: any JSON object; put ``before``/``after`` in it for
    changes. Serialised across processes; blocking, so call it from a worker thread
    (``run_in_threadpool``) in async code.
    """
    from opsgate.store.sql import SqlRecordStore  # here, not at the top: the store imports the chain

    sql_store = store if isinstance(store, SqlRecordStore) else store.store
    name: str | None
    if isinstance(actor, Principal):
        name = actor_of(actor)
        who = {"key_id": actor.key_id, "name": actor.name, "tenant": actor.tenant, "role": actor.role}
        details = {**(details or {}), "actor": who}
    else:
        name = actor
    return append_in_transaction(sql_store, name, action, target, details)
