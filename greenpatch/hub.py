"""The hub: one greenlet per OS thread that runs every other green thread.

A green thread that must wait registers interest (an fd, a timer, or a wakeup)
and switches to the hub.  The hub loops: run ready callbacks, fire due timers,
poll for I/O up to the next timer, and switch straight back into the green
threads whose fds became ready.  Everything else in greenpatch is built from
the three services here: ``wait_fd``, ``call_later`` and ``schedule``.

Invariants (each has a test in tests/test_hub.py):

* Only the hub switches into a waiting green thread, and only from its loop;
  a green thread switches only to the hub.
* A waiter may be resumed spuriously (a stale I/O edge, a wakeup that lost a
  race with a timeout).  Every wait therefore re-checks its condition: socket
  calls retry the syscall, locks re-test, ``sleep`` re-arms.
* ``forget_fd`` is called before an fd is closed (and when a new object takes
  over an fd number): it drops the registration and wakes every waiter of
  that fd with ``OSError(EBADF)``; a reused fd never inherits old waiters.
* An exception raised by a callback or timer is reported and the loop goes
  on; ``KeyboardInterrupt`` and ``SystemExit`` go to the thread's main greenlet.
* When no green thread can ever be woken (nothing ready, no timers, no fd
  waits, no foreign work, no signal handler that could act) the thread's main
  greenlet receives ``DeadlockError`` naming what each green thread waits on.
"""

from __future__ import annotations

import errno
import gc
from heapq import heapify, heappop, heappush
import os
import signal
import sys
import traceback
import weakref
from collections import deque
from itertools import count
from operator import itemgetter
from os import read as _os_read
from os import write as _os_write
from time import monotonic
from typing import Any, Callable, Iterable

from _thread import _count as _real_thread_count
from _thread import _local as _real_local
from _thread import get_ident as _real_get_ident
from greenlet import getcurrent, greenlet

from greenpatch.poller import HANGUP, READ, WAKES_READERS, WAKES_WRITERS, WRITE, default_poller

__all__ = [
    "Hub", "Timer", "get_hub", "peek_hub", "park", "switch_out", "wake_one", "wake_all",
    "BlockingInHubError", "DeadlockError", "READ", "WRITE", "HANGUP",
]

_COMPACT_MIN = 256


class BlockingInHubError(RuntimeError):
    """Code running in the hub itself (a callback or timer) tried to wait."""


class DeadlockError(RuntimeError):
    """Every green thread waits and nothing can ever wake them."""


class _HandlerCall(BaseException):
    """Thrown into the main green thread where it waits: run a signal handler there, then wait on.

    ``switch_out`` catches it; a green thread suspended anywhere else would
    see it as an error, which is why only the main one ever receives it.
    """

    def __init__(self, handler: Callable, args: tuple) -> None:
        super().__init__("a signal handler to run in the main green thread")
        self.handler = handler
        self.handler_args = args


class FdWatch:
    """The green threads waiting on one fd, per direction, and its readiness hint.

    ``ready`` has the READ/WRITE bit set when the poller reported an edge in
    that direction since the bit was last cleared.  ``wait_fd`` clears it (its
    caller just saw EAGAIN); a caller that knows the fd is drained (a short
    read on a stream socket) may clear it too, and then wait before its next
    syscall instead of making one that would fail, unless HANGUP is set: that
    bit sticks, because after a hang-up no further edge may ever come while a
    read would still return at once (EOF, or the pending error).
    """

    __slots__ = ("readers", "writers", "ready")

    def __init__(self) -> None:
        self.readers: list = []
        self.writers: list = []
        self.ready = READ | WRITE


