"""Green ``threading``: CPython's own threading.py, made green underneath.

``threading`` keeps its code (Thread, Timer, Barrier, Semaphore, excepthook,
shutdown...) and runs it on green threads because the names it took from
``_thread`` when it was imported are swapped for those of
``greenpatch.green._thread``.  Two classes are replaced outright because the
native ones are much faster and keep the public behaviour: ``Condition`` and
``Event`` (the private ``Event._cond`` does not exist).

``__after_patch__`` fixes what an earlier ``import threading`` (or logging,
or concurrent.futures) created with real locks, and warns precisely about
what it cannot fix.

The names defined here are green on their own (``RLock`` is the green class
itself); every other public name of ``threading`` is looked up in the real
module, which is green once patched.
"""

from __future__ import annotations

import sys
import warnings
import weakref
from typing import Any

from greenlet import getcurrent

from greenpatch.event import Event
from greenpatch.green import _thread as _green_thread
from greenpatch.locks import Condition, Lock, RLock, get_ident
from greenpatch.patcher import PatchWarning, original

_PY313 = sys.version_info >= (3, 13)

_allocate_lock = Lock
_CRLock = RLock
local = _green_thread._local

if _PY313:
    _LockType = Lock
    _start_joinable_thread = _green_thread.start_joinable_thread
    _ThreadHandle = _green_thread._ThreadHandle
    _make_thread_handle = _green_thread._make_thread_handle
    _thread_shutdown = _green_thread._shutdown
else:
    _start_new_thread = _green_thread.start_new_thread
    _set_sentinel = _green_thread._set_sentinel

__implements__ = [
    "_allocate_lock", "Lock", "_CRLock", "get_ident", "local", "Condition", "Event",
    "_start_new_thread", "_set_sentinel",                          # 3.10-3.12
    "_LockType", "_start_joinable_thread", "_ThreadHandle",         # 3.13
    "_make_thread_handle", "_thread_shutdown",
]

_REAL_LOCK_TYPES = (type(original("_thread", "allocate_lock")()), original("_thread", "RLock"))


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import threading
    return getattr(threading, name)


def __dir__() -> list[str]:
    import threading
    return sorted(set(globals()) | {name for name in dir(threading) if not name.startswith("_")})


# -- fix-ups after the names are swapped ----------------------------------------------

def __after_patch__(threading: Any) -> None:
    """Make green what threading, logging and concurrent.futures built before the patch."""
    unfixable: list[str] = []
    _fix_threading_internals(threading, unfixable)
    if not _PY313:
        threading._DummyThread = _forgetful_dummy_class(threading._DummyThread, threading)
    logging = sys.modules.get("logging")
    if logging is not None:
        _fix_logging(logging)
    unfixable += _replace_module_locks()
    if unfixable:
        warnings.warn(
            "greenpatch: these were created before monkey_patch() and stay real (blocking) OS-thread "
            "objects: " + "; ".join(unfixable) + ". Patch earlier (python -m greenpatch, or "
            "monkey_patch() before other imports).", PatchWarning, stacklevel=4)


def _fix_threading_internals(threading: Any, unfixable: list[str]) -> None:
    if isinstance(threading._active_limbo_lock, _REAL_LOCK_TYPES):
        threading._active_limbo_lock = RLock()
    main = threading._main_thread
    if _PY313:
        if isinstance(getattr(threading, "_thread_local_info", None), original("_thread", "_local")):
            threading._thread_local_info = local()
        handle = main._handle
        if not isinstance(handle, _green_thread._ThreadHandle) and not handle.is_done():
            main._handle = _green_thread._make_thread_handle(main._ident)
    else:
        if isinstance(threading._shutdown_locks_lock, _REAL_LOCK_TYPES):
            threading._shutdown_locks_lock = Lock()
        old = main._tstate_lock
        if isinstance(old, _REAL_LOCK_TYPES) and old.locked():
            # Joining the main thread from a green thread must park, not block.
            new = Lock()
            new.acquire()
            main._tstate_lock = new
            with threading._shutdown_locks_lock:
                threading._shutdown_locks.discard(old)
                threading._shutdown_locks.add(new)
    for thread in list(threading._active.values()):
        if thread is not main and not isinstance(thread, threading._DummyThread) and thread.is_alive():
            unfixable.append(f"{thread!r} is a real OS thread (joining it blocks every green thread)")


