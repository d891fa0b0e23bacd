"""Readiness backends behind one small interface.

A poller knows which fds the hub watches and reports readiness as ``(fd, mask)``
pairs, where ``mask`` uses the ``READ``/``WRITE`` bits below.  Two backends:

* ``EpollPoller`` (Linux): each fd is registered once, edge-triggered, for both
  directions, and stays registered until the hub forgets it.  A wait therefore
  costs no ``epoll_ctl`` at all; the price is that an edge which arrives while
  nobody waits is dropped, which is harmless because every green operation
  tries the real syscall before it waits.
* ``SelectPoller`` (anywhere): level-triggered ``select()`` over the fds that
  currently have waiters; the fallback where epoll does not exist.

A kqueue backend fits the same three methods.
"""

from __future__ import annotations

import errno
import select
from typing import Callable, Iterable, Protocol

# Bound now, before any patching: after monkey_patch() select.epoll is green.
_real_epoll = getattr(select, "epoll", None)
_real_select = select.select

READ = 1
WRITE = 4
HANGUP = 8  # the peer hung up or the fd has an error: reported with READ and WRITE

_EPOLL_FLAGS = 0
if hasattr(select, "epoll"):
    _EPOLL_FLAGS = select.EPOLLIN | select.EPOLLPRI | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
    # Errors and hang-ups wake both directions: the retried syscall reports them.
    _EPOLL_READ = select.EPOLLIN | select.EPOLLPRI | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
    _EPOLL_WRITE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
    _EPOLL_HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR


class Poller(Protocol):
    def register(self, fd: int) -> bool:
        """Start watching fd; False if the fd cannot be polled (a regular file)."""

    def unregister(self, fd: int) -> None:
        """Stop watching fd; silent if it is already gone."""

    def poll(self, timeout: float) -> Iterable[tuple[int, int]]:
        """Block up to timeout seconds (-1: forever); return (fd, READ|WRITE mask) pairs."""

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
        ready = []
        for fd, events in self._epoll.poll(timeout):
            mask = 0
            if events & _EPOLL_READ:
                mask = READ
            if events & _EPOLL_WRITE:
                mask |= WRITE
            if events & _EPOLL_HANGUP:
                mask |= HANGUP
            ready.append((fd, mask))
        return ready

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
            ready[fd] = ready.get(fd, 0) | READ | WRITE
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
