"""Readiness backends behind one small interface.

A poller knows which fds the hub watches and reports readiness as ``(fd,
events)`` pairs.  ``events`` is a bit mask in epoll's bit space whatever the
backend, so the epoll backend hands the kernel's list over untouched: a
waiter for reading is woken when ``events & WAKES_READERS``, one for writing
when ``events & WAKES_WRITERS``, and the hub keeps the ``READ``, ``WRITE``
and ``HANGUP`` bits below as a per-fd readiness hint.  Two backends:

* ``EpollPoller`` (Linux): each fd is registered once, edge-triggered, for both
  directions, and stays registered until the hub forgets it.  A wait therefore
  costs no ``epoll_ctl`` at all; the price is that an edge which arrives while
  nobody waits is dropped, which is harmless because every green operation
  tries the real syscall before it waits.
* ``SelectPoller`` (anywhere): level-triggered ``select()`` over the fds that
  currently have waiters; the fallback where epoll does not exist.

A kqueue backend fits the same four methods, translating its filters into
these bits.
"""

from __future__ import annotations

import errno
import select
from typing import Callable, Iterable, Protocol

# Bound now, before any patching: after monkey_patch() select.epoll is green.
_real_epoll = getattr(select, "epoll", None)
_real_select = select.select

# epoll's values (Linux's EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLERR, EPOLLHUP,
# EPOLLRDHUP), spelled out so every backend and platform shares them.
READ = 0x001
WRITE = 0x004
_PRIORITY = 0x002
_ERROR = 0x008
_HUP = 0x010
_READ_HUP = 0x2000
HANGUP = _ERROR | _HUP | _READ_HUP  # the peer hung up or the fd has an error
# Errors and hang-ups wake both directions: the retried syscall reports them.
WAKES_READERS = READ | _PRIORITY | HANGUP
WAKES_WRITERS = WRITE | _ERROR | _HUP

_EPOLL_FLAGS = 0
if _real_epoll is not None:
    assert (select.EPOLLIN, select.EPOLLOUT, select.EPOLLPRI, select.EPOLLERR, select.EPOLLHUP,
            select.EPOLLRDHUP) == (READ, WRITE, _PRIORITY, _ERROR, _HUP, _READ_HUP)
    _EPOLL_FLAGS = READ | WRITE | _PRIORITY | _READ_HUP | select.EPOLLET


class Poller(Protocol):
    def register(self, fd: int) -> bool:
        """Start watching fd; False if the fd cannot be polled (a regular file)."""

    def unregister(self, fd: int) -> None:
        """Stop watching fd; silent if it is already gone."""

    def poll(self, timeout: float) -> Iterable[tuple[int, int]]:
        """Block up to timeout seconds (-1: forever); return (fd, events) pairs in epoll's bits."""

    def close(self) -> None: ...


class EpollPoller:
    """Edge-triggered epoll with one registration per fd for its whole life."""

    def __init__(self) -> None:
        self._epoll = _real_epoll()

    def register(self, fd: int) -> bool:
        try:
            self._epoll.register(fd, _EPOLL_FLAGS)
        except FileExistsError:
            # A stale registration survived a close we did not see (the file
            # description lives on in a dup); take the fd over for its new owner.
            self._epoll.modify(fd, _EPOLL_FLAGS)
        except PermissionError:
            return False
        return True

    def unregister(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def poll(self, timeout: float) -> Iterable[tuple[int, int]]:
        return self._epoll.poll(timeout)

    def close(self) -> None:
        self._epoll.close()


class SelectPoller:
    """Level-triggered select() over the fds that have waiters right now.

    ``interest`` returns the hub's ``{fd: FdWatch}`` table; only fds with
    readers or writers are passed to select(), so an idle readable fd does not
    spin the loop.
    """

    def __init__(self, interest: Callable[[], dict]) -> None:
        self._interest = interest

    def register(self, fd: int) -> bool:
        try:
            _real_select([fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return True

    def unregister(self, fd: int) -> None:
        pass

    def poll(self, timeout: float) -> Iterable[tuple[int, int]]:
        rlist = []
        wlist = []
        for fd, watch in self._interest().items():
            if watch.readers:
                rlist.append(fd)
            if watch.writers:
                wlist.append(fd)
        try:
            r, w, x = _real_select(rlist, wlist, rlist, None if timeout < 0 else timeout)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            # One of the fds was closed behind our back: wake everyone, they retry.
            return [(fd, READ) for fd in rlist] + [(fd, WRITE) for fd in wlist]
        ready: dict[int, int] = {}
        for fd in r:
            ready[fd] = READ
        for fd in x:
            ready[fd] = ready.get(fd, 0) | _PRIORITY
        for fd in w:
            ready[fd] = ready.get(fd, 0) | WRITE
        return ready.items()

    def close(self) -> None:
        pass


def default_poller(interest: Callable[[], dict]) -> Poller:
    """The best backend this platform has."""
    if _real_epoll is not None:
        return EpollPoller()
    return SelectPoller(interest)
