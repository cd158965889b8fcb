"""AES-GCM encryption of stored payloads, with key ids so keys rotate without losing old rows.

A ciphertext is ``enc:v1:<key id>:<base64(nonce || ciphertext+tag)>``; the record id is the
associated data, so a payload cannot be moved to another row unnoticed.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"


class KeyError_(ValueError):
    """A key list that cannot be used, or a payload no configured key opens."""


def parse_keys(text: str) -> list[tuple[str, bytes]]:
    """``id1:BASE64,id2:BASE64`` (or one per line) into (id, 32-byte key) pairs, first one active."""
    keys: list[tuple[str, bytes]] = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id:
            raise KeyError_("each key must be KEY_ID:BASE64")
        try:
            key = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise KeyError_(f"key {key_id!r} is not valid base64") from None
        if len(key) != 32:
            raise KeyError_(f"key {key_id!r} must be 32 bytes (AES-256), got {len(key)}")
        keys.append((key_id, key))
    if not keys:
        raise KeyError_("no keys given")
    return keys


def new_key_line(key_id: str) -> str:
    """A fresh random key in the config format (for ``opsgate logs keygen``)."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


class PayloadCipher:
    """Encrypts with the active (first) key, decrypts with any configured key."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        self.active_id = keys[0][0]
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_config(cls, keys: str | None, key_file: str | None) -> PayloadCipher:
        """From the inline key list and/or a key file (inline keys come first)."""
        text = keys or ""
        if key_file:
            text += "," + Path(key_file).expanduser().read_text()
        return cls(parse_keys(text))

    def encrypt(self, plaintext: str, record_id: str) -> str:
        """Encrypt a payload bound to its record id."""
        nonce = os.urandom(12)
        sealed = self._ciphers[self.active_id].encrypt(nonce, plaintext.encode(), record_id.encode())
        return f"{PREFIX}{self.active_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, record_id: str) -> str:
        """Open a stored payload; plain (unencrypted) text passes through unchanged."""
        if not stored.startswith(PREFIX):
            return stored
        key_id, _, encoded = stored[len(PREFIX) :].partition(":")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise KeyError_(f"payload was encrypted with key {key_id!r}, which is not configured")
        raw = base64.b64decode(encoded)
        try:
            return cipher.decrypt(raw[:12], raw[12:], record_id.encode()).decode()
        except InvalidTag:
            raise KeyError_(f"payload of {record_id} does not open with key {key_id!r}") from None


def key_id_of(stored: str | None) -> str | None:
    """The key id a stored payload was encrypted with, or None for plain text."""
    if stored is None or not stored.startswith(PREFIX):
        return None
    return stored[len(PREFIX) :].partition(":")[0]
