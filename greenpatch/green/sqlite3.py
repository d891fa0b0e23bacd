"""Green twin of ``sqlite3``: connections whose blocking calls run in their own real thread.

Every public name of ``sqlite3`` is re-exported; ``connect`` is replaced (in
``sqlite3`` and ``sqlite3.dbapi2``).  SQLite waits inside C: with a busy
timeout, a statement, ``commit`` or ``rollback`` that meets another
connection's lock sleeps in the busy handler until the lock is freed or the
timeout passes.  On one OS thread that sleep stops the green thread holding
the lock, so it never commits (gevent and eventlet stall for the whole
timeout, then fail with "database is locked" and the row is lost).

``connect()`` returns a subclass of the connection class asked for
(``factory=``, default ``sqlite3.Connection``) whose calls listed in
``greenpatch.offload.TABLE`` run in a worker thread of that connection, one
at a time and in order, while only the calling green thread waits:
``connect`` itself, ``execute``/``executemany``/``executescript``,
``commit``, ``rollback``, ``close``, ``backup``, ``blobopen``,
``serialize``/``deserialize`` and the context manager's exit; its cursors
(``cursor()`` with any ``Cursor`` subclass as factory) run ``execute*``,
``fetchone``/``fetchmany``/``fetchall``, iteration and ``close`` the same way.

``check_same_thread`` keeps its meaning: the real connection is opened with
``check_same_thread=False`` (its calls run in a worker), and a green
connection made with the default True raises the same ``ProgrammingError``
when a thread (a green thread under the thread patch) other than its creator
calls one of the calls above.

Not covered: a ``Cursor`` made as ``sqlite3.Cursor(connection)`` rather than by
``connection.cursor()``, ``Blob`` reads and writes, setting
``isolation_level`` to None inside a transaction (which commits in C), and a
``factory`` that is not a ``Connection`` subclass (the real call, unchanged).
"""

from __future__ import annotations

import _thread
import functools as _functools
import sqlite3 as _sqlite3
import sys as _sys
from collections import deque
from sqlite3 import *  # noqa: F401,F403
from typing import Any

import wrapt as _wrapt

from greenpatch.offload import TABLE as _TABLE
from greenpatch.offload import call as _call
from greenpatch.offload import in_worker as _in_worker
from greenpatch.patcher import original as _original
from greenpatch.patcher import record_original as _record_original

globals().update({name: value for name, value in vars(_sqlite3).items()
                  if not name.startswith("_") and name not in globals()})

__implements__ = ["connect"]

_real_connect = _original("sqlite3", "connect")
_Connection = _sqlite3.Connection
_Cursor = _sqlite3.Cursor
_ENTRIES = {entry.target: entry for entry in _TABLE if entry.target.startswith("sqlite3.")}
_CONNECT = _ENTRIES["sqlite3.connect"]
_SAME_THREAD_ARG = 3   # check_same_thread's position after ``database``
_FACTORY_ARG = 4
_green_classes: dict[type, type] = {}


def _thread_ident() -> int:
    return _thread.get_ident()  # looked up at call time: green identities under the thread patch


def _check_thread(connection: Any) -> None:
    owner = getattr(connection, "_gp_owner", None)
    if owner is not None and owner != _thread_ident():
        raise ProgrammingError(
            "SQLite objects created in a thread can only be used in that same thread. "
            f"The object was created in thread id {owner} and this is thread id {_thread_ident()}.")


@_functools.cache
def _offloaded(kind: str, name: str) -> Any:
    """The wrapt wrapper of the table's entry ``sqlite3.<kind>.<name>`` (thread check, then offload)."""
    entry = _ENTRIES[f"sqlite3.{kind}.{name}"]
    connection_of = (lambda obj: obj) if kind == "Connection" else (lambda obj: obj.connection)

    forget_rows = kind == "Cursor" and name in ("execute", "executemany", "executescript", "close")

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        if instance is not None and not _in_worker():
            _check_thread(connection_of(instance))
            if forget_rows:
                instance.__dict__.pop("_gp_rows", None)
        return _call(entry, wrapped, instance, args, kwargs)

    return wrapper


