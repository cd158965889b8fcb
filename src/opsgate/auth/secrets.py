"""API key material: how keys look, and how they are hashed so that only a hash is ever stored.

A key is ``og_<prefix>_<secret>``. The prefix (10 lowercase base32 characters) is public: it is
shown in listings and is the indexed lookup column. The secret (32 random bytes) is shown once at
creation; the store keeps ``HMAC-SHA256(salt, key)`` with a per-key random salt. API keys are
high-entropy, so a slow password hash would buy nothing and cost the request path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^og_([a-z2-7]{10})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: the secret (show it once) and what the store keeps."""

    secret: str
    prefix: str
    salt: str
    hash: str


def generate_key() -> NewKey:
    """A new random key with its public prefix, salt and hash."""
    prefix = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
    secret = f"og_{prefix}_{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    return NewKey(secret=secret, prefix=prefix, salt=salt, hash=hash_key(secret, salt))


def hash_key(secret: str, salt: str) -> str:
    """The stored form of ``secret``."""
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def key_prefix(secret: str) -> str | None:
    """The public prefix of a well-formed key, else None (so a malformed key never reaches the store)."""
    match = KEY_PATTERN.match(secret)
    return match.group(1) if match else None


def matches(secret: str, salt: str, stored_hash: str) -> bool:
    """Whether ``secret`` hashes to ``stored_hash`` (constant time)."""
    return hmac.compare_digest(hash_key(secret, salt), stored_hash)


def display(prefix: str) -> str:
    """How a key is shown after creation: its prefix only."""
    return f"og_{prefix}_…"
