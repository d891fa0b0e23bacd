"""The offload table: known-blocking C calls that run in real OS threads (``greenpatch.tpool``).

A C function that blocks (a lock wait, a sleep inside a library, a network
call in a C client) stops the one OS thread and with it every green thread.
Each entry of the table names such a call; while it runs in a worker thread
only the calling green thread waits.  The entries are data:

* ``TABLE`` holds the built-in entries.  sqlite3's are applied by
  ``greenpatch.green.sqlite3`` (the ``sqlite3`` patch group): its types are C
  types, which cannot be changed in place, so ``sqlite3.connect`` returns
  subclasses whose listed methods are wrapped.
* ``offload("module.function")`` or ``offload("module.Class.method")`` adds an
  entry of your own, wrapped in place with ``wrapt`` (a Python class's
  method, or a module attribute whatever it is, a C function included).

``serialize`` says how calls may overlap: ``False``, side by side in the
shared pool; ``True``, one at a time and in order per object (per function
for plain functions), on that object's own worker thread, which also keeps
callers that wait a long time (sqlite's busy handler) from starving the
shared pool; a string names the attribute whose object is the unit instead
(a cursor's calls are serialized with its ``connection``'s).

Inside a worker an offloaded call made by an offloaded call runs at once
(a C ``__exit__`` that calls ``commit``), and during interpreter shutdown
calls run where they are.  Python callbacks that a C call makes (sqlite
functions, converters, row factories) run in the worker thread.
"""

from __future__ import annotations

import importlib
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from greenpatch import tpool as _tpool
from greenpatch.patcher import original as _original

__all__ = ["Offload", "TABLE", "offload", "offloaded", "restore", "call", "in_worker"]


@dataclass(frozen=True)
class Offload:
    """One known-blocking call: ``target`` is ``"module.function"`` or ``"module.Class.method"``."""

    target: str
    serialize: bool | str = False


_SQLITE_CONNECTION = ("execute", "executemany", "executescript", "commit", "rollback", "close",
                      "backup", "blobopen", "serialize", "deserialize", "__exit__")
_SQLITE_CURSOR = ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall",
                  "__next__", "close")

TABLE: tuple[Offload, ...] = (
    # sqlite3.connect opens the file (and may wait for it); the busy handler
    # sleeps in C inside any statement, commit or rollback that meets a lock.
    Offload("sqlite3.connect"),
    *(Offload(f"sqlite3.Connection.{name}", serialize=True) for name in _SQLITE_CONNECTION),
    *(Offload(f"sqlite3.Cursor.{name}", serialize="connection") for name in _SQLITE_CURSOR),
)

_real_local = _original("_thread", "_local")
_state = _real_local()  # .inside: this real thread is running an offloaded call
_wrapped: dict[str, tuple[Any, str, Any, Offload]] = {}  # target -> (owner, name, original, entry)
_pools: "weakref.WeakKeyDictionary[Any, _tpool.ThreadPool]" = weakref.WeakKeyDictionary()
_serial_pool: _tpool.ThreadPool | None = None
_spare: list[_tpool.ThreadPool] = []  # one-thread pools of collected objects, for reuse
_MAX_SPARE = 64
_generation = 0  # bumped in a forked child, where the pools' threads are gone
_POOL_ATTR = "_greenpatch_pool"