class _Rows:
    """Rows a green cursor fetched ahead for ``fetchone``/iteration, so a row does not cost a thread round trip."""

    __slots__ = ("rows", "error", "ended", "batch")

    def __init__(self) -> None:
        self.rows: deque = deque()
        self.error: BaseException | None = None
        self.ended = False
        self.batch = 1  # doubles with each refill, up to _MAX_BATCH: a lone fetchone() fetches one row


_MAX_BATCH = 512
_ARRAYSIZE = object()  # fetchmany() without a size: the cursor's arraysize


def _fetch_ahead(cursor: Any, fetchone: Any, count: int) -> tuple[list, BaseException | None, bool]:
    """In the worker: up to ``count`` rows by the real ``fetchone``; an error is kept for when its row is due."""
    rows = []
    try:
        while len(rows) < count:
            row = fetchone(cursor)
            if row is None:
                return rows, None, True
            rows.append(row)
    except Exception as exc:
        return rows, exc, True
    return rows, None, False


def _next_row(self: Any, base: type) -> Any:
    """The next row (None at the end), from the rows fetched ahead or a new batch."""
    owner = self.connection._gp_owner
    if owner is not None and owner != _thread.get_ident() and not _in_worker():
        _check_thread(self.connection)
    state = self.__dict__.get("_gp_rows")
    if state is not None and state.rows:
        return state.rows.popleft()
    if state is None:
        state = self.__dict__["_gp_rows"] = _Rows()
    if state.error is not None:
        error, state.error = state.error, None
        raise error
    if state.ended:
        state.ended = False  # the real cursor answers from here on (None, or a new statement's rows)
        return _call(_ENTRIES["sqlite3.Cursor.fetchone"], base.fetchone, self, (self,), {})
    rows, state.error, state.ended = _call(
        _ENTRIES["sqlite3.Cursor.fetchone"], _fetch_ahead, self, (self, base.fetchone, state.batch), {})
    state.batch = min(state.batch * 2, _MAX_BATCH)
    if not rows:
        return _next_row(self, base)
    state.rows.extend(rows)
    return state.rows.popleft()


def _drain(self: Any, base: type, name: str, args: tuple) -> list:
    """``fetchmany``/``fetchall``: the rows fetched ahead, then one real call for the rest."""
    state = self.__dict__.get("_gp_rows") if not _in_worker() else None
    if state is None or not (state.rows or state.error is not None):
        if state is not None:
            state.ended = False
        return _offloaded("Cursor", name)(getattr(base, name).__get__(self), self, args, {})
    wanted = None
    if name == "fetchmany":
        wanted = args[0] if args else self.arraysize
    out = []
    while state.rows and (wanted is None or len(out) < wanted):
        out.append(state.rows.popleft())
    if state.error is not None and not state.rows and (wanted is None or len(out) < wanted):
        error, state.error = state.error, None
        raise error  # as the real call does, the rows gathered before the error are dropped
    if (wanted is None or len(out) < wanted) and not state.ended:
        more = () if wanted is None else (wanted - len(out),)
        out.extend(_offloaded("Cursor", name)(getattr(base, name).__get__(self), self, more, {}))
    return out


def _cursor_methods(base: type) -> dict[str, Any]:
    def fetchone(self: Any) -> Any:
        return _next_row(self, base)

    def __next__(self: Any) -> Any:
        row = _next_row(self, base)
        if row is None:
            raise StopIteration
        return row

    def fetchmany(self: Any, size: Any = _ARRAYSIZE) -> list:
        return _drain(self, base, "fetchmany", () if size is _ARRAYSIZE else (size,))

    def fetchall(self: Any) -> list:
        return _drain(self, base, "fetchall", ())

    methods = {"fetchone": fetchone, "__next__": __next__, "fetchmany": fetchmany, "fetchall": fetchall}
    for name, method in methods.items():
        method.__doc__ = getattr(base, name).__doc__
        method.__qualname__ = f"{base.__qualname__}.{name}"
    return methods


