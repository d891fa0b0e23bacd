"""Late patching: real locks, Conditions and Queues made before ``monkey_patch()``.

Once the thread group is patched, every lock the program creates is green.
The ones created before (a library's ``_lock = threading.RLock()``, a
``queue.Queue()`` at module level, logging's module and handler locks) are
real: held by one green thread across a switch, they block the OS thread
when a second green thread of it wants them (a Lock deadlocks; a C RLock
wrongly lets the second one in, both having the OS thread's ident).  C locks
are invisible to ``gc``, so they are found where programs keep them: module
namespaces, the classes a module defines, and ``logging._handlerList``.

``make_green()`` runs once, just before the thread group is swapped, and
replaces a real object only when the swap cannot be observed:

* a real Lock or RLock that nobody holds (the caller included) and that is
  referenced only by the namespaces where it was found (``sys.getrefcount``
  says so: no Condition, bound method, closure or instance holds it) gets
  a green lock of the same kind, bound in every one of those namespaces;
* a ``threading.Condition`` (the original class) or a ``queue.Queue`` family
  instance keeps its identity: its Condition(s) are re-initialised in place
  on a green lock, if the lock is free, nobody waits, and the lock is held
  only by the object itself (compared with a fresh object of the same class);
* a ``logging`` handler whose ``lock`` is a free real RLock held only by the
  handler gets a green RLock;
* 3.13: ``threading.Thread.start`` gives a Thread made before the patch a
  green thread handle before starting it (the real one it was made with
  cannot track a green thread).

Everything else stays real and is named: in the ``PatchWarning`` of the
threading twin (module-level locks), in this module's own warning (the
rest), and in ``greenpatch.patcher.report()["still_real"]``.  Events,
Semaphores and Barriers made before the patch need nothing: their lock is
never held across a wait, and their waits use the (by then green)
``threading._allocate_lock``.  Nothing here uses ``gc``.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Iterator

from greenpatch.patcher import original

__all__ = ["make_green", "made_green_since", "still_left", "still_real"]

_RealLock = type(original("_thread", "allocate_lock")())
_RealRLock = original("_thread", "RLock")
_SKIP = ("greenpatch", "_thread")
_TWIN_FIXES = "threading"  # threading's own locks are its twin's (__after_patch__): only watched here


def _refs(namespace: Any, key: str) -> int:
    """References to ``namespace[key]`` (the same temporaries every time it is called)."""
    return sys.getrefcount(namespace[key])


_ONE_HOLDER = _refs({"key": object()}, "key")


def _namespaces() -> Iterator[tuple[str, Any, Any]]:
    """(name, namespace, owner) for every module outside _SKIP and every class a module defines."""
    seen = set()
    for modname, module in list(sys.modules.items()):
        if module is None or modname.partition(".")[0] in _SKIP:
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace or id(namespace) in seen:
            continue
        seen.add(id(namespace))
        yield modname, namespace, module
        for attr in list(namespace):
            value = namespace.get(attr)
            if issubclass(type(value), type) and id(value) not in seen:  # a class (not a proxy posing as one)
                own = type.__dict__["__dict__"].__get__(value)
                if own.get("__module__") == modname:
                    seen.add(id(value))
                    yield f"{modname}.{own.get('__qualname__', attr)}", own, value
        value = own = None


def _is_free(lock: Any) -> bool:
    """Nobody holds the real ``lock``, the calling thread included."""
    if type(lock) is _RealRLock and lock._is_owned():
        return False
    if lock.acquire(False):
        lock.release()
        return True
    return False


def _kind(lock: Any) -> str:
    return "RLock" if type(lock) is _RealRLock else "Lock"


def _green_like(lock: Any) -> Any:
    from greenpatch.locks import Lock, RLock
    return RLock() if type(lock) is _RealRLock else Lock()


def _queue_classes() -> tuple[type, ...]:
    if "queue" not in sys.modules:
        return ()
    return tuple(cls for cls in (original("queue", "Queue"),) if isinstance(cls, type))


def make_green(threading_was_imported: bool = True) -> tuple[list[str], list[Any], list[tuple[str, Any, str, str]]]:
    """Replace what can be replaced unobservably (see the module docstring).

    Returns (made green, objects left on a real lock, the real locks left):
    the last two for ``still_left`` and ``made_green_since``, since the
    threading twin may still replace some (its own, logging's handlers, and
    free ones of the standard library that something else holds too, such as
    fork handlers).
    """
    made: list[str] = []
    left: list[tuple[str, Any, str]] = []   # (description, object, attribute holding the real lock)
    if threading_was_imported and sys.version_info >= (3, 13) and _green_handle_on_start():
        made.append("threading.Thread.start (gives a Thread made before the patch a green handle)")
    Condition = original("threading", "Condition")
    queues = _queue_classes()
    found: dict[int, list[tuple[str, Any, Any, str]]] = {}   # id(lock) -> where it is bound
    objects: list[tuple[str, Any, str]] = []
    for where, namespace, owner in _namespaces():
        for attr in list(namespace):
            value = namespace.get(attr)
            kind = type(value)
            if kind is _RealLock or kind is _RealRLock:
                found.setdefault(id(value), []).append((where, namespace, owner, attr))
            elif (kind is Condition or (queues and isinstance(value, queues))) and not attr.startswith("__"):
                objects.append((where, namespace, attr))
            value = None
    leftover_locks = []
    for places in found.values():
        where, namespace, owner, attr = places[0]
        lock = namespace[attr]
        alone = _refs(namespace, attr) - 1 == _ONE_HOLDER + len(places) - 1  # - 1: the local ``lock``
        theirs = any(place[0].partition(".")[0] == _TWIN_FIXES for place in places)
        if alone and not theirs and _is_free(lock):
            green = _green_like(lock)
            for where, namespace, owner, attr in places:
                if isinstance(owner, types.ModuleType):
                    namespace[attr] = green
                else:
                    setattr(owner, attr, green)
                made.append(f"{where}.{attr} (a real {_kind(lock)})")
        else:
            leftover_locks.extend((f"{where}.{attr}", namespace, attr, _kind(lock))
                                  for where, namespace, owner, attr in places)
        lock = None
    for where, namespace, attr in objects:
        obj = namespace[attr]
        if _reseat(obj, Condition, queues):
            made.append(f"{where}.{attr} ({_describe(obj, queues)}: its lock)")
        else:
            left.append((f"{where}.{attr} ({_describe(obj, queues)} on a real lock)", obj,
                         "_lock" if type(obj) is Condition else "mutex"))
        obj = None
    logging = sys.modules.get("logging")
    if logging is not None:
        for ref in list(getattr(logging, "_handlerList", ())):
            handler = ref()
            if handler is None or type(getattr(handler, "lock", None)) is not _RealRLock:
                continue
            if "lock" in getattr(handler, "__dict__", ()) and _refs(vars(handler), "lock") == _ONE_HOLDER \
                    and _is_free(handler.lock):
                handler.lock = _green_like(handler.lock)
                made.append(f"logging handler {handler!r} (its lock)")
            else:
                left.append((f"logging handler {handler!r} (a real RLock, held or shared)", handler, "lock"))
    return sorted(made), left, leftover_locks


def still_left(left: list[tuple[str, Any, str]]) -> list[str]:
    """Which of the objects ``make_green`` left are still on a real lock (the threading twin may have fixed some)."""
    return sorted(desc for desc, obj, attr in left if type(getattr(obj, attr, None)) in (_RealLock, _RealRLock))


def _green_handle_on_start() -> bool:
    """3.13: wrap ``Thread.start`` so that a Thread made before the patch starts with a green ``_ThreadHandle``.

    ``Thread.__init__`` makes the handle that ``start()`` hands to
    ``_start_joinable_thread``; the green one refuses a real handle, which
    could not tell when a green thread ends.  Nobody else has the handle of
    a Thread not started yet, so it is swapped there.
    """
    import threading
    start = threading.Thread.start
    if getattr(start, "_greenpatch_handles", False):
        return False
    real_handle = original("_thread", "_ThreadHandle")

    def green_start(self: Any) -> None:
        if type(self._handle) is real_handle and not self._started.is_set():
            from greenpatch.green._thread import _ThreadHandle
            self._handle = _ThreadHandle()
        start(self)

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(green_start, attr, getattr(start, attr))
    green_start._greenpatch_handles = True  # type: ignore[attr-defined]
    threading.Thread.start = green_start
    return True


def made_green_since(locks: list[tuple[str, Any, str, str]]) -> list[str]:
    """Which of the real locks ``make_green`` left hold something else now (the threading twin swapped them)."""
    return sorted(f"{where} (a real {kind})" for where, namespace, attr, kind in locks
                  if type(namespace.get(attr)) not in (_RealLock, _RealRLock))


def _describe(obj: Any, queues: tuple[type, ...]) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}" if queues and isinstance(obj, queues) else "threading.Condition"


def _reseat(obj: Any, Condition: type, queues: tuple[type, ...]) -> bool:
    """Re-initialise the Condition(s) of ``obj`` on a green lock, in place; False if that is not safe."""
    if type(obj) is Condition:
        conditions, holder, key = [obj], vars(obj), "_lock"
        fresh = Condition(_RealRLock() if type(obj._lock) is _RealRLock else original("_thread", "allocate_lock")())
    else:
        conditions = [getattr(obj, name, None) for name in ("not_empty", "not_full", "all_tasks_done")]
        holder, key = vars(obj), "mutex"
        fresh = queues[0]()
    lock = holder.get(key)
    if type(lock) not in (_RealLock, _RealRLock):
        return False
    if any(type(cond) is not Condition or cond._lock is not lock or cond._waiters for cond in conditions):
        return False
    expected = _refs(vars(fresh), key)
    del fresh
    if _refs(holder, key) - 1 != expected or not _is_free(lock):  # - 1: the local ``lock``
        return False
    green = _green_like(lock)
    if key == "mutex":
        holder["mutex"] = green
    for cond in conditions:
        Condition.__init__(cond, green)
    return True


def still_real() -> dict[str, str]:
    """Every real lock, Condition or Queue on a real lock, and logging handler with a real lock, found now."""
    Condition = original("threading", "Condition")
    queues = _queue_classes()
    found: dict[str, str] = {}
    for where, namespace, owner in _namespaces():
        for attr in list(namespace):
            value = namespace.get(attr)
            kind = type(value)
            if kind is _RealLock or kind is _RealRLock:
                found[f"{where}.{attr}"] = f"a real {_kind(value)}"
            elif kind is Condition and type(value._lock) in (_RealLock, _RealRLock):
                found[f"{where}.{attr}"] = "threading.Condition on a real lock"
            elif queues and isinstance(value, queues) and type(getattr(value, "mutex", None)) is _RealLock:
                found[f"{where}.{attr}"] = f"{_describe(value, queues)} on a real lock"
            value = None
    logging = sys.modules.get("logging")
    for ref in list(getattr(logging, "_handlerList", ())):
        handler = ref()
        if handler is not None and type(getattr(handler, "lock", None)) is _RealRLock:
            found[f"logging handler {handler!r}"] = "a real RLock"
    return dict(sorted(found.items()))
