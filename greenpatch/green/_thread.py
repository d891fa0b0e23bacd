"""Green ``_thread``: threads are greenlets on the hub of the OS thread that starts them.

``threading`` keeps its own code and becomes green through the names it takes
from here (see ``greenpatch.green.threading``).  What each version needs:

* 3.10-3.12: ``start_new_thread`` and ``_set_sentinel``.  The sentinel is a
  green Lock that ``threading`` acquires in the new thread; we release it
  when the thread's greenlet ends, which is what ``Thread.join`` and
  ``threading._shutdown`` wait for.
* 3.13: ``start_joinable_thread`` with ``_ThreadHandle``; a handle is done
  when the greenlet ends.  ``_shutdown`` (called by ``threading._shutdown``
  at exit) joins every non-daemon green thread's handle greenly, then lets
  the original join any real non-daemon OS thread.

Invariants:

* Idents: an OS thread's main greenlet keeps the OS ident; any other
  greenlet is ``id(greenlet)``.  ``get_native_id`` stays the OS thread's.
* A running green thread is referenced from ``_alive`` until it ends, so a
  thread parked on an object nobody else references is never collected
  (and never killed by greenlet's GreenletExit-on-collection); at exit the
  daemon ones are simply abandoned.
* A green thread's ``_local`` dicts are dropped when it ends, before its
  handle or sentinel says so, as with real threads.
"""

from __future__ import annotations

import os
import signal
import sys
import weakref
from operator import index
from typing import Any, Callable

# The originals that stay: they concern the OS thread or the interpreter.
from _thread import TIMEOUT_MAX, error, exit, exit_thread, get_native_id, stack_size  # noqa: F401
from _thread import _excepthook, _ExceptHookArgs  # noqa: F401

from greenlet import GreenletExit, getcurrent, greenlet

from greenpatch import hub as _hub
from greenpatch.hub import get_hub, park, wake_all
from greenpatch.locks import Lock, RLock, get_ident
from greenpatch.patcher import original

_PY313 = sys.version_info >= (3, 13)
if sys.version_info >= (3, 12):
    from _thread import _is_main_interpreter, daemon_threads_allowed  # noqa: F401
if _PY313:
    from _thread import _get_main_thread_ident  # noqa: F401
    _real_shutdown = original("_thread", "_shutdown")

_real_count = original("_thread", "_count")
_real_interrupt_main = original("_thread", "interrupt_main")
_real_get_ident = original("_thread", "get_ident")

allocate_lock = allocate = LockType = Lock
if _PY313:
    lock = Lock

__implements__ = [
    "allocate_lock", "allocate", "LockType", "lock", "RLock", "get_ident",
    "start_new_thread", "start_new", "_local", "_count", "interrupt_main",
    "_set_sentinel",                                                # 3.10-3.12
    "start_joinable_thread", "_ThreadHandle", "_make_thread_handle", "_shutdown",  # 3.13
]

_alive: dict[int, "_ThreadGreenlet"] = {}   # id(greenlet) -> running green thread
_shutdown_handles: set = set()              # handles of running non-daemon threads (3.13)


class _ThreadGreenlet(greenlet):
    """The greenlet of one green thread started through this module."""

    def __init__(self, function: Callable, args: tuple, kwargs: dict | None, handle: Any) -> None:
        hub = get_hub()
        super().__init__(parent=hub)
        self._function = function
        self._args = args
        self._kwargs = kwargs
        self.handle = handle
        self.sentinels: list = []
        self.local_impls: list = []

    @property
    def name(self) -> str:
        """The name of its ``threading.Thread`` if it has one (for deadlock reports)."""
        threading = sys.modules.get("threading")
        thread = threading and threading._active.get(id(self))
        return thread.name if thread is not None else f"green thread {id(self):#x}"

    def run(self) -> None:
        function, args, kwargs = self._function, self._args, self._kwargs
        self._function = self._args = self._kwargs = None
        try:
            if kwargs:
                function(*args, **kwargs)
            else:
                function(*args)
        except (SystemExit, GreenletExit):
            pass
        except KeyboardInterrupt as exc:
            hub = self.parent
            hub.schedule(hub._to_main, exc)  # Ctrl-C that landed here belongs to the main thread
        except BaseException as exc:
            _report_unraisable(exc, function)
        finally:
            del function, args, kwargs
            _finished(self)