def call(entry: Offload, wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Run ``wrapped(*args, **kwargs)`` as ``entry`` says (the body of every offload wrapper)."""
    if getattr(_state, "inside", False) or sys.is_finalizing():
        return wrapped(*args, **kwargs)
    if entry.serialize:
        unit = instance if entry.serialize is True else getattr(instance, entry.serialize, None)
        pool = _pool_of(unit if unit is not None else wrapped)
    else:
        pool = _tpool.default_pool()
    return pool.execute(_in_worker, wrapped, args, kwargs)


def in_worker() -> bool:
    """True while this real thread runs an offloaded call."""
    return getattr(_state, "inside", False)


def _in_worker(wrapped: Callable, args: tuple, kwargs: dict) -> Any:
    _state.inside = True
    try:
        return wrapped(*args, **kwargs)
    finally:
        _state.inside = False


def _pool_of(unit: Any) -> _tpool.ThreadPool:
    """The one-thread pool that runs ``unit``'s calls in order (a new one after fork: threads do not survive it).

    When ``unit`` is garbage collected its pool goes back to a spare list for
    the next object, so a program that opens and drops connections keeps
    about as many threads as it has live connections (idle ones retire).
    """
    namespace = getattr(unit, "__dict__", None)
    if type(namespace) is dict:
        found = namespace.get(_POOL_ATTR)
        if found is None or found[0] != _generation:
            pool = _spare.pop() if _spare else _tpool.ThreadPool(1)
            found = namespace[_POOL_ATTR] = (_generation, pool)
            try:
                weakref.finalize(unit, _give_back, pool, _generation)
            except TypeError:
                pass  # no weak references: the pool retires with its idle thread
        return found[1]
    try:
        pool = _pools.get(unit)
        if pool is None:
            pool = _pools[unit] = _tpool.ThreadPool(1)
        return pool
    except TypeError:  # neither a __dict__ nor weak references: one pool for all such objects
        return _shared_serial_pool()


def _give_back(pool: _tpool.ThreadPool, generation: int) -> None:
    if generation == _generation and len(_spare) < _MAX_SPARE:
        _spare.append(pool)


def _shared_serial_pool() -> _tpool.ThreadPool:
    global _serial_pool
    if _serial_pool is None:
        _serial_pool = _tpool.ThreadPool(1)
    return _serial_pool


def _wrapper(entry: Offload) -> Callable:
    def wrapper(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        return call(entry, wrapped, instance, args, kwargs)

    return wrapper


def offload(target: str, *, serialize: bool | str = False) -> None:
    """Run calls of ``target`` (``"module.function"`` or ``"module.Class.method"``) in a tpool worker.

    The module is imported now; the attribute is replaced in place by a
    ``wrapt`` wrapper, so callers that look it up at call time get the green
    behaviour (a name bound before, as by ``from module import function``,
    keeps the original).  Calling it again for the same target does nothing.
    Raises ``TypeError`` for a method of a C type (``sqlite3.Connection``):
    those cannot be replaced in place; wrap the function that makes the
    objects instead, as ``greenpatch.green.sqlite3`` does.
    """
    if target in _wrapped:
        return
    owner, name = _resolve(target)
    original = getattr(owner, name)
    entry = Offload(target, serialize)
    import wrapt

    try:
        wrapt.wrap_function_wrapper(owner, name, _wrapper(entry))
    except TypeError as exc:
        raise TypeError(
            f"cannot offload {target!r}: {exc}. A C type's methods cannot be replaced in place; offload "
            f"a method of a Python subclass, or wrap the function that creates the objects") from None
    _wrapped[target] = (owner, name, original, entry)


def restore(target: str) -> None:
    """Undo ``offload(target)``."""
    owner, name, original, _ = _wrapped.pop(target)
    setattr(owner, name, original)


def offloaded() -> list[str]:
    """The targets ``offload()`` has wrapped, in order."""
    return list(_wrapped)


def _resolve(target: str) -> tuple[Any, str]:
    """The object holding the last name of ``target``, and that name; imports the longest module prefix."""
    parts = target.split(".")
    if len(parts) < 2:
        raise ValueError(f"offload target must be 'module.name' or 'module.Class.name', not {target!r}")
    for split in range(len(parts) - 1, 0, -1):
        modname = ".".join(parts[:split])
        try:
            owner = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not modname.startswith(exc.name):
                raise  # the module exists but imports something missing
            continue
        for part in parts[split:-1]:
            owner = getattr(owner, part)
        if not hasattr(owner, parts[-1]):
            raise AttributeError(f"{'.'.join(parts[:-1])} has no attribute {parts[-1]!r}")
        return owner, parts[-1]
    raise ModuleNotFoundError(f"no module found for offload target {target!r}")


def _after_fork_in_child() -> None:
    global _generation, _serial_pool
    _generation += 1
    _pools.clear()
    _spare.clear()
    _serial_pool = None


os.register_at_fork(after_in_child=_after_fork_in_child)
