"""Fixtures for the limits tests: a scratch Redis prefix per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.limits.support import scratch_prefix


@pytest.fixture()
def redis_prefix() -> Iterator[str]:
    """A key prefix unique to this test; only its keys are deleted afterwards."""
    with scratch_prefix() as prefix:
        yield prefix
