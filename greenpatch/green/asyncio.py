"""Green ``asyncio``: every green thread may run its own event loop.

asyncio keeps "the running loop" per OS thread (in the C ``_asyncio`` module
it lives in the thread state), so with green threads a second
``asyncio.run()`` in the same OS thread would see the first one's loop and
refuse to start.  Here the running loop belongs to the green thread:

* ``_get_running_loop``/``_set_running_loop`` keep it on the green thread's
  greenlet (a plain greenlet started inside a green thread sees that green
  thread's loop, as it would share the OS thread's loop without greenpatch).
  ``get_running_loop`` and ``get_event_loop`` are the stdlib's own
  pure-Python versions, which call those two.  They replace the C ones in
  ``asyncio`` and ``asyncio.events``.
* What C code and the interpreter read from the OS thread's state, the
  running loop (``asyncio.Future()`` and ``Task`` without ``loop=``,
  ``current_task()``) and the async-generator hooks a loop installs
  (``sys.set_asyncgen_hooks``), is swapped on every switch between green
  threads by a greenlet trace function, installed only while at least one
  loop runs in that OS thread and chained to any trace function already set.
  Switches into the hub itself are skipped: the hub runs no asyncio code.
* The default policy's per-thread loop (``set_event_loop``/``get_event_loop``)
  is per green thread, as ``threading.local`` is once patched.

The loops wait greenly because asyncio builds each loop's selector from
``selectors.DefaultSelector`` when the loop is created, which is the green
selector once the ``select`` group is patched (whatever the import order).
A loop created before the patch keeps a real selector and blocks its OS thread.
Debug mode's coroutine-origin tracking depth stays per OS thread.
"""

from __future__ import annotations

import sys
from os import getpid as _getpid
from typing import Any

import greenlet as _greenlet
from greenlet import getcurrent as _getcurrent

from greenpatch.hub import Hub as _Hub

__implements__ = ["_get_running_loop", "_set_running_loop", "get_running_loop", "get_event_loop"]

_ATTR = "_greenpatch_running_loop"


class _Running:
    """The running loop of one green thread, and the async-generator hooks its loop installed."""

    __slots__ = ("loop", "pid", "hooks")

    def __init__(self, loop: Any, pid: int, hooks: Any) -> None:
        self.loop = loop
        self.pid = pid
        self.hooks = hooks


def _record_of(glet: Any) -> _Running | None:
    """The record of ``glet``'s green thread: its own, else its parents' up to the hub."""
    while glet is not None:
        record = getattr(glet, _ATTR, None)
        if record is not None:
            return record
        if isinstance(glet, _Hub):
            return None
        glet = glet.parent
    return None


def _get_running_loop() -> Any:
    """Return the running event loop of the calling green thread, or None."""
    record = _record_of(_getcurrent())
    if record is not None and record.pid == _getpid():
        return record.loop
    return None


def _set_running_loop(loop: Any) -> None:
    """Set the running event loop of the calling green thread (event loops call it)."""
    current = _getcurrent()
    swap = _swap_of_this_thread()
    if loop is None:
        if getattr(current, _ATTR, None) is not None:
            delattr(current, _ATTR)
            swap.stopped()
        else:
            _c_set_running_loop(None)
        return
    record = _Running(loop, _getpid(), sys.get_asyncgen_hooks())
    fresh = getattr(current, _ATTR, None) is None
    setattr(current, _ATTR, record)
    swap.started(record, fresh, loop)


# -- the OS thread's state follows the green thread that runs -------------------------