class Timer(list):
    """A callback due at ``deadline`` (monotonic seconds); ``cancel()`` is O(1).

    A Timer is its own entry in its hub's heap, ``[deadline, seq, callback,
    args, hub]``: the unique ``seq`` keeps equal deadlines in creation order
    and ends every comparison before it reaches the callback.  A cancelled
    timer stays in the heap, callback None, until it comes due or the hub
    compacts the heap (when over half of it is cancelled).
    """

    __slots__ = ()
    # Identity semantics, not a list's: timers are hashable and equal only to themselves.
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__  # type: ignore[assignment]

    deadline = property(itemgetter(0), doc="When the callback is due (``time.monotonic()`` seconds).")
    callback = property(itemgetter(2), doc="The callback, or None once fired or cancelled.")
    args = property(itemgetter(3), doc="The callback's arguments.")

    @property
    def pending(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self[2] is not None

    def cancel(self) -> None:
        if self[2] is not None:
            self[2] = None
            self[3] = ()
            hub = self[4]
            hub._cancelled_timers += 1
            if hub._cancelled_timers > _COMPACT_MIN and hub._cancelled_timers * 2 > len(hub._timers):
                hub._compact_timers()

    def __repr__(self) -> str:
        state = "pending" if self[2] is not None else "done"
        return f"<Timer {state} at {self[0]:.6f} {self[2]!r}>"


class _WakeupReader:
    """Stands in the readers list of the hub's wakeup pipe; 'switching' to it drains the pipe."""

    __slots__ = ("hub",)

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub

    def switch(self) -> None:
        fd = self.hub._wakeup_read
        try:
            while _os_read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        foreign = self.hub._foreign
        ready = self.hub._ready
        while foreign:
            ready.append(foreign.popleft())


class Hub(greenlet):
    """The event loop of one OS thread; get it with ``get_hub()``."""

    def __init__(self, main: greenlet | None = None) -> None:
        root = getcurrent()
        while root.parent is not None:
            root = root.parent
        super().__init__(parent=root)
        # The green thread that gets KeyboardInterrupt and DeadlockError: the
        # OS thread's root greenlet, except in a child forked from a green thread.
        self.main = root if main is None else main
        self.thread_ident = _real_get_ident()
        self._ready: deque = deque()
        self._foreign: deque = deque()
        self._timers: list[Timer] = []
        self._timer_seq = count().__next__
        self._cancelled_timers = 0  # cancelled timers still in the heap
        self._watches: dict[int, FdWatch] = {}
        self._fd_waiters = 0
        self.keepalive = 0  # foreign work in flight (tpool); counts as a possible wakeup
        # Read by debugging tools from another OS thread (greenpatch.debug): the
        # loop's turn count and whether it is idle in the poller right now.
        self.turns = 0
        self.polling = False
        self._poller = default_poller(lambda: self._watches)
        self._wakeup_read, self._wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wakeup_read)
        wakeup_watch = self._watches[self._wakeup_read] = FdWatch()
        wakeup_watch.readers.append(_WakeupReader(self))
        self._owns_signal_wakeup = False
        if self.thread_ident == _main_thread_ident:
            try:
                previous = signal.set_wakeup_fd(self._wakeup_write, warn_on_full_buffer=False)
            except ValueError:
                previous = -1  # not the main interpreter
            else:
                if previous != -1:
                    signal.set_wakeup_fd(previous)
                else:
                    self._owns_signal_wakeup = True
                if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                    signal.signal(signal.SIGINT, _route_sigint)

    # -- the three services ------------------------------------------------

    def schedule(self, callback: Callable, *args: Any) -> None:
        """Run ``callback(*args)`` in the hub on its next turn (FIFO)."""
        self._ready.append((callback, args))

    def resume(self, glet: greenlet) -> None:
        """Switch back into ``glet`` on the hub's next turn (the cheap form of ``schedule(glet.switch)``)."""
        self._ready.append(glet)

    def run_in_main(self, handler: Callable, *args: Any) -> Any:
        """Run ``handler(*args)`` as the main green thread, now: how a signal handler runs.

        CPython runs a handler in the main thread, which may wait in it; a
        signal arrives in whichever greenlet is running (often the hub, idle
        in the poller).  So the handler is thrown into the main green thread
        where it waits (``switch_out`` runs it there, then waits on), and the
        green thread that was interrupted goes on afterwards.  An exception
        from the handler is raised in main at its wait, as in CPython.
        """
        current = getcurrent()
        main = self.main
        if current is main or main.dead or not main:
            return handler(*args)
        if current is not self:
            self.resume(current)
        main.throw(_HandlerCall(handler, args))
        return None

    def schedule_threadsafe(self, callback: Callable, *args: Any) -> None:
        """``schedule`` from any OS thread; wakes the hub through its pipe."""
        self._foreign.append((callback, args))
        try:
            _os_write(self._wakeup_write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so the hub is already due to wake

    def call_later(self, delay: float, callback: Callable, *args: Any) -> Timer:
        """Run ``callback(*args)`` in the hub after ``delay`` seconds."""
        timer = Timer((monotonic() + delay, self._timer_seq(), callback, args, self))
        heappush(self._timers, timer)
        return timer

    def _compact_timers(self) -> None:
        """Drop the cancelled timers from the heap (O(n), when over half of it is cancelled)."""
        timers = self._timers
        timers[:] = [timer for timer in timers if timer[2] is not None]
        heapify(timers)
        self._cancelled_timers = 0

    def wait_fd(self, fd: int, direction: int = READ, timeout: float | None = None,
                timeout_exc: type[BaseException] = TimeoutError, timeout_msg: str = "timed out") -> FdWatch | None:
        """Suspend the current green thread until fd may be ready for ``direction``.

        Returns early and spuriously at times: callers retry their syscall.
        Raises ``timeout_exc(timeout_msg)`` after ``timeout`` seconds and
        ``OSError(EBADF)`` if the fd is closed meanwhile.  Returns the fd's
        ``FdWatch``, whose readiness hint the caller may clear, or None for a
        file that cannot be polled and is always ready.
        """
        watch = self._watches.get(fd)
        if watch is None:
            watch = self._watch(fd)
            if watch is None:
                return None  # a regular file is always ready
        waiters = watch.readers if direction == READ else watch.writers
        current = getcurrent()
        if current is self:
            raise BlockingInHubError("cannot wait for an fd inside the hub (a callback or timer)")
        watch.ready &= ~direction
        waiters.append(current)
        self._fd_waiters += 1
        if timeout is None:
            try:
                switch_out(self)
            finally:
                self._fd_waiters -= 1
                waiters.remove(current)
        else:
            timer = self.call_later(timeout, current.throw, timeout_exc, timeout_msg)
            try:
                switch_out(self)
            finally:
                self._fd_waiters -= 1
                waiters.remove(current)
                timer.cancel()
        return watch

    def wait_fds(self, reads: Iterable[int], writes: Iterable[int], timeout: float | None = None) -> bool:
        """Suspend until any fd in ``reads`` may be readable or any in ``writes`` writable.

        The multi-fd form of ``wait_fd`` for select() and poll objects.  Returns
        False if ``timeout`` passed first, True otherwise (possibly spuriously);
        raises ``OSError(EBADF)`` if one of the fds is closed meanwhile.
        """
        current = getcurrent()
        if current is self:
            raise BlockingInHubError("cannot wait for an fd inside the hub (a callback or timer)")
        lists = []
        try:
            for fds, direction in ((reads, READ), (writes, WRITE)):
                for fd in fds:
                    # Re-arm each registration: these fds may belong to objects that
                    # close without telling the hub, and this path is not the hot one.
                    watch = self._watch(fd)
                    if watch is None:
                        for waiters in lists:
                            waiters.remove(current)
                        return True  # a regular file is always ready
                    waiters = watch.readers if direction == READ else watch.writers
                    waiters.append(current)
                    lists.append(waiters)
        except BaseException:
            for waiters in lists:  # EBADF or ENOMEM half-way: leave no stale waiter behind
                waiters.remove(current)
            raise
        self._fd_waiters += 1
        timer = None if timeout is None else self.call_later(timeout, current.switch)
        timed_out = False
        try:
            switch_out(self)
        finally:
            self._fd_waiters -= 1
            for waiters in lists:
                waiters.remove(current)
            if timer is not None:
                timed_out = timer[2] is None
                timer.cancel()
        return not timed_out

    def _watch(self, fd: int) -> FdWatch | None:
        """(Re-)register fd with the poller; None if it cannot be polled (always ready)."""
        if fd < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if not self._poller.register(fd):
            return None
        watch = self._watches.get(fd)
        if watch is None:
            watch = self._watches[fd] = FdWatch()
        return watch

    def forget_fd(self, fd: int) -> None:
        """Drop fd's registration and wake its waiters with EBADF.

        Call it before closing an fd, and when a new object takes over an fd
        number that may have been closed behind our back.
        """
        watch = self._watches.pop(fd, None)
        if watch is None:
            return
        self._poller.unregister(fd)
        for waiters in (watch.readers, watch.writers):
            for waiter in waiters:
                self._ready.append((self._throw_if_waiting, (waiter, waiters)))

    def _throw_if_waiting(self, waiter: greenlet, waiters: list) -> None:
        if waiter in waiters:
            waiter.throw(OSError(errno.EBADF, "Bad file descriptor"))

    # -- the loop ------------------------------------------------------------

    def run(self, *_result: Any) -> None:
        # (``_result``: a green thread that ends before the hub first ran passes its result here.)
        ready = self._ready
        timers = self._timers
        watches = self._watches
        poll = self._poller.poll
        while True:
            self.turns += 1
            try:
                # Ready callbacks run in batches: what a batch makes ready waits
                # for the next turn, after a poll, so that I/O gets in.  While
                # no green thread waits on an fd the poller has nothing to report
                # but the wakeup pipe, so a short batch runs on into what it made
                # ready, up to 64 callbacks, without a syscall.
                batch = len(ready)
                for turn in range(batch if batch >= 64 else 64):
                    if turn >= batch and (not ready or self._fd_waiters):
                        break
                    item = ready.popleft()
                    if type(item) is tuple:
                        item[0](*item[1])
                    else:
                        item.switch()  # a green thread resumed by resume()
                    if turn & 63 == 63 and timers and timers[0][0] <= monotonic():
                        break  # a long batch (10k threads starting) must not make due timers late

                if timers:
                    now = monotonic()
                    while timers and timers[0][0] <= now:
                        timer = heappop(timers)
                        callback = timer[2]
                        if callback is None:
                            self._cancelled_timers -= 1
                            continue
                        timer[2] = None
                        callback(*timer[3])
                    while timers and timers[0][2] is None:
                        heappop(timers)
                        self._cancelled_timers -= 1

                if ready:
                    timeout = 0.0  # busy: let I/O and the wakeup pipe in between batches
                elif timers:
                    timeout = max(0.0, timers[0][0] - monotonic())
                else:
                    timeout = -1.0
                    if not (self._fd_waiters or self.keepalive or self._foreign) and not _can_be_woken_from_outside():
                        self._deadlock()
                        continue

            except (KeyboardInterrupt, SystemExit) as exc:
                self._to_main(exc)
                continue
            except BaseException:
                self.handle_error()
                continue
            self.polling = True
            try:
                events = poll(timeout)
            except BaseException as exc:
                # A Python signal handler ran inside the poll and raised: with
                # real threads that exception belongs to the main thread.
                self.polling = False
                self._to_main(exc)
                continue
            self.polling = False
            for fd, events in events:
                watch = watches.get(fd)
                if watch is None:
                    continue
                # Every event is delivered even if a waiter misbehaves: with
                # edge-triggered polling a dropped event would never come back.
                watch.ready |= events
                try:
                    if events & WAKES_READERS and watch.readers:
                        readers = watch.readers
                        if len(readers) == 1:
                            readers[0].switch()
                        else:
                            for waiter in tuple(readers):
                                waiter.switch()
                    if events & WAKES_WRITERS and watch.writers:
                        for waiter in tuple(watch.writers):
                            waiter.switch()
                except (KeyboardInterrupt, SystemExit) as exc:
                    self._to_main(exc)
                except BaseException:
                    self.handle_error()

    def handle_error(self) -> None:
        """Report an exception that escaped a callback; the loop goes on."""
        exc = sys.exc_info()[1]
        try:
            sys.stderr.write(f"greenpatch: exception in the hub (the loop goes on): {exc!r}\n")
            traceback.print_exc()
        except Exception:
            pass

    def _to_main(self, exc: BaseException) -> None:
        if self.main.dead:
            if self.main is not self.parent:
                _end_forked_child(self, exc)
            raise exc
        self.main.throw(exc)

    def _deadlock(self) -> None:
        self._to_main(DeadlockError(
            "every green thread is waiting and nothing can wake them (no I/O, timers or "
            "signal handlers pending):\n" + describe_waiters(self)))

    # -- introspection and teardown -------------------------------------------

    def counts(self) -> dict[str, int]:
        """How many ready callbacks, live timers, fd registrations and fd waiters there are."""
        return {
            "ready": len(self._ready),
            "timers": len(self._timers) - self._cancelled_timers,
            "fds": len(self._watches) - 1,  # less the wakeup pipe
            "fd_waiters": self._fd_waiters,
        }

    def close(self) -> None:
        """Release the poller and wakeup pipe (the hub cannot be used afterwards)."""
        if self._owns_signal_wakeup:
            try:
                signal.set_wakeup_fd(-1)
                if signal.getsignal(signal.SIGINT) is _route_sigint:
                    signal.signal(signal.SIGINT, signal.default_int_handler)
            except ValueError:
                pass
        self._poller.close()
        os.close(self._wakeup_read)
        os.close(self._wakeup_write)


def describe_waiters(hub: Hub) -> str:
    """One line per suspended green thread of ``hub``: its name and where it waits."""
    lines = []
    for obj in gc.get_objects():
        if not isinstance(obj, greenlet) or obj is hub or obj.dead or not belongs_to(obj, hub):
            continue
        where = "not started"
        if obj.gr_frame is not None:
            stack = traceback.extract_stack(obj.gr_frame)
            outside = [f for f in stack if _PACKAGE_DIR not in f.filename]
            last = (outside or stack)[-1]
            where = f"{last.filename}:{last.lineno} in {last.name}: {(last.line or '').strip()}"
        name = "main greenlet" if obj is hub.main else getattr(obj, "name", None) or repr(obj)
        lines.append(f"  {name}: {where}")
    return "\n".join(lines)


def belongs_to(glet: greenlet, hub: Hub) -> bool:
    """True if ``glet`` is ``hub``'s main greenlet, the hub, or runs under it."""
    while glet is not None:
        if glet is hub or glet is hub.main:
            return True
        glet = glet.parent
    return False


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _route_sigint(signum: int, frame: Any) -> None:
    """SIGINT's handler under greenpatch: KeyboardInterrupt goes to the main greenlet.

    With real threads Ctrl-C always interrupts the main thread; a signal
    handler runs in whichever green thread happens to be executing, and
    threading's bootstrap would swallow the exception there.
    """
    _state.hub.run_in_main(signal.default_int_handler, signum, frame)


def _can_be_woken_from_outside() -> bool:
    """True if another OS thread or a Python signal handler could still wake a waiter.

    Ctrl-C's default handler does not count: a program that waits on nothing
    but Ctrl-C is reported as deadlocked.
    """
    if _real_thread_count() > own_threads:
        return True
    if _real_get_ident() != _main_thread_ident:
        return False
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler and handler is not _route_sigint:
            return True
    return False


def switch_out(hub: Hub) -> None:
    """Suspend the calling green thread in ``hub`` until something switches back to it.

    Every wait goes through here.  A signal handler thrown in by
    ``Hub.run_in_main`` runs on this stack, and the wait then returns as a
    spurious wakeup: its caller re-checks and waits again.
    """
    try:
        hub.switch()
        return
    except _HandlerCall as call:
        handler, args = call.handler, call.handler_args
    handler(*args)  # outside the except clause: its exceptions are not chained to _HandlerCall


def park(waiters: list, ready: Callable[[], bool], timeout: float | None = None) -> bool:
    """Wait in ``waiters`` until ``ready()`` is true; False if ``timeout`` passes first.

    The building block of every green primitive (locks, events, joins).  The
    current green thread is listed in ``waiters`` *before* ``ready()`` is first
    tried, so a waker in another OS thread that changes the state and then
    reads ``waiters`` can never miss it.  Wakeups may be spurious; ``ready()``
    is re-checked after each.  Leaving without success (timeout, exception)
    passes a wakeup that may have been meant for us on to the next waiter.
    """
    try:
        hub = _state.hub
    except AttributeError:
        hub = get_hub()
    current = getcurrent()
    if current is hub:
        raise BlockingInHubError("cannot wait inside the hub (a callback or timer)")
    entry = (current, hub)
    waiters.append(entry)
    if timeout is None:
        try:
            while not ready():
                switch_out(hub)
        except BaseException:
            _leave(waiters, entry)
            raise
        waiters.remove(entry)
        return True
    timer = None
    try:
        if ready():
            waiters.remove(entry)
            return True
        if timeout > 0:
            timer = hub.call_later(timeout, current.switch)
            while True:
                switch_out(hub)
                if ready():
                    waiters.remove(entry)
                    return True
                if timer[2] is None:
                    break
    except BaseException:
        _leave(waiters, entry)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    _leave(waiters, entry)
    return False


def _leave(waiters: list, entry: tuple) -> None:
    """``park`` gives up: unlist ``entry`` and pass on a wakeup it may have taken."""
    waiters.remove(entry)
    if waiters:
        wake_one(waiters)


def wake_one(waiters: list) -> None:
    """Wake the first green thread parked in ``waiters`` (it re-checks and may park again)."""
    if waiters:
        glet, hub = waiters[0]
        if hub.thread_ident == _real_get_ident():
            hub._ready.append(glet)
        else:
            hub.schedule_threadsafe(glet.switch)


def wake_all(waiters: list) -> None:
    """Wake every green thread parked in ``waiters``."""
    here = _real_get_ident()
    for glet, hub in tuple(waiters):
        if hub.thread_ident == here:
            hub._ready.append(glet)
        else:
            hub.schedule_threadsafe(glet.switch)


_main_thread_ident = _real_get_ident()
_state = _real_local()
# Every live hub by its OS thread's ident, for debugging tools in other threads
# (greenpatch.debug); written only when a hub is created.
hubs: "weakref.WeakValueDictionary[int, Hub]" = weakref.WeakValueDictionary()
own_threads = 0  # greenpatch's own OS threads (tpool workers): they wake hubs only for keepalive work


def peek_hub() -> Hub | None:
    """The calling OS thread's hub if it has one; never creates one (closing a socket must not)."""
    return getattr(_state, "hub", None)


def get_hub() -> Hub:
    """The hub of the calling OS thread, created on first use."""
    try:
        return _state.hub
    except AttributeError:
        hub = _state.hub = Hub()
        hubs[hub.thread_ident] = hub
        return hub


def _after_fork_in_child() -> None:
    """The child keeps only the green thread that forked; it gets a fresh hub.

    Forked from a green thread other than main, that thread becomes the
    child's main thread (as ``threading`` sees it too): the parent's main
    greenlet never runs again here, and the child ends when its green
    threads have, as a process whose last real thread exits.
    """
    global _main_thread_ident
    old = getattr(_state, "hub", None)
    _main_thread_ident = _real_get_ident()
    if old is None:
        return
    del _state.hub
    old.close()
    current = getcurrent()
    if current is not old.main and current is not old:
        hub = _state.hub = Hub(main=current)
        hubs[hub.thread_ident] = hub
        current.parent = hub


def _end_forked_child(hub: Hub, exc: BaseException) -> None:
    """The forking green thread of this child has ended and ``exc`` found no one to go to: exit.

    Nothing left to run ends the process with status 0, as when the last
    thread of a process exits; green threads stuck for good, or an interrupt,
    are reported on stderr and end it with status 1.  Python-level buffers
    are flushed; atexit handlers do not run (they do not after fork either).
    """
    status = 0
    if not isinstance(exc, DeadlockError) or describe_waiters(hub):
        status = 1
        try:
            sys.stderr.write(f"greenpatch: in a child forked from a green thread, after that thread ended: "
                             f"{type(exc).__name__}: {exc}\n")
        except Exception:
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


os.register_at_fork(after_in_child=_after_fork_in_child)
