"""SHA-256 digests of model files, read in chunks so a 100+ MB GGUF never sits in memory whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's SHA-256 (hex) and size in bytes."""

    sha256: str
    size: int


def sha256_file(path: Path) -> FileDigest:
    """Hash one file. Blocking, but releases the GIL while hashing: call it from a thread.

    ``hashlib.file_digest`` reads 256 KiB at a time into one buffer, and OpenSSL's update runs
    without the GIL, so the event loop keeps serving while a worker thread hashes.
    """
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        size = handle.tell()
    return FileDigest(digest.hexdigest(), size)


def digest_files(paths: Iterable[Path]) -> dict[str, FileDigest | None]:
    """Each path (as a resolved string) and its digest, or None when it cannot be read."""
    out: dict[str, FileDigest | None] = {}
    for path in paths:
        key = str(path)
        if key in out:
            continue
        try:
            out[key] = sha256_file(path)
        except OSError:
            out[key] = None
    return out
