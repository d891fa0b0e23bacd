"""Green ``multiprocessing.connection``: Connection reads, writes and ``wait()`` wait greenly.

The stdlib binds ``os.read``/``os.write`` into ``Connection._recv``/``_send``
as default arguments and ``selectors.PollSelector`` into ``_WaitSelector``
when it is imported, so patching ``os`` and ``selectors`` does not reach a
module imported before the patch.  ``__after_patch__`` gives
``Connection._recv``/``_send`` (the stdlib's code) green defaults, which wait
on the hub for blocking and non-blocking fds alike (a socket's fd is
non-blocking under greenpatch), and points ``_WaitSelector`` at the green
selector; ``wait()``, ``Connection.poll()``, ``Listener``/``Client`` and
everything built on them (queues, pools, ``concurrent.futures``' process pool)
follow.  ``Pipe(duplex=True)`` gives both ends back in blocking mode, as the
stdlib's do, so a child process that is not patched can use them.
"""

from __future__ import annotations

import multiprocessing.connection as _stdconnection
import os as _os
import types as _types
from typing import Any

from greenpatch.green import os as _green_os
from greenpatch.green import selectors as _green_selectors
from greenpatch.greenthread import sleep as _sleep
from greenpatch.hub import get_hub as _get_hub

__implements__ = ["Pipe"] if hasattr(_stdconnection, "Pipe") and hasattr(_os, "set_blocking") else []

if hasattr(_green_selectors, "PollSelector"):
    from greenpatch.green import select as _green_select

    _WaitBase = _green_selectors.PollSelector
else:
    _WaitBase = _green_selectors.SelectSelector


class _WaitSelector(_WaitBase):  # type: ignore[valid-type,misc]
    """The selector of ``wait()``: green, and it lets the other green threads run first.

    With real threads a loop around ``wait()`` on an fd that another thread
    is about to read (the pool's worker handler watches the result pipe that
    its result handler reads) spins until the OS preempts it; a green thread
    is never preempted, so each call yields once before it selects.
    """

    if _WaitBase is not _green_selectors.SelectSelector:
        _selector_cls = staticmethod(_green_select.poll)  # the green poll may be a plain function

    def select(self, timeout: float | None = None) -> list:
        _sleep(0)
        return super().select(timeout)


def _read(fd: int, size: int) -> bytes:
    """``os.read`` that waits greenly, whatever the fd's blocking mode."""
    while True:
        try:
            return _green_os.read(fd, size)
        except BlockingIOError:
            _get_hub().wait_fds((fd,), ())


def _write(fd: int, data: Any) -> int:
    """``os.write`` that waits greenly, whatever the fd's blocking mode."""
    while True:
        try:
            return _green_os.write(fd, data)
        except BlockingIOError:
            _get_hub().wait_fds((), (fd,))


def _with_defaults(func: _types.FunctionType, defaults: tuple) -> _types.FunctionType:
    green = _types.FunctionType(func.__code__, func.__globals__, func.__name__, defaults, func.__closure__)
    green.__kwdefaults__ = func.__kwdefaults__
    green.__qualname__ = func.__qualname__
    green.__doc__ = func.__doc__
    green.__module__ = func.__module__
    green.__dict__["_greenpatch"] = True
    return green


if __implements__:
    _std_pipe = _stdconnection.Pipe

    def Pipe(duplex: bool = True) -> tuple:
        c1, c2 = _std_pipe(duplex)
        if duplex:
            for conn in (c1, c2):
                _os.set_blocking(conn.fileno(), True)  # as the stdlib's socketpair ends are
        return c1, c2

    Pipe.__doc__ = _std_pipe.__doc__


def __after_patch__(module: Any) -> None:
    """Green defaults for ``Connection._recv``/``_send`` and the green selector for ``wait()``."""
    connection = getattr(module, "Connection", None)
    if connection is not None and "_recv" in vars(connection) and "_send" in vars(connection):
        for name, default in (("_recv", _read), ("_send", _write)):
            func = vars(connection)[name]
            if getattr(func, "_greenpatch", False):
                continue
            setattr(connection, name, _with_defaults(func, (default,)))
    if hasattr(module, "_WaitSelector"):
        # Not recorded as an original: imported after the patch, it already
        # holds the green PollSelector, which other modules must keep.
        module._WaitSelector = _WaitSelector
