"""Config changes in the audit log: the effective config is fingerprinted at start, secrets redacted.

A ``config_loaded`` entry is appended only when the fingerprint differs from the last one, with the
before/after digests, the dotted paths that changed, and the redacted config itself (so the next
change can be diffed against it). Secret values are never stored or hashed: a changed API key is
not visible here (a hash of a short secret could be brute-forced from the log).
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import orjson

from opsgate.audit.chain import AuditEntry, append_entry, lock_chain
from opsgate.domain.config import GatewayConfig

if TYPE_CHECKING:
    from opsgate.store.sql import SqlRecordStore

ACTION = "config_loaded"
REDACTED = "<redacted>"
# Whole key names (``api_key``, ``hf_token``, ``client_secret``), not substrings: ``max_tokens`` is no secret.
_SECRET_KEY = re.compile(r"(?i)^(?:.*_)?(?:api_?key|secret|password|passwd|token|authorization|credentials?)$|^keys$")
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]*@", re.I)
_QUERY_SECRET = re.compile(r"(?i)(?P<key>password|passwd|token|secret|api_?key)=[^&\s]*")
_MAX_CHANGED = 200


def redact(tree: Any, key: str = "") -> Any:
    """The config tree with secret values replaced: secret-looking keys, header values, URL passwords."""
    if isinstance(tree, dict):
        return {k: redact(v, "headers_value" if key == "headers" else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v, key) for v in tree]
    if tree is not None and (key == "headers_value" or _SECRET_KEY.search(key)):
        return REDACTED
    if isinstance(tree, str):
        tree = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED + "@", tree)
        return _QUERY_SECRET.sub(lambda m: m.group("key") + "=" + REDACTED, tree)
    return tree


def effective_config(config: GatewayConfig) -> dict[str, Any]:
    """The whole config, defaults filled in, secrets redacted."""
    redacted: dict[str, Any] = redact(config.model_dump(mode="json"))
    return redacted


def fingerprint(tree: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a (redacted) config tree."""
    return hashlib.sha256(orjson.dumps(tree, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _leaves(tree: Any, path: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(tree, list) and tree:
        out = {}
        for index, value in enumerate(tree):
            out.update(_leaves(value, f"{path}[{index}]"))
        return out
    return {path: tree}


def changed_paths(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Dotted paths whose value was added, removed or changed (``models[0].deployments[1].weight``)."""
    old = _leaves(before) if before is not None else {}
    new = _leaves(after)
    return sorted(path for path in old.keys() | new.keys() if old.get(path, ...) != new.get(path, ...))


def record_config_loaded(store: SqlRecordStore, config: GatewayConfig, actor: str) -> AuditEntry | None:
    """Append ``config_loaded`` if the effective config differs from the last one logged; else None.

    The check and the append happen under the chain's append lock, so replicas or workers starting
    together with the same config log it once. Blocking: call from a worker thread.
    """
    tree = effective_config(config)
    digest = fingerprint(tree)
    with store.connection() as conn, store.transaction(conn):
        lock_chain(store, conn)  # the same lock append_entry takes again (re-entrant)
        row = store.execute(
            conn, "SELECT details FROM audit_log WHERE action = ? ORDER BY seq DESC LIMIT 1", [ACTION]
        ).fetchone()
        previous = orjson.loads(row[0]) if row and row[0] else None
        before_digest = previous.get("after_sha256") if isinstance(previous, dict) else None
        if before_digest == digest:
            return None
        before_tree = previous.get("config") if isinstance(previous, dict) else None
        changed = changed_paths(before_tree if isinstance(before_tree, dict) else None, tree)
        details = {
            "before_sha256": before_digest,
            "after_sha256": digest,
            "changed": changed[:_MAX_CHANGED],
            "changed_count": len(changed),
            "config": tree,
        }
        return append_entry(store, conn, actor, ACTION, "config", details)
