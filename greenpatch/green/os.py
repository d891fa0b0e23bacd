"""Green twin of ``os``: ``read``/``write`` on pipes, FIFOs, ttys and sockets, and ``waitpid``/``wait``, wait on the hub.

Every public name of ``os`` is re-exported unchanged; ``__implements__`` lists
the few that are replaced.

* ``read``/``write``: a regular file (or a directory or block device) goes
  straight to the real call, as does an fd in non-blocking mode (the caller
  asked for EAGAIN and gets it).  A blocking fd keeps its O_NONBLOCK flag as it
  is (another process may share the pipe); instead the call asks the kernel,
  with a zero-timeout ``poll``, whether the fd is ready, waits on the hub while
  it is not, and then makes the real call, which no longer blocks.  A write to
  a blocking pipe, FIFO or socket is split into chunks of at most
  ``PIPE_BUF`` bytes, each made after the fd polled writable, so no chunk can
  block the OS thread; the call still returns only when everything is written,
  like the real blocking write.  A write larger than ``PIPE_BUF`` is not
  atomic (POSIX does not promise that either): concurrent writers to one pipe
  may interleave at chunk boundaries.
* ``waitpid(pid, options)`` with ``pid > 0`` waits for the child's pidfd
  (``os.pidfd_open``, Linux 5.3+) to become readable, then makes the real
  call with the caller's options.  Where pidfd is unavailable, for
  ``pid <= 0`` (any child, a process group) and ``os.wait()``, and with
  ``WUNTRACED``/``WCONTINUED`` (which pidfd does not report), it polls the
  real call with ``WNOHANG`` between green sleeps that back off from 1 ms to
  50 ms.  ``WNOHANG`` calls go straight to the real function.

Only the calling green thread waits; errors are the real calls' own.  The
file objects of ``greenpatch.green.io`` wait through the same two helpers,
``_wait_readable`` and ``_write_in_chunks``.
"""

from __future__ import annotations

import os as _os
import select as _select
import stat as _stat
from fcntl import F_GETFL as _F_GETFL
from fcntl import fcntl as _fcntl
from os import *  # noqa: F401,F403  (the twin exposes every public name of the original)

from greenpatch.hub import READ as _READ
from greenpatch.hub import WRITE as _WRITE
from greenpatch.hub import get_hub as _get_hub
from greenpatch.patcher import original as _original

globals().update({name: value for name, value in vars(_os).items()
                  if not name.startswith("_") and name not in globals()})

__implements__ = ["read", "write", "waitpid", "wait"]

_real_read = _original("os", "read")
_real_write = _original("os", "write")
_real_waitpid = _original("os", "waitpid")
_real_fstat = _os.fstat
_real_get_blocking = _os.get_blocking
_real_close = _os.close
_pidfd_open = getattr(_os, "pidfd_open", None)
_poll = _original("select", "poll")
_S_ISREG = _stat.S_ISREG
_S_ISDIR = _stat.S_ISDIR
_S_ISBLK = _stat.S_ISBLK
_POLLIN = _select.POLLIN | _select.POLLPRI | _select.POLLHUP | _select.POLLERR | _select.POLLNVAL
_POLLOUT = _select.POLLOUT | _select.POLLHUP | _select.POLLERR | _select.POLLNVAL
_PIPE_BUF = getattr(_select, "PIPE_BUF", 512)
_WNOHANG = _os.WNOHANG
_NOT_BY_PIDFD = getattr(_os, "WUNTRACED", 0) | getattr(_os, "WCONTINUED", 0)


def _needs_wait(fd: int) -> bool:
    """True for a blocking fd that poll() can tell about (pipe, FIFO, socket, tty)."""
    mode = _real_fstat(fd).st_mode
    if _S_ISREG(mode) or _S_ISDIR(mode) or _S_ISBLK(mode):
        return False  # always "ready"; the real call is the best we can do
    return _real_get_blocking(fd)


def _wait_ready(fd: int, events: int, direction: int) -> None:
    """Return once ``fd`` polls ready for ``events``; meanwhile only this green thread waits."""
    while True:
        poller = _poll()
        poller.register(fd, events)
        if poller.poll(0):
            return
        # wait_fds re-arms the hub's registration each time, so an fd number
        # reused since we last waited on it (os.close tells the hub nothing)
        # cannot hang on a stale registration.
        if direction == _READ:
            _get_hub().wait_fds((fd,), ())
        else:
            _get_hub().wait_fds((), (fd,))


def _wait_readable(fd: int) -> None:
    """Return once the blocking pipe, FIFO, tty or socket ``fd`` polls readable (green).

    The one waiting path shared by ``read`` and the green file objects of
    ``greenpatch.green.io``: the real read made right after it cannot block.
    """
    _wait_ready(fd, _POLLIN, _READ)


def _write_in_chunks(fd: int, data, write_chunk) -> int:
    """Write all of ``data`` to the blocking pipe, FIFO, tty or socket ``fd``; return its length.

    Each chunk of at most ``PIPE_BUF`` bytes is passed to ``write_chunk`` (the
    real ``os.write`` or a real ``FileIO.write``) after ``fd`` polled
    writable, so no chunk blocks the OS thread.
    """
    view = memoryview(data).cast("B")
    total = len(view)
    if total == 0:
        return write_chunk(data)
    done = 0
    with view:
        while done < total:
            _wait_ready(fd, _POLLOUT, _WRITE)
            done += write_chunk(view[done:done + _PIPE_BUF])
    return done


def _read_only(fd: int) -> bool:
    """True if ``fd`` is not open for writing: it would never poll writable."""
    return _fcntl(fd, _F_GETFL) & _os.O_ACCMODE == _os.O_RDONLY


def read(fd: int, length: int, /) -> bytes:
    if _needs_wait(fd):
        _wait_readable(fd)
    return _real_read(fd, length)


def write(fd: int, data, /) -> int:
    mode = _real_fstat(fd).st_mode
    if _S_ISREG(mode) or _S_ISDIR(mode) or _S_ISBLK(mode) or not _real_get_blocking(fd) or _read_only(fd):
        return _real_write(fd, data)  # (on a read-only fd, such as a pipe's read end, it fails at once: EBADF)
    return _write_in_chunks(fd, data, lambda chunk: _real_write(fd, chunk))


def waitpid(pid: int, options: int, /) -> tuple[int, int]:
    if options & _WNOHANG:
        return _real_waitpid(pid, options)
    if pid > 0 and _pidfd_open is not None and not options & _NOT_BY_PIDFD:
        try:
            pidfd = _pidfd_open(pid)
        except OSError:
            pidfd = -1  # no such process (the real call gives the error), or no pidfd support
        if pidfd >= 0:
            hub = _get_hub()
            try:
                hub.wait_fds((pidfd,), ())
            finally:
                hub.forget_fd(pidfd)
                _real_close(pidfd)
            return _real_waitpid(pid, options)
    return _poll_waitpid(pid, options)


def _poll_waitpid(pid: int, options: int) -> tuple[int, int]:
    """The fallback: the real call with WNOHANG between backing-off green sleeps."""
    from greenpatch.greenthread import sleep

    delay = 0.001
    while True:
        result = _real_waitpid(pid, options | _WNOHANG)
        if result != (0, 0):
            return result
        sleep(delay)
        delay = min(delay * 2, 0.05)


def wait() -> tuple[int, int]:
    return waitpid(-1, 0)


for _name in __implements__:
    globals()[_name].__doc__ = getattr(_os, _name).__doc__
del _name
