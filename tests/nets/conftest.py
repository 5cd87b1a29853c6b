"""Fixtures for the network tests: one torch thread, and a clean registry cache per test.

One thread because torch's OpenMP workers spin while they wait: on a machine where other test runs share
the cores, two threads per process made these tests ten times slower (and CPU time grew with it). The
trainer's own ``threads`` argument is exercised separately; the thread count is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.nets.registry import clear_cache
from tests.nets.helpers import single_torch_thread


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with single_torch_thread():
        yield


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()