def _finished(glet: _ThreadGreenlet) -> None:
    """A green thread ended: drop its locals, then tell joiners (sentinels, handle)."""
    key = id(glet)
    _alive.pop(key, None)
    for impl_ref in glet.local_impls:
        impl = impl_ref()
        if impl is not None:
            impl.dicts.pop(key, None)
            impl.refs.pop(key, None)
    glet.local_impls = []
    for sentinel in glet.sentinels:
        if sentinel.locked():
            sentinel.release()
    handle = glet.handle
    if handle is not None:
        _shutdown_handles.discard(handle)
        handle._set_done()


def _spawn(function: Callable, args: tuple, kwargs: dict | None, handle: Any) -> _ThreadGreenlet:
    glet = _ThreadGreenlet(function, args, kwargs, handle)
    _alive[id(glet)] = glet
    glet.parent.resume(glet)
    return glet


def start_new_thread(function: Callable, args: tuple, kwargs: dict | None = None) -> int:
    """Start ``function(*args, **kwargs)`` in a new green thread; returns its ident."""
    if not callable(function):
        raise TypeError("first arg must be callable")
    if not isinstance(args, tuple):
        raise TypeError("2nd arg must be a tuple")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise TypeError("optional 3rd arg must be a dictionary")
    return id(_spawn(function, args, kwargs, None))


start_new = start_new_thread


def _count() -> int:
    """How many threads started through ``_thread`` are running (green ones and real ones).

    The workers of greenpatch's default ``tpool`` (name lookups run there,
    and a worker idles on for a while afterwards) are not the program's: like
    CPython's count, this one goes back down as soon as the threads the
    program started have ended (``threading_helper.wait_threads_exit``).
    """
    tpool = sys.modules.get("greenpatch.tpool")
    pool = tpool._default if tpool is not None else None
    workers = pool._workers if pool is not None else 0
    return len(_alive) + max(0, _real_count() - workers)


def interrupt_main(signum: int = signal.SIGINT, /) -> None:
    """Act as if signal ``signum`` arrived in the main thread: in its main greenlet.

    From the main greenlet (or another OS thread) this is the original.  From
    another green thread of the main OS thread the original would run the
    handler in *that* green thread, and a KeyboardInterrupt would end it
    instead of the main thread.  So the handler runs here, and what it raises
    is thrown into the main greenlet at once (where the main thread waits),
    this green thread resuming on the hub's next turn.
    """
    current = getcurrent()
    if current.parent is None or _real_get_ident() != _hub._main_thread_ident:
        return _real_interrupt_main(signum)
    handler = signal.getsignal(signum)  # ValueError for a bad number, as the original
    if not callable(handler):  # SIG_IGN, SIG_DFL, or a handler set outside Python
        return
    hub = get_hub()
    try:
        handler(signum, hub.main.gr_frame)
    except BaseException as exc:
        if current is not hub:
            hub.resume(current)
        hub._to_main(exc)


_UnraisableHookArgs: Any = None


def _report_unraisable(exc: BaseException, function: Callable) -> None:
    """Report an exception that escaped a bare ``start_new_thread`` function, through sys.unraisablehook."""
    global _UnraisableHookArgs
    if _UnraisableHookArgs is None:
        _UnraisableHookArgs = _find_unraisable_args_type()
    if _PY313:
        err_msg, obj = f"Exception ignored in thread started by {function!r}", None
    else:
        err_msg, obj = "Exception ignored in thread started by", function
    try:
        sys.unraisablehook(_UnraisableHookArgs((type(exc), exc, exc.__traceback__, err_msg, obj)))
    except BaseException:
        import traceback
        sys.stderr.write(f"Exception ignored in thread started by: {function!r}\n")
        traceback.print_exception(type(exc), exc, exc.__traceback__)