def _green_class(base: type, kind: str) -> type:
    """``base`` (a Connection or Cursor class) with its blocking calls offloaded; cached per class."""
    cls = _green_classes.get(base)
    if cls is not None:
        return cls
    namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": base.__qualname__,
                                 "__doc__": base.__doc__}
    for target in _ENTRIES:
        prefix = f"sqlite3.{kind}."
        if not target.startswith(prefix):
            continue
        name = target[len(prefix):]
        method = getattr(base, name, None)
        if method is None:
            continue  # not in this Python (blobopen, serialize before 3.11)
        if kind == "Connection" and name in _BY_CURSOR and method is getattr(_Connection, name):
            # The C shortcut makes a plain C cursor (3.11+); go through a green one.
            namespace[name] = _BY_CURSOR[name]
            continue
        namespace[name] = _wrapt.FunctionWrapper(method, _offloaded(kind, name))
    if kind == "Connection":
        namespace["cursor"] = _cursor
        namespace["_gp_owner"] = None  # the creating thread's ident when check_same_thread is on
    elif all(getattr(base, name) is getattr(_Cursor, name) for name in ("fetchone", "__next__")):
        namespace.update(_cursor_methods(base))  # (a subclass's own fetch methods are offloaded one by one)
    cls = _green_classes[base] = type(base.__name__, (base,), namespace)
    cls._gp_green = True
    return cls


def _cursor(self: Any, factory: Any = _Cursor) -> Any:
    if isinstance(factory, type) and issubclass(factory, _Cursor):
        factory = _green_class(factory, "Cursor")
    return _Connection.cursor(self, factory)


def _execute(self: Any, sql: str, parameters: Any = (), /) -> Any:
    return self.cursor().execute(sql, parameters)


def _executemany(self: Any, sql: str, parameters: Any, /) -> Any:
    return self.cursor().executemany(sql, parameters)


def _executescript(self: Any, sql_script: str, /) -> Any:
    return self.cursor().executescript(sql_script)


_BY_CURSOR = {"execute": _execute, "executemany": _executemany, "executescript": _executescript}
for _name, _function in _BY_CURSOR.items():
    _function.__doc__ = getattr(_Connection, _name).__doc__
_cursor.__doc__ = _Connection.cursor.__doc__


def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
    factory = args[_FACTORY_ARG] if len(args) > _FACTORY_ARG else kwargs.get("factory", _Connection)
    if not (isinstance(factory, type) and issubclass(factory, _Connection)) or _sys.is_finalizing():
        return _real_connect(database, *args, **kwargs)
    args = list(args)
    if len(args) > _SAME_THREAD_ARG:
        same_thread, args[_SAME_THREAD_ARG] = args[_SAME_THREAD_ARG], False
    else:
        same_thread, kwargs["check_same_thread"] = kwargs.get("check_same_thread", True), False
    green = _green_class(factory, "Connection")
    if len(args) > _FACTORY_ARG:
        args[_FACTORY_ARG] = green
    else:
        kwargs["factory"] = green
    connection = _call(_CONNECT, _real_connect, None, (database, *args), kwargs)
    connection._gp_owner = _thread_ident() if same_thread else None
    return connection


connect.__doc__ = _real_connect.__doc__


def __after_patch__(module: Any) -> None:
    """``sqlite3.dbapi2.connect`` is the same function (SQLAlchemy and others import it from there)."""
    dbapi2 = _sys.modules.get("sqlite3.dbapi2")
    if dbapi2 is not None and getattr(dbapi2, "connect", None) is _real_connect:
        _record_original("sqlite3.dbapi2", "connect", _real_connect)
        dbapi2.connect = connect