class _ThreadStateSwap:
    """Puts the running green thread's loop and async-generator hooks into its OS thread's state.

    One per OS thread.  ``applied`` is the record whose loop and hooks the
    thread state holds now (None: no loop, and ``base_hooks``).
    """

    def __init__(self) -> None:
        self.running = 0
        self.applied: _Running | None = None
        self.base_hooks: Any = (None, None)
        self.previous: Any = None
        self.installed = False

    def started(self, record: _Running, fresh: bool, loop: Any) -> None:
        if fresh:
            self.running += 1
        if not self.installed:
            # The hooks before this loop set its own: the base for green threads without a loop.
            old = getattr(loop, "_old_agen_hooks", None)
            if old is None:
                old = sys._getframe(2).f_locals.get("old_agen_hooks")
            self.base_hooks = tuple(old) if old is not None else (None, None)
            self.previous = _greenlet.settrace(self.trace)
            self.installed = True
        self.applied = record
        _c_set_running_loop(record.loop)

    def stopped(self) -> None:
        # The loop restores the hooks it found itself, right after this.
        self.running -= 1
        self.applied = None
        _c_set_running_loop(None)
        if self.running == 0 and self.installed and _greenlet.gettrace() == self.trace:
            _greenlet.settrace(self.previous)
            self.previous = None
            self.installed = False

    def trace(self, event: str, args: Any) -> None:
        previous = self.previous
        if previous is not None:
            previous(event, args)
        if event != "switch" and event != "throw":
            return
        target = args[1]
        if isinstance(target, _Hub):
            return
        record = _record_of(target)
        if record is self.applied:
            return
        if record is not None and record.pid != _getpid():
            record = None  # a loop of the parent process, in a forked child
        try:
            if self.applied is None:
                self.base_hooks = tuple(sys.get_asyncgen_hooks())
            if record is None:
                _c_set_running_loop(None)
                sys.set_asyncgen_hooks(*self.base_hooks)
            else:
                _c_set_running_loop(record.loop)
                sys.set_asyncgen_hooks(*record.hooks)
            self.applied = record
        except Exception:  # an exception here would surface in the green thread switched to
            pass


_swaps = None


def _swap_of_this_thread() -> _ThreadStateSwap:
    global _swaps
    if _swaps is None:
        from greenpatch.patcher import original
        _swaps = original("_thread", "_local")()
    swap = getattr(_swaps, "swap", None)
    if swap is None:
        swap = _swaps.swap = _ThreadStateSwap()
    return swap


try:
    from _asyncio import _set_running_loop as _c_set_running_loop
except ImportError:  # a Python without the C accelerator: nothing to keep in the thread state
    def _c_set_running_loop(loop: Any) -> None:
        return None


# -- the stdlib's pure-Python versions, running on the functions above -----------------

def _bind_pure_functions() -> None:
    from asyncio import events

    globals()["get_running_loop"] = events._py_get_running_loop
    globals()["get_event_loop"] = events._py_get_event_loop
    if hasattr(events, "_py__get_event_loop"):  # 3.10-3.11
        globals()["_get_event_loop"] = events._py__get_event_loop


def __getattr__(name: str) -> Any:
    if name in ("get_running_loop", "get_event_loop", "_get_event_loop"):
        _bind_pure_functions()
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __after_patch__(asyncio: Any) -> None:
    """Swap the same names in ``asyncio.events`` and make the default policy's loop per green thread."""
    from asyncio import events

    from greenpatch import patcher
    from greenpatch.green import _thread as _green_thread

    _bind_pure_functions()
    names = ["_get_running_loop", "_set_running_loop", "get_running_loop", "get_event_loop"]
    if hasattr(events, "_py__get_event_loop"):
        names.append("_get_event_loop")
    for name in names:
        patcher.record_original("asyncio.events", name, getattr(events, name))
        setattr(events, name, globals()[name])
        if name in asyncio.__dict__ and name != "_get_event_loop":
            setattr(asyncio, name, globals()[name])

    policy_cls = events.BaseDefaultEventLoopPolicy
    if not issubclass(policy_cls._Local, _green_thread._local):
        # asyncio was imported before threading was patched: its per-thread
        # loop would be shared by every green thread of the OS thread.
        class _Local(_green_thread._local):
            _loop = None
            _set_called = False

        old_local_cls = policy_cls._Local
        policy_cls._Local = _Local
        policy = events._event_loop_policy
        if isinstance(policy, policy_cls) and isinstance(policy._local, old_local_cls):
            new = _Local()
            new._loop = policy._local._loop
            new._set_called = policy._local._set_called
            policy._local = new
