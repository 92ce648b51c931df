"""Shared fixtures; the factories behind them live in fixtures_corpora.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures_corpora import torch_threads


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for a test (use with ``pytest.mark.usefixtures("one_thread")``)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """One torch thread for a whole module, its module-scoped trainings included."""
    with torch_threads(1):
        yield
