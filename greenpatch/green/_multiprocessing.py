"""Green ``_multiprocessing``: a ``SemLock`` whose blocking acquire waits greenly.

``multiprocessing``'s Lock, RLock, Semaphore, BoundedSemaphore, Condition,
Event, Barrier and its queues' locks are all built on the C ``SemLock`` (a
POSIX semaphore shared between processes), which ``multiprocessing.synchronize``
creates through the module attribute ``_multiprocessing.SemLock``.  The twin
is a subclass, so patching that one name makes every SemLock created (or
unpickled) afterwards green; one created before the patch stays blocking.

* ``acquire`` first tries the semaphore without blocking.  If that fails,
  the green threads of this process queue on a green lock per SemLock (the
  gate), and only the one at its head waits for the semaphore, in a
  ``greenpatch.tpool`` worker: a real OS thread sleeps in ``sem_wait``, the
  hub is woken when it returns, and other green threads run meanwhile.  So
  one contended SemLock holds at most one worker.  A waiter that is killed
  or times out while the worker waits gives the semaphore back if the worker
  got it after all.
* Ownership is per green thread, as ``threading``'s locks are once patched:
  the C object records the OS thread, so an RLock (``RECURSIVE_MUTEX``) is
  tracked here (owner and depth) and its semaphore is taken and given back
  through a plain-semaphore view of the same handle; ``_is_mine()`` and
  ``_count()`` (which ``multiprocessing.synchronize.Condition`` relies on)
  answer for the calling green thread.
* Other processes see the same semaphore: a child that is not patched uses
  the C SemLock on it, with the C semantics.
"""

from __future__ import annotations

import _multiprocessing as _cmp
from typing import Any

from greenpatch import tpool as _tpool
from greenpatch.locks import Lock as _GreenLock
from greenpatch.locks import get_ident as _get_ident
from greenpatch.patcher import original as _original

__implements__ = ["SemLock"]

_CSemLock = _cmp.SemLock
_c_acquire = _CSemLock.acquire
_c_release = _CSemLock.release
_c_after_fork = _CSemLock._after_fork
_real_lock = _original("_thread", "allocate_lock")
_monotonic = _original("time", "monotonic")

RECURSIVE_MUTEX, SEMAPHORE = 0, 1


class _Handoff:
    """What a tpool wait and its green caller agree on when the caller gives up."""

    __slots__ = ("lock", "abandoned", "got")

    def __init__(self) -> None:
        self.lock = _real_lock()
        self.abandoned = False
        self.got = False


def _blocking_acquire(sem: Any, timeout: float | None, handoff: _Handoff) -> bool:
    """Runs in a tpool worker: the real, blocking wait."""
    got = _c_acquire(sem, True, timeout)
    with handoff.lock:
        if got and handoff.abandoned:
            _c_release(sem)  # nobody is left to hold it
            return False
        handoff.got = got
    return got


class SemLock(_CSemLock):
    """``_multiprocessing.SemLock`` whose contended acquire parks only the calling green thread."""

    def _gp_state(self) -> dict:
        state = self.__dict__.get("_gp")
        if state is None:
            state = {"gate": _GreenLock(), "owner": 0, "depth": 0, "last": 0, "count": 0, "sem": None}
            if self.kind == RECURSIVE_MUTEX:
                # The same semaphore without the C owner check (which is per OS thread).
                state["sem"] = _CSemLock._rebuild(self.handle, SEMAPHORE, 1, None)
            else:
                state["sem"] = self
            self.__dict__["_gp"] = state
        return state

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the semaphore (or one more level of an RLock held by this green thread)."""
        state = self._gp_state()
        me = _get_ident()
        if self.kind == RECURSIVE_MUTEX and state["depth"] and state["owner"] == me:
            state["depth"] += 1
            return True
        if not _wait(state, state["sem"], block, timeout):
            return False
        if self.kind == RECURSIVE_MUTEX:
            state["owner"] = me
            state["depth"] = 1
        else:
            state["count"] += 1
            state["last"] = me
        return True

    def release(self) -> None:
        """Release the semaphore (or one level of an RLock); same errors as the C SemLock."""
        state = self._gp_state()
        if self.kind == RECURSIVE_MUTEX:
            if not state["depth"] or state["owner"] != _get_ident():
                raise AssertionError("attempt to release recursive lock not owned by thread")
            if state["depth"] > 1:
                state["depth"] -= 1
                return
            _c_release(state["sem"])
            state["depth"] = 0
            state["owner"] = 0
        else:
            _c_release(self)
            if state["count"]:
                state["count"] -= 1

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def _count(self) -> int:
        """How many times this process holds it (an RLock: the owning green thread's depth)."""
        state = self._gp_state()
        return state["depth"] if self.kind == RECURSIVE_MUTEX else state["count"]

    def _is_mine(self) -> bool:
        """True if the calling green thread holds it (for a Semaphore: acquired it last and still held)."""
        state = self._gp_state()
        if self.kind == RECURSIVE_MUTEX:
            return bool(state["depth"]) and state["owner"] == _get_ident()
        return bool(state["count"]) and state["last"] == _get_ident()

    def _after_fork(self) -> None:
        """In a child process: nobody holds it here, and the parent's waiters are gone."""
        _c_after_fork(self)
        self.__dict__.pop("_gp", None)


SemLock.__doc__ = (SemLock.__doc__ or "") + "\n\n" + (_CSemLock.__doc__ or "")
SemLock.__module__ = "_multiprocessing"


def _wait(state: dict, sem: Any, block: bool, timeout: float | None) -> bool:
    """Take ``sem``: at once if free, else park (one green thread per SemLock waits in tpool)."""
    if _c_acquire(sem, False):
        return True
    if not block:
        return False
    deadline = None
    if timeout is not None:
        timeout = max(0.0, float(timeout))
        deadline = _monotonic() + timeout
    gate = state["gate"]
    if not gate.acquire(True, -1 if timeout is None else timeout):
        return False
    try:
        if _c_acquire(sem, False):
            return True
        remaining = None if deadline is None else max(0.0, deadline - _monotonic())
        if remaining == 0.0:
            return False
        handoff = _Handoff()
        try:
            return _tpool.execute(_blocking_acquire, sem, remaining, handoff)
        except BaseException:
            with handoff.lock:
                handoff.abandoned = True
                got, handoff.got = handoff.got, False
            if got:
                _c_release(sem)
            raise
    finally:
        gate.release()
