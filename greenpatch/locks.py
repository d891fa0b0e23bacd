"""Green locks: Lock, RLock, Condition, Semaphore, BoundedSemaphore.

They behave like their ``_thread``/``threading`` twins (same arguments, same
errors, same messages) but a contended acquire parks the calling green thread
on the hub instead of blocking the OS thread.  After ``monkey_patch()`` they
*are* ``threading.Lock``, ``threading.RLock``'s C implementation and
``threading.Condition``; without patching, use them from green threads
started with ``greenpatch.spawn``.

Invariants:

* The state of a Lock or RLock lives in a real ``_thread`` lock that is only
  ever acquired non-blocking, so it is atomic across OS threads; green
  threads of several OS threads may share one lock.  Waiters are listed
  *before* they retry (see ``hub.park``), so a release from another OS thread
  is never missed.
* A release wakes one waiter, which retries; a barging acquirer may win
  (as with CPython's locks), and a waiter that times out passes its wakeup on.
* Ownership (RLock, Condition) is per green thread: ``get_ident()`` is the
  OS ident for an OS thread's main greenlet and ``id(greenlet)`` otherwise.
* The uncontended paths allocate nothing and make no keyword calls.
"""

from __future__ import annotations

import sys
from _thread import TIMEOUT_MAX
from collections import deque
from functools import partial
from operator import index
from time import monotonic
from typing import Any, Callable

from greenlet import getcurrent

from greenpatch.hub import park, wake_all, wake_one
from greenpatch.patcher import original

_real_allocate_lock = original("_thread", "allocate_lock")
_real_get_ident = original("_thread", "get_ident")