def _forgetful_dummy_class(base: type, threading: Any) -> type:
    """A _DummyThread that leaves threading._active when its greenlet goes away (3.10-3.12).

    ``current_thread()`` in a greenlet threading did not start makes a dummy
    thread keyed by that greenlet's ident.  For a thread started through
    ``_thread`` it stays in ``_active`` for ever, as CPython 3.10-3.12 does for
    real threads; but greenlets spawned per request (greenpatch.spawn) that
    log would fill ``_active`` without bound, so those leave when their
    greenlet is collected.  (3.13's own ``_DeleteDummyThreadOnDel`` does that
    for every dummy through a thread-local, which is green after the patch.)
    """
    if getattr(base, "_greenpatch_forgetful", False):
        return base

    class _DummyThread(base):  # type: ignore[valid-type,misc]
        _greenpatch_forgetful = True

        def __init__(self) -> None:
            super().__init__()
            current = getcurrent()
            if type(current) is not _green_thread._ThreadGreenlet:
                self._greenpatch_glet_ref = weakref.ref(
                    current, _forget_dummy(weakref.ref(self), self._ident, threading._active))

    _DummyThread.__qualname__ = base.__qualname__
    _DummyThread.__module__ = base.__module__
    return _DummyThread


def _forget_dummy(thread_ref: Any, ident: int, active: dict) -> Any:
    def forget(_: Any) -> None:
        thread = thread_ref()
        if thread is not None and active.get(ident) is thread:
            active.pop(ident, None)  # no lock: this may run in the hub, where a green lock cannot wait
    return forget


def _fix_logging(logging: Any) -> None:
    if isinstance(logging._lock, _REAL_LOCK_TYPES):
        logging._lock = RLock()
    for ref in list(logging._handlerList):
        handler = ref()
        if handler is not None and isinstance(getattr(handler, "lock", None), _REAL_LOCK_TYPES):
            handler.createLock()


def _replace_module_locks() -> list[str]:
    """Make module-level real locks green in the standard library; name those elsewhere.

    Standard-library modules look their module locks up at call time (checked
    for asyncio, concurrent.futures, sysconfig, tempfile, webbrowser), so a
    free one is swapped for a green lock of the same kind.  (Fork handlers
    that captured an old lock's bound methods keep a lock nobody else takes,
    which is harmless: concurrent.futures' ``_global_shutdown_lock`` is held
    across ``Thread.start()``, which switches, so it must be green.)  A held
    lock, or one in another package, is only named: its users may have
    captured it.
    """
    unfixable = []
    for modname, module in list(sys.modules.items()):
        if module is None or modname.startswith("greenpatch"):
            continue
        namespace = getattr(module, "__dict__", None) or {}
        stdlib = modname.partition(".")[0] in sys.stdlib_module_names
        for attr, value in list(namespace.items()):
            if not isinstance(value, _REAL_LOCK_TYPES):
                continue
            reentrant = not isinstance(value, _REAL_LOCK_TYPES[0])
            if stdlib and _is_free(value):
                setattr(module, attr, RLock() if reentrant else Lock())
            else:
                kind = "RLock" if reentrant else "Lock"
                unfixable.append(f"{modname}.{attr} (a real {kind})")
    return sorted(unfixable)


def _is_free(lock: Any) -> bool:
    """True if nobody, the calling thread included, holds the real ``lock``."""
    is_owned = getattr(lock, "_is_owned", None)
    if is_owned is not None and is_owned():
        return False
    if lock.acquire(False):
        lock.release()
        return True
    return False
