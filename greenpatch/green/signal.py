"""Green twin of ``signal``: Python handlers run as the main green thread, which may wait in them.

CPython runs a signal handler in the main thread, between two bytecodes of
whatever it was doing, and the handler may block (``server.shutdown()`` in a
SIGTERM handler, a ``time.sleep``).  Under green threads the signal arrives
in whichever greenlet runs at that moment, most often the hub idling in its
poller, where waiting is impossible.  ``signal.signal`` therefore installs a
small wrapper that hands the handler to ``Hub.run_in_main``: it runs on the
main green thread's stack where that thread waits, which then waits on (a
handler that returns does not cut a ``sleep`` short, as PEP 475 says), and an
exception from it is raised there.  ``getsignal`` and ``signal``'s return
value give back the handler as it was passed.

Handlers installed before the patch are wrapped by the patch.  Python's
default SIGINT handler is left as it is: the hub already routes Ctrl-C to
the main green thread (``greenpatch.hub``).
"""

from __future__ import annotations

import signal as _signal
from signal import *  # noqa: F401,F403  (the twin exposes every name of the original)
from typing import Any, Callable

from greenpatch.hub import _route_sigint, peek_hub

__implements__ = ["signal", "getsignal"]

_real_signal = _signal.signal
_real_getsignal = _signal.getsignal


class _MainThreadHandler:
    """A Python handler as installed under the patch: called, it runs in the main green thread."""

    __slots__ = ("handler",)

    def __init__(self, handler: Callable) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: Any) -> Any:
        hub = peek_hub()
        if hub is None:
            return self.handler(signum, frame)
        return hub.run_in_main(self.handler, signum, frame)

    def __repr__(self) -> str:
        return f"<greenpatch main-thread signal handler for {self.handler!r}>"


def _as_installed(handler: Any) -> Any:
    if callable(handler) and handler is not _signal.default_int_handler and not isinstance(handler, _MainThreadHandler):
        return _MainThreadHandler(handler)
    return handler


def _as_given(handler: Any) -> Any:
    if isinstance(handler, _MainThreadHandler):
        return handler.handler
    if handler is _route_sigint:
        return _signal.default_int_handler
    return handler


def signal(signalnum: int, handler: Any, /) -> Any:
    return _as_given(_real_signal(signalnum, _as_installed(handler)))


def getsignal(signalnum: int, /) -> Any:
    return _as_given(_real_getsignal(signalnum))


for _green, _real in ((signal, _real_signal), (getsignal, _real_getsignal)):
    _green.__doc__ = _real.__doc__
    _green.__module__ = "signal"  # they stand in the signal module, as the C ones do
del _green, _real


def __after_patch__(module: Any) -> None:
    """Wrap the Python handlers installed before the patch."""
    for signum in _signal.valid_signals():
        try:
            handler = _real_getsignal(signum)
        except (OSError, ValueError):
            continue
        wrapped = _as_installed(handler)
        if wrapped is not handler:
            try:
                _real_signal(signum, wrapped)
            except (OSError, ValueError):  # not the main thread, or a signal Python cannot catch
                pass
