"""Event: a green ``threading.Event``.

After ``monkey_patch()`` it is ``threading.Event``; without patching, use it
from green threads started with ``greenpatch.spawn``.

Invariant: a ``wait()`` in progress when ``set()`` is called returns True even
if ``clear()`` follows before the waiter runs (as with ``threading.Event``).
Each batch of waiters shares a ``_Pulse``; ``set()`` fires the current one
and ``clear()`` starts a new one, so a pulse (set then clear) is never lost.
It needs no lock, even across OS threads: a waiter reads the pulse before the
flag, and ``park`` lists it before testing the pulse.
"""

from __future__ import annotations

import warnings

from greenpatch.hub import park, wake_all

__all__ = ["Event"]


class _Pulse(list):
    """The green threads waiting for one ``set()`` (the list ``park`` uses), and whether it came."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        self.fired = False

    def __call__(self) -> bool:
        return self.fired

    def __eq__(self, other: object) -> bool:
        return self is other

    def __ne__(self, other: object) -> bool:
        return self is not other


class Event:
    """A flag green threads can wait for: ``set()`` wakes every waiter, ``clear()`` resets it."""

    def __init__(self) -> None:
        self._flag = False
        self._pulse = _Pulse()

    def __repr__(self) -> str:
        # threading.Event's format; this class is threading.Event once patched.
        cls = type(self)
        name = "threading.Event" if cls is Event else f"{cls.__module__}.{cls.__qualname__}"
        status = "set" if self._flag else "unset"
        return f"<{name} at {id(self):#x}: {status}>"

    def _at_fork_reinit(self) -> None:
        self._pulse = _Pulse()

    def is_set(self) -> bool:
        """True once ``set()`` was called and ``clear()`` was not called since."""
        return self._flag

    def isSet(self) -> bool:
        """Deprecated alias of ``is_set``."""
        warnings.warn("isSet() is deprecated, use is_set() instead", DeprecationWarning, stacklevel=2)
        return self._flag

    def set(self) -> None:
        """Set the flag and wake every green thread waiting for it."""
        self._flag = True
        pulse = self._pulse
        pulse.fired = True
        if pulse:
            wake_all(pulse)

    def clear(self) -> None:
        """Reset the flag; later ``wait()`` calls block until the next ``set()``."""
        self._flag = False
        if self._pulse.fired:
            self._pulse = _Pulse()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set or ``timeout`` seconds pass; True unless it timed out."""
        pulse = self._pulse
        if self._flag:
            return True
        return park(pulse, pulse, timeout)
