"""Leak checks: nothing a test started may outlive it on the hub.

``leakcheck()`` is a context manager (and ``no_leaks`` the pytest fixture made
from it) that takes the calling thread's hub counts (``Hub.counts()``: ready
callbacks, live timers, fd registrations, fd waiters) and the live
GreenThreads (found through gc) before the block, and after it lets the hub
settle (a few turns, then short sleeps up to ``settle`` seconds) and asserts
that none of them grew.  The failure message says what leaked and, for green
threads, where each one waits.

Usage::

    def test_something(no_leaks):
        ...

    with leakcheck():
        ...
"""

from __future__ import annotations

import gc
import traceback
from contextlib import contextmanager
from time import monotonic
from typing import Iterator

import pytest

import greenpatch
from greenpatch.greenthread import GreenThread
from greenpatch.hub import get_hub

__all__ = ["leakcheck", "no_leaks", "live_green_threads", "snapshot"]


def live_green_threads() -> list[GreenThread]:
    """Every GreenThread of any hub that has not ended (pending or running)."""
    return [obj for obj in gc.get_objects() if isinstance(obj, GreenThread) and not obj.ready()]


def snapshot() -> dict[str, int]:
    """The hub's counts plus the number of live green threads."""
    counts = dict(get_hub().counts())
    counts["green_threads"] = len(live_green_threads())
    return counts


def _grown(before: dict[str, int], after: dict[str, int]) -> dict[str, tuple[int, int]]:
    return {key: (before[key], after[key]) for key in before if after[key] > before[key]}


def _where(thread: GreenThread) -> str:
    frame = thread.gr_frame
    if frame is None:
        return f"{thread!r}: not started"
    last = traceback.extract_stack(frame)[-1]
    return f"{thread!r}: {last.filename}:{last.lineno} in {last.name}"


@contextmanager
def leakcheck(settle: float = 1.0) -> Iterator[dict[str, int]]:
    """Assert that the block leaves no green threads, timers, fd registrations or fd waiters behind."""
    gc.collect()
    before_threads = set(map(id, live_green_threads()))
    before = snapshot()
    yield before
    deadline = monotonic() + settle
    while True:
        for _ in range(5):
            greenpatch.sleep(0)
        gc.collect()
        after = snapshot()
        grown = _grown(before, after)
        if not grown or monotonic() >= deadline:
            break
        greenpatch.sleep(0.01)
    if grown:
        new = [t for t in live_green_threads() if id(t) not in before_threads]
        details = "\n".join("  " + _where(t) for t in new)
        raise AssertionError(f"leaked across the test (before, after): {grown}\n{details}")


@pytest.fixture
def no_leaks() -> Iterator[dict[str, int]]:
    """The pytest form of ``leakcheck()``."""
    with leakcheck() as before:
        yield before