__all__ = ["Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "get_ident", "TIMEOUT_MAX"]

if sys.version_info >= (3, 13):
    _NEGATIVE_TIMEOUT = "timeout value must be a non-negative number"
else:
    _NEGATIVE_TIMEOUT = "timeout value must be positive"


def get_ident() -> int:
    """The ident of the calling green thread.

    An OS thread's main greenlet keeps the OS thread's ident (so the main
    thread's bookkeeping in ``threading`` needs no re-keying); every other
    greenlet is identified by ``id(greenlet)``, unique while it exists.
    """
    current = getcurrent()
    if current.parent is None:
        return _real_get_ident()
    return id(current)


def _check_timeout(blocking: Any, timeout: Any) -> float | None:
    """Validate ``acquire(blocking, timeout)`` like ``_thread`` does; None means wait forever."""
    if timeout == -1:
        return None
    if not blocking:
        raise ValueError("can't specify a timeout for a non-blocking call")
    timeout = float(timeout if isinstance(timeout, float) else index(timeout))
    if timeout != timeout:
        raise ValueError("Invalid value NaN (not a number)")
    if timeout < 0:
        raise ValueError(_NEGATIVE_TIMEOUT)
    if timeout > TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


def _cannot_pickle(self: Any, protocol: int = 0) -> None:
    raise TypeError(f"cannot pickle {_c_name(self)!r} object")


def _c_name(obj: Any) -> str:
    cls = type(obj)
    return getattr(cls, "_c_name", None) if cls in (Lock, RLock) else cls.__qualname__


class Lock:
    """A green ``_thread.lock``: a mutex any green thread (or OS thread) may release."""

    __slots__ = ("_lock", "_waiters", "__weakref__")
    _c_name = "_thread.lock"

    def __init__(self) -> None:
        self._lock = _real_allocate_lock()
        self._waiters: list = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("type '_thread.lock' is not an acceptable base type")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock, parking the green thread while another holds it.

        Without arguments wait as long as it takes and return True; with
        ``blocking=False`` return False at once if the lock is held; with a
        ``timeout`` (seconds) return False if it passes first.
        """
        if timeout == -1:
            if self._lock.acquire(False):
                return True
            if not blocking:
                return False
            return park(self._waiters, partial(self._lock.acquire, False), None)
        timeout = _check_timeout(blocking, timeout)
        if self._lock.acquire(False):
            return True
        return park(self._waiters, partial(self._lock.acquire, False), timeout)

    __enter__ = acquire

    def release(self) -> None:
        """Release the lock; any green thread may do it.  RuntimeError if it is not locked."""
        self._lock.release()
        if self._waiters:
            wake_one(self._waiters)

    def __exit__(self, *exc_info: Any) -> None:
        self._lock.release()
        if self._waiters:
            wake_one(self._waiters)

    def locked(self) -> bool:
        """True if the lock is held."""
        return self._lock.locked()

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def _at_fork_reinit(self) -> None:
        self._lock = _real_allocate_lock()
        self._waiters = []

    __reduce_ex__ = _cannot_pickle

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<{state} {_c_name(self)} object at {id(self):#x}>"


class RLock:
    """A green ``_thread.RLock``: reentrant, owned by the green thread that acquired it."""

    __slots__ = ("_lock", "_waiters", "_owner", "_count", "__weakref__")
    _c_name = "_thread.RLock"

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments are ignored, as by _thread.RLock
        self._lock = _real_allocate_lock()
        self._waiters: list = []
        self._owner = 0
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock, or add one level of recursion if this green thread holds it."""
        if timeout != -1:
            timeout = _check_timeout(blocking, timeout)
        else:
            timeout = None
        current = getcurrent()
        me = _real_get_ident() if current.parent is None else id(current)
        if self._owner == me and self._count:
            self._count += 1
            return True
        if not self._lock.acquire(False):
            if not blocking or not park(self._waiters, partial(self._lock.acquire, False), timeout):
                return False
        self._owner = me
        self._count = 1
        return True

    __enter__ = acquire

    def release(self) -> None:
        """Drop one level of recursion; RuntimeError unless this green thread holds the lock."""
        current = getcurrent()
        me = _real_get_ident() if current.parent is None else id(current)
        if self._owner != me or not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self._owner = 0
            self._lock.release()
            if self._waiters:
                wake_one(self._waiters)

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def _is_owned(self) -> bool:
        return bool(self._count) and self._owner == get_ident()

    def _recursion_count(self) -> int:
        return self._count if self._is_owned() else 0

    def _release_save(self) -> tuple[int, int]:
        """Release completely (for Condition.wait); returns what ``_acquire_restore`` needs."""
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self._owner)
        self._count = 0
        self._owner = 0
        self._lock.release()
        if self._waiters:
            wake_one(self._waiters)
        return state

    def _acquire_restore(self, state: tuple[int, int]) -> None:
        if not self._lock.acquire(False):
            park(self._waiters, partial(self._lock.acquire, False), None)
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._lock = _real_allocate_lock()
        self._waiters = []
        self._owner = 0
        self._count = 0

    __reduce_ex__ = _cannot_pickle

    def __repr__(self) -> str:
        state = "locked" if self._lock.locked() else "unlocked"
        return f"<{state} {_c_name(self)} object owner={self._owner} count={self._count} at {id(self):#x}>"


class _Waiter(list):
    """One green thread in ``Condition.wait``: the list ``park`` uses, and whether it was notified.

    ``greenpatch.queue.Queue`` inlines ``notify()`` (pop a waiter, set
    ``notified``, wake it): keep the two in step.
    """

    __slots__ = ("notified",)

    def __init__(self) -> None:
        self.notified = False

    def __call__(self) -> bool:
        return self.notified

    def __eq__(self, other: object) -> bool:  # identity, so that deque.remove finds this waiter only
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


