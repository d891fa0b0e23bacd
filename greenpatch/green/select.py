"""Green ``select``: select(), poll() and epoll() that suspend only the calling green thread.

Every wait has the same shape: ask the kernel with a zero timeout; if nothing
is ready and the timeout allows, wait on the hub for the fds involved, then
ask the kernel again, until something is ready or the total timeout passes.
Arguments, results and errors are the stdlib's: the real zero-timeout calls
check the fds, lists and masks, and a timeout the C code would reject is
handed to the real call, which raises its own error before it could block.

``poll()`` and ``epoll()`` stay available (gevent and eventlet delete them,
which breaks asyncio and selectors).  A green ``epoll`` wraps a real one and
waits on the hub for the epoll fd itself, which is readable whenever the
epoll has events.  A green ``poll`` has no fd of its own, so it waits for the
fds registered with it.  As every green wait, one that would block inside
the hub itself (a callback or timer) raises ``BlockingInHubError``; a
zero-timeout call works anywhere.

Besides readiness, a wait on the hub ends when one of its fds is closed by a
green socket; the re-check then reports that as the stdlib does (EBADF from
select, POLLNVAL from poll, ValueError from a closed epoll).  The exceptional
list of select() is waited on as readability; the hub's registration includes
EPOLLPRI, so out-of-band data arriving during the wait wakes the call.
"""

from __future__ import annotations

import select as _stdselect

globals().update({name: value for name, value in vars(_stdselect).items()
                  if not (name.startswith("__") and name.endswith("__"))})

# The stdlib selectors module binds select.select/poll/epoll into class
# attributes at import; import it now, while they are still the real ones.
import selectors as _stdselectors  # noqa: E402,F401
from _thread import _local as _real_local  # noqa: E402
from errno import EBADF as _EBADF  # noqa: E402
from math import ceil as _ceil  # noqa: E402
from operator import index as _index  # noqa: E402
from time import monotonic as _monotonic  # noqa: E402

from greenlet import getcurrent as _getcurrent  # noqa: E402

from greenpatch.greenthread import sleep as _sleep  # noqa: E402
from greenpatch.hub import READ as _READ  # noqa: E402
from greenpatch.hub import peek_hub as _peek_hub  # noqa: E402
from greenpatch.hub import get_hub as _get_hub  # noqa: E402

_real_select = _stdselect.select
_real_poll = getattr(_stdselect, "poll", None)
_real_epoll = getattr(_stdselect, "epoll", None)

__implements__ = [name for name in ("select", "poll", "epoll") if hasattr(_stdselect, name)]

_NS_LIMIT = 2 ** 63  # CPython keeps timeouts as signed 64-bit nanoseconds
_INT_MIN = -(2 ** 31)
_INT_MAX = 2 ** 31 - 1


# -- timeouts: exactly the values the C code accepts ---------------------------------

def _number(value):
    """``value`` as an int or float if CPython's timeout conversion takes its type, else None."""
    if isinstance(value, float):
        return value
    try:
        return _index(value)
    except TypeError:
        return None


def _select_timeout(timeout):
    """select()'s timeout in seconds (None: forever); anything else raises the stdlib's error."""
    if timeout is None:
        return None
    seconds = _number(timeout)
    if seconds is not None and 0 <= seconds * 1_000_000_000 < _NS_LIMIT:  # NaN fails too
        return seconds
    _real_select([], [], [], timeout)  # raises TypeError, ValueError or OverflowError
    return seconds


