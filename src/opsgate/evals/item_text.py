"""Reading an evaluation item's text for people and scorers: sealed fields opened with the request log's key.

Shadow items (``releases/shadow.py``: ``ItemPayloads``) keep the live prompt and the candidate's answer
as the request log keeps text: under ``record.encryption`` they are ``PayloadCipher`` ciphertext bound
to ``run_id/item_key/field``. Every reader (the admin API, ``/ui/evals``, scorers reading stored
items) opens them here, with the request log's own cipher — there is no second copy of the keys.

A field that does not open (its key was rotated out, no key is configured, a damaged value) reads
``None`` and is named in the item's ``sealed`` map (field -> key id): a clear marker, never an error
page, and never the ciphertext. Text stored in clear passes through; an absent text (``payloads:
metadata_only``) stays absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opsgate.releases.shadow import ItemPayloads, bound_to
from opsgate.store.crypto import key_id_of

TEXT_FIELDS = ("input", "output")


def open_items(items: Iterable[dict[str, Any]], payloads: ItemPayloads) -> list[dict[str, Any]]:
    """``items`` as ``EvalStore.iter_items`` returns them, with sealed text opened in place (and returned).

    Each item gains ``sealed``: the fields that stay unreadable here, with the key id they need."""
    out = []
    for item in items:
        sealed: dict[str, str] = {}
        for field in TEXT_FIELDS:
            value = item.get(field)
            if not isinstance(value, str) or (key_id := key_id_of(value)) is None:
                continue
            item[field] = _open(payloads, value, bound_to(str(item["run_id"]), str(item["item_key"]), field))
            if item[field] is None:
                sealed[field] = key_id
        item["sealed"] = sealed
        out.append(item)
    return out


def _open(payloads: ItemPayloads, value: str, associated: str) -> str | None:
    if payloads.cipher is None:
        return None
    try:
        return payloads.cipher.decrypt(value, associated)
    except ValueError:  # KeyError_ (key not configured, tag mismatch), bad base64, bad UTF-8
        return None
