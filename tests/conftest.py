"""Fixtures shared by the in-process tests of the green modules."""

import os

import pytest

import greenpatch
from greenpatch.hub import get_hub


@pytest.fixture
def no_leftover_waiters():
    """Fail a test that leaves a green thread waiting on an fd."""
    yield
    for _ in range(3):
        greenpatch.sleep(0)
    assert get_hub().counts()["fd_waiters"] == 0, "a green thread is still waiting on an fd"


@pytest.fixture
def track():
    """Sockets and raw fds to close after the test."""
    items = []
    yield items
    for item in items:
        if isinstance(item, int):
            try:
                os.close(item)
            except OSError:
                pass
        else:
            item.close()
