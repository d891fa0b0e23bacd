"""Green queues: Queue, LifoQueue, PriorityQueue and SimpleQueue.

They keep the standard library's interface, including what subclasses and
careful callers use: ``mutex``, the ``not_empty``/``not_full``/
``all_tasks_done`` conditions, ``unfinished_tasks``, the ``queue`` attribute
and the ``_init``/``_qsize``/``_put``/``_get`` hooks.  ``Empty``, ``Full``
(and ``ShutDown`` on 3.13) are the standard library's own classes, so
``except queue.Empty`` catches ours.  After ``monkey_patch()`` these classes
*are* ``queue.Queue`` and friends; without patching, use them from green
threads started with ``greenpatch.spawn``.

Invariants:

* ``Queue`` holds ``mutex`` (a green Lock) whenever it touches its items or
  counters, so one queue may be shared by green threads of several OS
  threads.  Nothing parks while holding ``mutex`` except through
  ``Condition.wait``, which releases it.
* ``SimpleQueue.put`` never blocks nor switches (it may be called from
  ``__del__``, weakref callbacks or signal handlers); ``get`` relies on
  ``deque`` operations being atomic and retries if another OS thread took
  the item first.
"""

from __future__ import annotations

import sys
import types
from collections import deque
from heapq import heappop, heappush
from queue import Empty, Full
from time import monotonic
from typing import Any

from greenpatch.hub import park, wake_one
from greenpatch.locks import Condition, Lock

__all__ = ["Empty", "Full", "Queue", "PriorityQueue", "LifoQueue", "SimpleQueue"]

if sys.version_info >= (3, 13):
    from queue import ShutDown
    __all__.append("ShutDown")
else:
    ShutDown = None  # Queue.shutdown() is new in 3.13


