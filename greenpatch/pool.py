"""GreenPool: run functions in green threads, at most ``size`` at a time."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator, TypeVar

from greenlet import getcurrent

from greenpatch.greenthread import GreenThread, spawn
from greenpatch.hub import park, wake_all, wake_one

__all__ = ["GreenPool"]

T = TypeVar("T")


class GreenPool:
    """A bounded set of green threads: ``spawn`` waits while ``size`` are running."""

    def __init__(self, size: int = 1000) -> None:
        if size < 0:
            raise ValueError("GreenPool size must be >= 0")
        self.size = size
        self._running: set[GreenThread] = set()
        self._slot_waiters: list = []
        self._idle_waiters: list = []

    def running(self) -> int:
        """How many green threads of the pool are running now."""
        return len(self._running)

    def free(self) -> int:
        """How many more can be spawned without waiting."""
        return max(0, self.size - len(self._running))

    def resize(self, size: int) -> None:
        """Change the limit; growing wakes spawners that wait for a slot."""
        self.size = size
        wake_all(self._slot_waiters)

    def spawn(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> GreenThread:
        """Start ``func`` in the pool, first waiting for a free slot.

        Called from one of the pool's own green threads while the pool is
        full, it would wait forever for itself; then ``func`` runs inline.
        """
        current = getcurrent()
        if len(self._running) >= self.size and current in self._running:
            thread = GreenThread(func, args, kwargs)
            thread.run()
            return thread
        park(self._slot_waiters, self._has_slot)
        thread = spawn(func, *args, **kwargs)
        self._running.add(thread)
        thread.link(self._finished)
        return thread

    def spawn_n(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Like ``spawn`` when the result is not needed."""
        self.spawn(func, *args, **kwargs)

    def waitall(self) -> None:
        """Wait until every green thread of the pool has ended."""
        park(self._idle_waiters, self._is_idle)

    def imap(self, func: Callable[..., T], *iterables: Iterable[Any]) -> Iterator[T]:
        """Like ``map``, the calls running concurrently within the pool's size; results in order."""
        pending: deque[GreenThread] = deque()
        for args in zip(*iterables):
            pending.append(self.spawn(func, *args))
            while pending and pending[0].ready():
                yield pending.popleft().wait()
        while pending:
            yield pending.popleft().wait()

    def starmap(self, func: Callable[..., T], iterable: Iterable[Iterable[Any]]) -> Iterator[T]:
        """``imap`` with each item already an argument tuple."""
        return self.imap(lambda args: func(*args), iterable)

    def _has_slot(self) -> bool:
        return len(self._running) < self.size

    def _is_idle(self) -> bool:
        return not self._running

    def _finished(self, thread: GreenThread) -> None:
        self._running.discard(thread)
        wake_one(self._slot_waiters)
        if not self._running:
            wake_all(self._idle_waiters)