def _find_unraisable_args_type() -> Any:
    """``sys.UnraisableHookArgs`` is not exposed; catch one to learn its type."""
    caught = []

    class _Probe:
        def __del__(self) -> None:
            raise RuntimeError("probe")

    saved = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        _Probe()
    finally:
        sys.unraisablehook = saved
    return type(caught[0]) if caught else tuple


# -- 3.10-3.12: the thread-state sentinel ---------------------------------------

if not _PY313:
    def _set_sentinel() -> Lock:
        """A lock released when the calling green thread ends (``threading`` acquires it first)."""
        sentinel = Lock()
        current = getcurrent()
        if type(current) is _ThreadGreenlet:
            current.sentinels.append(sentinel)
        return sentinel


# -- 3.13: thread handles ----------------------------------------------------------

_NOT_STARTED, _RUNNING, _DONE = 0, 1, 2

if _PY313:
    class _ThreadHandle:
        """A green ``_thread._ThreadHandle``: ``join()`` parks until the thread's greenlet ends."""

        __slots__ = ("_ident", "_state", "_waiters", "__weakref__")

        def __init__(self) -> None:
            self._ident = 0
            self._state = _NOT_STARTED
            self._waiters: list = []

        @property
        def ident(self) -> int:
            return self._ident

        def is_done(self) -> bool:
            return self._state == _DONE

        def _set_done(self) -> None:
            if self._state == _NOT_STARTED:
                raise RuntimeError("thread not started")
            self._state = _DONE
            if self._waiters:
                wake_all(self._waiters)

        def join(self, timeout: float | None = None) -> None:
            """Wait until the thread ends, or ``timeout`` seconds (None: for ever)."""
            if self._state == _NOT_STARTED:
                raise RuntimeError("thread not started")
            if self._state == _DONE:
                return
            if self._ident == get_ident():
                raise RuntimeError("Cannot join current thread")
            if timeout is not None:
                timeout = max(0.0, float(timeout if isinstance(timeout, float) else index(timeout)))
            park(self._waiters, self.is_done, timeout)

        def __repr__(self) -> str:
            return f"<_thread._ThreadHandle object: ident={self._ident}>"

    def _make_thread_handle(ident: int) -> _ThreadHandle:
        """A handle for a thread that is already running (the main thread, a dummy thread)."""
        handle = _ThreadHandle()
        handle._ident = ident
        handle._state = _RUNNING
        return handle

    def start_joinable_thread(function: Callable, handle: _ThreadHandle | None = None,
                              daemon: bool = True) -> _ThreadHandle:
        """Start ``function()`` in a new green thread; its handle is done when it ends."""
        if not callable(function):
            raise TypeError("thread function must be callable")
        if handle is None:
            handle = _ThreadHandle()
        elif not isinstance(handle, _ThreadHandle):
            raise TypeError("'handle' must be a _ThreadHandle")
        if handle._state != _NOT_STARTED:
            raise RuntimeError("thread already started")
        glet = _spawn(function, (), None, handle)
        handle._ident = id(glet)
        handle._state = _RUNNING
        if not daemon:
            _shutdown_handles.add(handle)
        return handle

    def _shutdown() -> None:
        """Wait for every non-daemon thread but the calling one: green ones greenly, then real ones."""
        me = get_ident()
        while True:
            pending = [h for h in _shutdown_handles if h._ident != me and h._state != _DONE]
            if not pending:
                break
            for handle in pending:
                handle.join()
        _real_shutdown()


# -- thread-local data ----------------------------------------------------------------

class _LocalImpl:
    """The per-green-thread dicts of one ``_local`` and the arguments to re-run ``__init__`` with."""

    __slots__ = ("dicts", "refs", "args", "kwargs", "__weakref__")

    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.dicts: dict[int, dict] = {}   # id(greenlet) -> that green thread's attributes
        self.refs: dict[int, Any] = {}     # id(greenlet) -> weakref whose callback drops the dict
        self.args = args
        self.kwargs = kwargs


def _drop_dict(impl_ref: Any, key: int) -> Callable[[Any], None]:
    def drop(_: Any) -> None:
        impl = impl_ref()
        if impl is not None:
            impl.dicts.pop(key, None)
            impl.refs.pop(key, None)
    return drop


_MISSING = object()