class Queue:
    """A FIFO queue of at most ``maxsize`` items (unbounded if ``maxsize <= 0``)."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init(maxsize)
        self.mutex = Lock()
        self.not_empty = Condition(self.mutex)
        self.not_full = Condition(self.mutex)
        self.all_tasks_done = Condition(self.mutex)
        self.unfinished_tasks = 0
        self.is_shutdown = False
        cls = type(self)
        # The FIFO representation hooks are not overridden: use the deque directly.
        self._plain = (cls._init is Queue._init and cls._qsize is Queue._qsize
                       and cls._put is Queue._put and cls._get is Queue._get)

    def task_done(self) -> None:
        """Mark one item taken with ``get()`` as processed; ValueError if called too often."""
        with self.mutex:
            unfinished = self.unfinished_tasks - 1
            if unfinished <= 0:
                if unfinished < 0:
                    raise ValueError("task_done() called too many times")
                self.all_tasks_done.notify_all()
            self.unfinished_tasks = unfinished

    def join(self) -> None:
        """Wait until every item put has been marked done with ``task_done()``."""
        with self.mutex:
            while self.unfinished_tasks:
                self.all_tasks_done.wait()

    def qsize(self) -> int:
        """The approximate number of items (not reliable once returned)."""
        with self.mutex:
            return self._qsize()

    def empty(self) -> bool:
        """True if the queue is empty (not reliable once returned)."""
        with self.mutex:
            return not self._qsize()

    def full(self) -> bool:
        """True if the queue holds ``maxsize`` items (not reliable once returned)."""
        with self.mutex:
            return 0 < self.maxsize <= self._qsize()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``, waiting for a free slot if the queue is bounded and full.

        With ``block=False`` raise Full at once if there is no room; with a
        ``timeout`` raise Full if no slot frees up in time.
        """
        mutex = self.mutex
        if not mutex._lock.acquire(False):  # mutex.acquire(), inlined
            mutex.acquire()
        try:
            if self.is_shutdown:
                raise ShutDown
            if self.maxsize > 0:
                if self._qsize() >= self.maxsize:
                    self._wait_for_room(block, timeout)
                elif block and timeout is not None and timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
            if self._plain:
                self.queue.append(item)
            else:
                self._put(item)
            self.unfinished_tasks += 1
            waiters = self.not_empty._waiters
            if waiters:  # self.not_empty.notify(), inlined
                waiter = waiters.popleft()
                waiter.notified = True
                if waiter:
                    wake_one(waiter)
        finally:
            mutex._lock.release()  # mutex.release(), inlined
            if mutex._waiters:
                wake_one(mutex._waiters)

    def _wait_for_room(self, block: bool, timeout: float | None) -> None:
        """With ``mutex`` held: wait until ``_qsize() < maxsize`` or raise Full/ShutDown."""
        not_full = self.not_full
        if not block:
            raise Full
        if timeout is None:
            while self._qsize() >= self.maxsize:
                not_full.wait()
                if self.is_shutdown:
                    raise ShutDown
            return
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        endtime = monotonic() + timeout
        while self._qsize() >= self.maxsize:
            remaining = endtime - monotonic()
            if remaining <= 0.0:
                raise Full
            not_full.wait(remaining)
            if self.is_shutdown:
                raise ShutDown

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next item, waiting while the queue is empty.

        With ``block=False`` raise Empty at once if there is none; with a
        ``timeout`` raise Empty if none arrives in time.
        """
        mutex = self.mutex
        if not mutex._lock.acquire(False):
            mutex.acquire()
        try:
            if self._plain:
                if not self.queue:
                    if block and timeout is None and not self.is_shutdown:
                        wait = self.not_empty.wait  # the common blocking case, without _wait_for_item
                        while True:
                            wait()
                            if self.queue:
                                break
                            if self.is_shutdown:
                                raise ShutDown
                    else:
                        self._wait_for_item(block, timeout)
                elif block and timeout is not None and timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                item = self.queue.popleft()
            else:
                if not self._qsize():
                    self._wait_for_item(block, timeout)
                elif block and timeout is not None and timeout < 0:
                    raise ValueError("'timeout' must be a non-negative number")
                item = self._get()
            waiters = self.not_full._waiters
            if waiters:  # self.not_full.notify(), inlined
                waiter = waiters.popleft()
                waiter.notified = True
                if waiter:
                    wake_one(waiter)
            return item
        finally:
            mutex._lock.release()
            if mutex._waiters:
                wake_one(mutex._waiters)

    def _wait_for_item(self, block: bool, timeout: float | None) -> None:
        """With ``mutex`` held: wait until ``_qsize()`` is non-zero or raise Empty/ShutDown."""
        if self.is_shutdown:
            raise ShutDown
        not_empty = self.not_empty
        if not block:
            raise Empty
        if timeout is None:
            while not self._qsize():
                not_empty.wait()
                if self.is_shutdown and not self._qsize():
                    raise ShutDown
            return
        if timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        endtime = monotonic() + timeout
        while not self._qsize():
            remaining = endtime - monotonic()
            if remaining <= 0.0:
                raise Empty
            not_empty.wait(remaining)
            if self.is_shutdown and not self._qsize():
                raise ShutDown

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``."""
        return self.put(item, False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    if ShutDown is not None:
        def shutdown(self, immediate: bool = False) -> None:
            """Make later puts raise ShutDown, and gets too once the queue is empty.

            Every blocked ``put``/``get`` wakes up.  With ``immediate=True`` the
            remaining items are dropped (each counted as done, which may end a
            ``join()``) and gets raise ShutDown at once.
            """
            with self.mutex:
                self.is_shutdown = True
                if immediate:
                    while self._qsize():
                        self._get()
                        if self.unfinished_tasks > 0:
                            self.unfinished_tasks -= 1
                    self.all_tasks_done.notify_all()
                self.not_empty.notify_all()
                self.not_full.notify_all()

    # The representation hooks, called with ``mutex`` held; override them for
    # other orders (LifoQueue, PriorityQueue do).

    def _init(self, maxsize: int) -> None:
        self.queue: Any = deque()

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.popleft()

    __class_getitem__ = classmethod(types.GenericAlias)


class PriorityQueue(Queue):
    """A Queue that returns the lowest item first (entries are often ``(priority, data)``)."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        heappush(self.queue, item)

    def _get(self) -> Any:
        return heappop(self.queue)


class LifoQueue(Queue):
    """A Queue that returns the most recently added item first."""

    def _init(self, maxsize: int) -> None:
        self.queue = []

    def _qsize(self) -> int:
        return len(self.queue)

    def _put(self, item: Any) -> None:
        self.queue.append(item)

    def _get(self) -> Any:
        return self.queue.pop()


class SimpleQueue:
    """An unbounded FIFO queue whose ``put`` never blocks, like ``queue.SimpleQueue``."""

    __slots__ = ("_queue", "_waiters", "_nonempty", "__weakref__")
    _Empty = Empty  # what get() raises; a freshly imported _queue gets a subclass raising its own

    def __init__(self) -> None:
        self._queue: deque = deque()
        self._waiters: list = []
        self._nonempty = self._queue.__len__

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; never blocks (``block`` and ``timeout`` are ignored)."""
        self._queue.append(item)
        if self._waiters:
            wake_one(self._waiters)

    def put_nowait(self, item: Any) -> None:
        """``put(item)``."""
        self._queue.append(item)
        if self._waiters:
            wake_one(self._waiters)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the next item, waiting while the queue is empty.

        With ``block=False`` raise Empty at once if there is none; with a
        ``timeout`` raise Empty if none arrives in time.
        """
        if block and timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        items = self._queue
        if items:
            try:
                return items.popleft()
            except IndexError:
                pass  # another OS thread took it
        if not block:
            raise self._Empty
        return self._get_slow(None if timeout is None else monotonic() + timeout)

    def _get_slow(self, endtime: float | None) -> Any:
        items = self._queue
        while True:
            timeout = None if endtime is None else max(0.0, endtime - monotonic())
            if not park(self._waiters, self._nonempty, timeout):
                raise self._Empty
            try:
                item = items.popleft()
            except IndexError:
                continue
            if items and self._waiters:
                wake_one(self._waiters)  # wakeups are not counted: make sure the next getter sees the rest
            return item

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    def empty(self) -> bool:
        """True if the queue is empty (not reliable once returned)."""
        return not self._queue

    def qsize(self) -> int:
        """The approximate number of items (not reliable once returned)."""
        return len(self._queue)

    def __reduce_ex__(self, protocol: int) -> Any:
        raise TypeError(f"cannot pickle {type(self).__qualname__!r} object")

    __class_getitem__ = classmethod(types.GenericAlias)
