"""Model integrity: a manifest of SHA-256 digests for local model files, checked at load and periodically."""

from opsgate.integrity.digests import FileDigest, digest_files, sha256_file
from opsgate.integrity.manifest import Manifest, ManifestError, build_manifest, deployment_files
from opsgate.integrity.monitor import IntegrityMonitor, ModelIntegrityError

__all__ = [
    "FileDigest",
    "IntegrityMonitor",
    "Manifest",
    "ManifestError",
    "ModelIntegrityError",
    "build_manifest",
    "deployment_files",
    "digest_files",
    "sha256_file",
]
