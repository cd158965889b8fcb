"""The error trail: failed requests grouped by signature (type, deployment, normalised message)."""

from opsgate.errors_trail.groups import error_groups
from opsgate.errors_trail.signature import normalise_message, signature

__all__ = ["error_groups", "normalise_message", "signature"]