class Condition:
    """A green ``threading.Condition`` over any lock (a green RLock by default).

    ``wait()`` returns True when notified, even if its timeout also passed
    meanwhile, so a notification is never lost to a timed-out waiter; one
    consumed by a waiter that then raises (a Timeout, a kill) is passed on.
    """

    def __init__(self, lock: Any = None) -> None:
        if lock is None:
            lock = RLock()
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release
        for name in ("_release_save", "_acquire_restore", "_is_owned"):
            method = getattr(lock, name, None)
            if method is not None:
                setattr(self, name, method)
        cls = type(self)
        # Over a green Lock (Queue's, Semaphore's, Barrier's) wait() releases
        # and re-acquires it inline: the hot path of every queue.
        self._plain = (type(lock) is Lock and cls._release_save is Condition._release_save
                       and cls._acquire_restore is Condition._acquire_restore)
        if type(lock) is Lock and cls._is_owned is Condition._is_owned:
            self._is_owned = lock.locked  # a plain lock cannot know its owner
        self._waiters: deque = deque()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()
        self._waiters.clear()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self._lock.__exit__(*exc_info)

    def __repr__(self) -> str:
        return f"<Condition({self._lock}, {len(self._waiters)})>"

    def _release_save(self) -> Any:
        self._lock.release()

    def _acquire_restore(self, state: Any) -> None:
        self._lock.acquire()

    def _is_owned(self) -> bool:
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait until notified or ``timeout`` passes, re-acquire; True if notified."""
        if not (self._lock._lock.locked() if self._plain else self._is_owned()):
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = _Waiter()
        self._waiters.append(waiter)
        if self._plain:
            lock = self._lock
            lock._lock.release()
            if lock._waiters:
                wake_one(lock._waiters)
            saved_state = None
        else:
            saved_state = self._release_save()
        try:
            park(waiter, waiter, timeout)
        except BaseException:
            self._acquire_restore(saved_state)
            if waiter.notified:
                self.notify()  # leaving with an exception: pass the notification on
            else:
                self._forget(waiter)
            raise
        if self._plain:
            lock = self._lock
            if not lock._lock.acquire(False):
                lock.acquire()
        else:
            self._acquire_restore(saved_state)
        if not waiter.notified:
            self._forget(waiter)
        return waiter.notified

    def _forget(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        """Wait until ``predicate()`` is true (it is called with the lock held); returns its last value."""
        endtime = None
        waittime = timeout
        result = predicate()
        while not result:
            if waittime is not None:
                if endtime is None:
                    endtime = monotonic() + waittime
                else:
                    waittime = endtime - monotonic()
                    if waittime <= 0:
                        break
            self.wait(waittime)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` waiting green threads (the lock must be held)."""
        if not (self._lock._lock.locked() if self._plain else self._is_owned()):
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiter = waiters.popleft()
            waiter.notified = True
            if waiter:
                wake_one(waiter)  # at most one green thread parks on a waiter
            n -= 1

    def notify_all(self) -> None:
        """Wake every waiting green thread (the lock must be held)."""
        self.notify(len(self._waiters))

    def notifyAll(self) -> None:
        """Deprecated alias of ``notify_all``."""
        import warnings
        warnings.warn("notifyAll() is deprecated, use notify_all() instead", DeprecationWarning, stacklevel=2)
        self.notify_all()


class Semaphore:
    """A green ``threading.Semaphore``: ``acquire`` parks while the counter is zero."""

    def __init__(self, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._value = value
        self._mutex = _real_allocate_lock()  # guards _value; never held across a switch
        self._waiters: list = []

    def _try_acquire(self) -> bool:
        with self._mutex:
            if self._value > 0:
                self._value -= 1
                return True
        return False

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        """Decrement the counter, waiting while it is zero; False if not blocking or ``timeout`` passed."""
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        with self._mutex:
            if self._value > 0:
                self._value -= 1
                return True
        if not blocking:
            return False
        return park(self._waiters, self._try_acquire, timeout)

    __enter__ = acquire

    def release(self, n: int = 1) -> None:
        """Increment the counter by ``n`` and wake as many waiters."""
        if n < 1:
            raise ValueError("n must be one or more")
        with self._mutex:
            self._value += n
        if self._waiters:
            wake_all(self._waiters[:n])

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self._mutex = _real_allocate_lock()
        self._waiters = []

    def __repr__(self) -> str:
        cls = type(self)
        return f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}: value={self._value}>"


class BoundedSemaphore(Semaphore):
    """A Semaphore whose ``release`` raises ValueError above the initial value."""

    def __init__(self, value: int = 1) -> None:
        super().__init__(value)
        self._initial_value = value

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        with self._mutex:
            if self._value + n > self._initial_value:
                raise ValueError("Semaphore released too many times")
            self._value += n
        if self._waiters:
            wake_all(self._waiters[:n])

    def __repr__(self) -> str:
        cls = type(self)
        return (f"<{cls.__module__}.{cls.__qualname__} at {id(self):#x}:"
                f" value={self._value}/{self._initial_value}>")