def _poll_timeout(timeout, real_poll):
    """poll.poll()'s timeout (milliseconds) in seconds; negative or None: forever."""
    if timeout is None:
        return None
    ms = _number(timeout)
    if ms is not None and -_NS_LIMIT <= ms * 1_000_000 < _NS_LIMIT:
        # CPython rounds away from zero to nanoseconds, then to milliseconds.
        ns = _ceil(ms * 1_000_000) if ms >= 0 else -_ceil(-ms * 1_000_000)
        whole = -(-ns // 1_000_000) if ns >= 0 else ns // 1_000_000
        if _INT_MIN <= whole <= _INT_MAX:
            return None if whole < 0 else whole / 1000
    real_poll(timeout)  # raises TypeError, ValueError or OverflowError
    return None


def _epoll_timeout(timeout, real_poll, maxevents):
    """epoll.poll()'s timeout in seconds, at the millisecond resolution epoll_wait() has."""
    if timeout is None:
        return None
    seconds = _number(timeout)
    if seconds is not None and -_NS_LIMIT <= seconds * 1_000_000_000 < _NS_LIMIT:
        ns = _ceil(seconds * 1_000_000_000) if seconds >= 0 else -_ceil(-seconds * 1_000_000_000)
        ms = -(-ns // 1_000_000)  # rounded towards +infinity, as CPython does
        if _INT_MIN <= ms <= _INT_MAX:
            return None if ms < 0 else ms / 1000
    real_poll(timeout, maxevents)  # raises (closed, TypeError, ValueError or OverflowError)
    return None


# -- waiting ---------------------------------------------------------------------------

class _Expired(Exception):
    """A wait_fd timeout inside epoll.poll(), which returns [] instead."""


def _forget(fd: int) -> None:
    hub = _peek_hub()
    if hub is not None:
        hub.forget_fd(fd)


def _wait(hub, reads, writes, timeout) -> bool:
    """hub.wait_fds; False on timeout.  A closed fd ends the wait: the caller's re-check reports it."""
    try:
        return hub.wait_fds(reads, writes, timeout)
    except OSError as exc:
        if exc.errno != _EBADF:
            raise
        return True


def _let_others_run() -> bool:
    """Before returning fds that were ready at once, give the hub's other work a turn; True if it ran.

    A real select() or poll() releases the GIL, so a thread looping over it
    with fds always ready (an asyncore server whose socket is writable) lets
    the other threads run.  A green call that found fds ready never switched:
    such a loop would starve every green thread waiting for an fd or a timer,
    which only the hub can wake.  The caller checks its fds again afterwards.
    A caller that let the hub turn since the last such call (a server loop that
    accepted and started a thread, which waits) has given the others their
    turn already and goes on: accepting a burst of connections is not slowed
    to one per round of every other green thread.
    """
    hub = _peek_hub()
    if hub is None or not (hub._ready or hub._fd_waiters or hub._timers) or _getcurrent() is hub:
        return False
    if getattr(_seen, "turn", None) != hub.turns:
        _seen.turn = hub.turns
        return False
    _sleep(0)
    _seen.turn = hub.turns
    return True


_seen = _real_local()  # per OS thread (so per hub): the hub's turn at the last call above


def _fileno(obj) -> int:
    return obj if isinstance(obj, int) else obj.fileno()


def _sequence(seq):
    """A list or tuple of ``seq``'s items, raising select()'s error for non-iterables."""
    if seq.__class__ is list or seq.__class__ is tuple:
        return seq
    try:
        items = iter(seq)
    except TypeError:
        raise TypeError("arguments 1-3 must be sequences") from None
    return list(items)


# -- select() --------------------------------------------------------------------------

def select(rlist, wlist, xlist, timeout=None, /):
    """Wait until one or more file descriptors are ready for some kind of I/O.

    Same arguments, result and errors as the stdlib's select.select(); only
    the calling green thread waits.
    """
    seconds = _select_timeout(timeout)
    rlist = _sequence(rlist)
    wlist = _sequence(wlist)
    xlist = _sequence(xlist)
    ready = _real_select(rlist, wlist, xlist, 0)
    if (ready[0] or ready[1] or ready[2] or seconds == 0) and _let_others_run():
        ready = _real_select(rlist, wlist, xlist, 0)
    if ready[0] or ready[1] or ready[2] or seconds == 0:
        return ready
    hub = _get_hub()
    reads = [_fileno(obj) for obj in rlist]
    reads += [_fileno(obj) for obj in xlist]
    writes = [_fileno(obj) for obj in wlist]
    deadline = None if seconds is None else _monotonic() + seconds
    remaining = seconds
    while True:
        if not _wait(hub, reads, writes, remaining):
            return [], [], []
        ready = _real_select(rlist, wlist, xlist, 0)
        if ready[0] or ready[1] or ready[2]:
            return ready
        if deadline is not None:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return [], [], []


# -- poll() ------------------------------------------------------------------------------

if _real_poll is not None:
    _POLL_DEFAULT = POLLIN | POLLPRI | POLLOUT
    _POLL_READS = POLLIN | POLLPRI | POLLRDNORM | POLLRDBAND | getattr(_stdselect, "POLLRDHUP", 0)
    _POLL_WRITES = POLLOUT | POLLWRNORM | POLLWRBAND

    class poll:
        """A green poll object: register fds, then poll() suspends only the calling green thread.

        Same methods, arguments, results and errors as the object the
        stdlib's select.poll() returns.  Like the stdlib's, the type of that
        object cannot be called: ``poll()`` returns a ``_PollObject``.
        """

        __slots__ = ("_poll", "_masks", "_polling", "__weakref__")

        def __new__(cls):
            return object.__new__(_PollObject if cls is poll else cls)

        def __init__(self) -> None:
            self._poll = _real_poll()
            self._masks: dict[int, int] = {}
            self._polling = False

        def register(self, fd, eventmask=_POLL_DEFAULT, /) -> None:
            """Register a file descriptor with the polling object."""
            self._poll.register(fd, eventmask)
            self._masks[_fileno(fd)] = eventmask

        def modify(self, fd, eventmask, /) -> None:
            """Modify an already registered file descriptor."""
            self._poll.modify(fd, eventmask)
            self._masks[_fileno(fd)] = eventmask

        def unregister(self, fd, /) -> None:
            """Remove a file descriptor being tracked by the polling object."""
            self._poll.unregister(fd)
            del self._masks[_fileno(fd)]

        def poll(self, timeout=None, /) -> list:
            """Poll the registered fds; timeout in milliseconds (None or negative: forever).

            Returns a list of (fd, event) pairs, as the stdlib's does.
            """
            seconds = _poll_timeout(timeout, self._poll.poll)
            if self._polling:
                raise RuntimeError("concurrent poll() invocation")
            ready = self._poll.poll(0)
            if (ready or seconds == 0) and _let_others_run():
                ready = self._poll.poll(0)
            if ready or seconds == 0:
                return ready
            hub = _get_hub()
            deadline = None if seconds is None else _monotonic() + seconds
            remaining = seconds
            self._polling = True
            try:
                while True:
                    reads = []
                    writes = []
                    for fd, mask in self._masks.items():
                        if mask & _POLL_WRITES:
                            writes.append(fd)
                        if mask & _POLL_READS or not mask & _POLL_WRITES:
                            reads.append(fd)  # hang-ups and errors wake readers too
                    if not _wait(hub, reads, writes, remaining):
                        return []
                    ready = self._poll.poll(0)
                    if ready:
                        return ready
                    if deadline is not None:
                        remaining = deadline - _monotonic()
                        if remaining <= 0:
                            return []
            finally:
                self._polling = False

    class _PollObject(poll):
        __slots__ = ()
        __doc__ = poll.__doc__

        def __new__(cls, *args, **kwargs):
            raise TypeError("cannot create 'select.poll' instances")

    _PollObject.__name__ = _PollObject.__qualname__ = "poll"
    _PollObject.__module__ = "select"


# -- epoll() -------------------------------------------------------------------------------

if _real_epoll is not None:
    _EPOLL_DEFAULT = EPOLLIN | EPOLLPRI | EPOLLOUT

    class epoll:
        """A green epoll object: poll() suspends only the calling green thread.

        Wraps a real ``select.epoll`` (which cannot be subclassed); same
        methods, arguments, results and errors.  It owns its epoll fd, so it
        forgets that fd on the hub when it takes it and when it closes it.
        """

        __slots__ = ("_epoll", "__weakref__")

        def __init__(self, sizehint: int = -1, flags: int = 0) -> None:
            self._epoll = _real_epoll(sizehint, flags)
            _forget(self._epoll.fileno())

        @classmethod
        def fromfd(cls, fd, /) -> "epoll":
            """Create an epoll object from a given control fd."""
            self = cls.__new__(cls)
            self._epoll = _real_epoll.fromfd(fd)
            _forget(self._epoll.fileno())
            return self

        @property
        def closed(self) -> bool:
            """True if the epoll handler is closed."""
            return self._epoll.closed

        def close(self) -> None:
            """Close the epoll control file descriptor; further operations raise ValueError."""
            if not self._epoll.closed:
                _forget(self._epoll.fileno())
            self._epoll.close()

        def fileno(self) -> int:
            """Return the epoll control file descriptor."""
            return self._epoll.fileno()

        def register(self, fd, eventmask=_EPOLL_DEFAULT) -> None:
            """Register a file descriptor with the epoll object."""
            self._epoll.register(fd, eventmask)

        def modify(self, fd, eventmask) -> None:
            """Modify event mask for a registered file descriptor."""
            self._epoll.modify(fd, eventmask)

        def unregister(self, fd) -> None:
            """Remove a registered file descriptor from the epoll object."""
            self._epoll.unregister(fd)

        def poll(self, timeout=None, maxevents=-1) -> list:
            """Wait for events on the epoll fd for at most ``timeout`` seconds (None or negative: forever).

            Returns a list of (fd, events) pairs, as the stdlib's does.
            """
            real = self._epoll
            seconds = _epoll_timeout(timeout, real.poll, maxevents)
            ready = real.poll(0, maxevents)  # also checks closed and maxevents
            if ready or seconds == 0:
                # Events already taken are returned, not polled for again: an
                # edge-triggered or one-shot registration reports them once.
                if _let_others_run() and not ready:
                    ready = real.poll(0, maxevents)
                return ready
            # The epoll fd is ours (forgotten on the hub when taken and when
            # closed), so the cheaper single-fd wait fits: no re-registration.
            wait_fd = _get_hub().wait_fd
            fd = real.fileno()
            deadline = None if seconds is None else _monotonic() + seconds
            remaining = seconds
            while True:
                try:
                    wait_fd(fd, _READ, remaining, _Expired, "")
                except _Expired:
                    return []
                except OSError as exc:
                    if exc.errno != _EBADF:
                        raise  # closed meanwhile: the re-check raises the stdlib's ValueError
                ready = real.poll(0, maxevents)
                if ready:
                    return ready
                if deadline is not None:
                    remaining = deadline - _monotonic()
                    if remaining <= 0:
                        return []

        def __enter__(self) -> "epoll":
            self._epoll.__enter__()  # raises ValueError if closed, as the stdlib does
            return self

        def __exit__(self, *exc_info) -> None:
            self.close()
