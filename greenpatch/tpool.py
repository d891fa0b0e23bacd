"""A pool of REAL OS threads for calls that must block (DNS, C extensions, disk).

``execute(fn, *args, **kwargs)`` runs ``fn`` in a worker thread and suspends
only the calling green thread until the result comes back; the hub is woken
through its wakeup pipe (``schedule_threadsafe``), never by polling.  Workers
are started lazily up to the pool size (argument, or the environment variable
``GREENPATCH_THREADPOOL_SIZE``, default 20) and retire after sitting idle.
The workers use the original, unpatched ``_thread`` primitives, saved when
this module is imported (greenpatch imports it before patching anything).
"""

from __future__ import annotations

import os
from _queue import Empty, SimpleQueue
from _thread import allocate_lock as _real_lock
from _thread import start_new_thread as _real_start_thread
from typing import Any, Callable, TypeVar

from greenpatch import hub as _hub
from greenpatch.hub import get_hub, park, wake_all

__all__ = ["execute", "ThreadPool", "default_pool"]

T = TypeVar("T")
IDLE_SECONDS = 10.0


class _Job:
    __slots__ = ("func", "args", "kwargs", "hub", "waiters", "result", "error", "done")

    def __init__(self, func: Callable, args: tuple, kwargs: dict, hub: "_hub.Hub") -> None:
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.hub = hub
        self.waiters: list = []
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def is_done(self) -> bool:
        return self.done


class ThreadPool:
    """Up to ``size`` real OS threads, started on demand, retired after ``IDLE_SECONDS`` idle."""

    def __init__(self, size: int | None = None) -> None:
        if size is None:
            size = int(os.environ.get("GREENPATCH_THREADPOOL_SIZE", "20"))
        if size < 1:
            raise ValueError("thread pool size must be at least 1")
        self.size = size
        self._jobs: SimpleQueue = SimpleQueue()
        self._lock = _real_lock()
        self._workers = 0
        self._idle = 0
        self._queued = 0  # submitted, not yet taken by a worker

    def execute(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func(*args, **kwargs)`` in a worker; return its result or raise its exception."""
        hub = get_hub()
        job = _Job(func, args, kwargs, hub)
        hub.keepalive += 1
        self._submit(job)
        park(job.waiters, job.is_done)  # killed or timed out: the result is dropped
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.result

    def _submit(self, job: _Job) -> None:
        with self._lock:
            self._queued += 1
            start = self._queued > self._idle and self._workers < self.size
            if start:
                self._workers += 1
                _hub.own_threads += 1
        self._jobs.put(job)
        if start:
            _real_start_thread(self._work, ())

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            with self._lock:
                self._idle += 1
            try:
                job = jobs.get(timeout=IDLE_SECONDS)
            except Empty:
                with self._lock:
                    self._idle -= 1
                    if jobs.empty():
                        self._workers -= 1
                        _hub.own_threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            try:
                job.result = job.func(*job.args, **job.kwargs)
            except BaseException as exc:
                job.error = exc
            job.func = job.args = job.kwargs = None
            job.hub.schedule_threadsafe(_finish, job)


def _finish(job: _Job) -> None:
    """Runs in the caller's hub: release the keepalive and wake the caller."""
    job.done = True
    job.hub.keepalive -= 1
    wake_all(job.waiters)


_default: ThreadPool | None = None


def default_pool() -> ThreadPool:
    """The process-wide pool ``execute`` uses."""
    global _default
    if _default is None:
        _default = ThreadPool()
    return _default


def execute(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking ``func(*args, **kwargs)`` in a real OS thread; only this green thread waits."""
    return default_pool().execute(func, *args, **kwargs)


def _after_fork_in_child() -> None:
    global _default
    _default = None  # the workers did not survive the fork
    _hub.own_threads = 0


os.register_at_fork(after_in_child=_after_fork_in_child)
