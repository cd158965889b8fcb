"""What a store's error means for the line or batch that raised it: the store is down (keep it, retry
later) or it refuses this data (set the line aside). The writer, the drift collector and the replay of
set-aside lines all ask here, so they never disagree about an error."""

from __future__ import annotations

from opsgate.store.sql import SqlRecordStore

# A store that declares nothing (a test double): only the operating system's own failures are transient.
_GENERIC_TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError)
_GENERIC_REFUSED: tuple[type[BaseException], ...] = (ValueError,)


def store_down(store: SqlRecordStore, error: BaseException) -> bool:
    """Whether ``error`` says ``store`` is unreachable (retry the batch later), by the store's own declaration.

    Each store names its transient errors (``transient_errors`` in ``store/sqlite.py``,
    ``store/postgres.py``), so an unrelated error that happens to share a class name never blocks
    the journal, and a driver's real outage is never mistaken for bad data.
    """
    transient: tuple[type[BaseException], ...] = getattr(store, "transient_errors", _GENERIC_TRANSIENT)
    refused: tuple[type[BaseException], ...] = getattr(store, "refused_data_errors", _GENERIC_REFUSED)
    # A store may name a refused-data error that its driver files under a transient class (PostgreSQL's
    # "program limit exceeded" is an OperationalError): the more specific declaration wins.
    return isinstance(error, transient) and not isinstance(error, refused)


def refused_data(store: SqlRecordStore, error: BaseException) -> bool:
    """Whether ``error`` says ``store`` refuses this line's data (set it aside) rather than being broken."""
    refused: tuple[type[BaseException], ...] = getattr(store, "refused_data_errors", _GENERIC_REFUSED)
    return isinstance(error, refused)