def _type_lookup(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        namespace = klass.__dict__
        if name in namespace:
            return namespace[name]
    return _MISSING


def _is_data_descriptor(attr: Any) -> bool:
    kind = type(attr)
    return hasattr(kind, "__set__") or hasattr(kind, "__delete__")


class _local:
    """Green thread-local data: each green thread sees its own attributes.

    Mirrors ``_thread._local``: a subclass's ``__init__`` runs again, with the
    construction arguments, the first time each other green thread touches
    the object; class attributes, methods, properties and ``__slots__`` are
    shared.  Attribute lookup follows the generic rules (data descriptors,
    then the green thread's dict, then other class attributes) without
    swapping a shared ``__dict__``, so it needs no lock and stays right when a
    property switches green threads.
    """

    __slots__ = ("_greenpatch_local", "__weakref__")

    def __new__(cls, /, *args: Any, **kwargs: Any) -> "_local":
        if (args or kwargs) and cls.__init__ is object.__init__:
            raise TypeError("Initialization arguments are not supported")
        self = object.__new__(cls)
        impl = _LocalImpl(args, kwargs)
        _set_impl(self, impl)
        _create_dict(self, impl, getcurrent(), False)
        return self

    def __getattribute__(self, name: str) -> Any:
        namespace = _get_dict(self)
        if name == "__dict__":
            return namespace
        cls = type(self)
        attr = _type_lookup(cls, name)
        if attr is not _MISSING:
            getter = getattr(type(attr), "__get__", None)
            if getter is not None and _is_data_descriptor(attr):
                return getter(attr, self, cls)
        value = namespace.get(name, _MISSING)
        if value is not _MISSING:
            return value
        if attr is not _MISSING:
            return attr if getter is None else getter(attr, self, cls)
        raise AttributeError(f"'{cls.__name__}' object has no attribute '{name}'")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        namespace = _get_dict(self)
        attr = _type_lookup(type(self), name)
        if attr is not _MISSING:
            setter = getattr(type(attr), "__set__", None)
            if setter is not None:
                setter(attr, self, value)
                return
        namespace[name] = value

    def __delattr__(self, name: str) -> None:
        if name == "__dict__":
            raise AttributeError(f"'{type(self).__name__}' object attribute '__dict__' is read-only")
        namespace = _get_dict(self)
        attr = _type_lookup(type(self), name)
        if attr is not _MISSING:
            deleter = getattr(type(attr), "__delete__", None)
            if deleter is not None:
                deleter(attr, self)
                return
        try:
            del namespace[name]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'") from None


_get_impl = _local.__dict__["_greenpatch_local"].__get__
_set_impl = _local.__dict__["_greenpatch_local"].__set__


def _get_dict(local: _local) -> dict:
    impl = _get_impl(local)
    current = getcurrent()
    namespace = impl.dicts.get(id(current))
    if namespace is None:
        namespace = _create_dict(local, impl, current, True)
    return namespace


def _create_dict(local: _local, impl: _LocalImpl, current: greenlet, run_init: bool) -> dict:
    key = id(current)
    impl_ref = weakref.ref(impl)
    impl.refs[key] = weakref.ref(current, _drop_dict(impl_ref, key))
    namespace = impl.dicts[key] = {}
    if type(current) is _ThreadGreenlet:
        current.local_impls.append(impl_ref)
    if run_init:
        init = type(local).__init__
        if init is not object.__init__:
            try:
                init(local, *impl.args, **impl.kwargs)
            except BaseException:
                impl.dicts.pop(key, None)
                impl.refs.pop(key, None)
                raise
    return namespace


# -- fork -------------------------------------------------------------------------------

def _after_fork_in_child() -> None:
    """Only the forking green thread survives in the child: the others are done, as real threads are."""
    current = getcurrent()
    for key, glet in list(_alive.items()):
        if glet is current:
            continue
        del _alive[key]
        handle = glet.handle
        if handle is not None:
            handle._state = _DONE
            handle._waiters = []  # they were waiting on the parent's hub
            _shutdown_handles.discard(handle)


os.register_at_fork(after_in_child=_after_fork_in_child)
