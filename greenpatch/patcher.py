"""monkey_patch(): swap stdlib names for green ones, driven by one registry.

The registry ``PATCHES`` is the only place that knows what gets patched: the
patcher, the CLI flags, ``is_patched`` and the docs all read it.  Each target
stdlib module ``m`` has a green twin ``greenpatch.green.m`` whose
``__implements__`` lists the names it replaces; a twin may also define
``__after_patch__(module)`` for fix-ups that are not plain name swaps (e.g.
re-keying threading's main thread).  The patcher itself holds no I/O logic.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import types
import warnings
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PATCHES", "Patch", "PatchWarning", "monkey_patch", "is_patched", "original", "patched",
    "record_original",
]


class PatchWarning(UserWarning):
    """Something was imported or created before the patch and may stay blocking."""


@dataclass(frozen=True)
class Patch:
    """One switch of ``monkey_patch``: the stdlib modules it makes green, in order."""

    flag: str
    targets: tuple[str, ...]
    summary: str


PATCHES: tuple[Patch, ...] = (
    Patch("socket", ("socket",), "socket.socket and the helpers that build it (create_connection, socketpair, fromfd, ...)"),
    Patch("select", ("select", "selectors"), "select.select/poll/epoll and every selectors class"),
    Patch("time", ("time",), "time.sleep"),
    Patch("thread", ("_thread", "threading"), "threads become green threads; locks, RLock, local, Thread"),
    Patch("queue", ("queue",), "Queue, LifoQueue, PriorityQueue and SimpleQueue"),
)

_FLAGS = {patch.flag: patch for patch in PATCHES}
_originals: dict[str, dict[str, Any]] = {}   # module -> {name: original value}, saved once
_patched: dict[str, types.ModuleType] = {}    # module -> its green twin


def monkey_patch(**flags: bool) -> list[str]:
    """Make the standard library green; returns the modules patched by this call.

    With no arguments everything in ``PATCHES`` is patched; ``socket=False``
    leaves that group alone, and ``socket=True`` alone patches only that group.
    Calling it again is harmless: what is already patched stays as it is.
    """
    unknown = set(flags) - set(_FLAGS)
    if unknown:
        raise TypeError(f"monkey_patch() got unknown flags {sorted(unknown)}; known: {sorted(_FLAGS)}")
    if any(flags.values()):
        chosen = [patch for patch in PATCHES if flags.get(patch.flag)]
    else:
        chosen = [patch for patch in PATCHES if flags.get(patch.flag, True)]

    # Import every target before swapping anything, so the originals saved are
    # the real ones: ``threading`` first imported after ``_thread`` was patched
    # would record green objects as its originals.
    for patch in chosen:
        for name in patch.targets:
            if name not in _patched:
                importlib.import_module(name)
    done = []
    for patch in chosen:
        for name in patch.targets:
            if name in _patched:
                continue
            _patch_module(name)
            done.append(name)
    if done:
        _fix_early_imports(done)
    return done


def _patch_module(name: str) -> None:
    green = importlib.import_module(f"greenpatch.green.{name}")
    target = importlib.import_module(name)
    saved = _originals.setdefault(name, {})
    for attr in green.__implements__:
        if not hasattr(green, attr):
            continue
        if attr not in saved:
            saved[attr] = getattr(target, attr, _MISSING)
        setattr(target, attr, getattr(green, attr))
    _patched[name] = green
    after = getattr(green, "__after_patch__", None)
    if after is not None:
        after(target)


_MISSING = object()


def _fix_early_imports(done: list[str]) -> None:
    """Handle names bound to originals before the patch (``from socket import socket``).

    In standard-library modules the name is rebound to its green replacement
    (functools' RLock, socketserver's selector class, ...); elsewhere it is
    left alone and named in one PatchWarning, since user code may hold an
    original on purpose.
    """
    replacements: dict[int, tuple[Any, str]] = {}
    for name in done:
        green = _patched[name]
        for attr, value in _originals[name].items():
            if value is _MISSING or isinstance(value, (int, str, bytes, float, types.ModuleType)):
                continue
            replacements.setdefault(id(value), (getattr(green, attr), f"{name}.{attr}"))
    holders = []
    for modname, module in list(sys.modules.items()):
        if module is None or modname in _patched or modname.partition(".")[0] == "greenpatch":
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        in_stdlib = _is_stdlib(module)
        for attr, value in list(namespace.items()):
            found = replacements.get(id(value))
            if found is None or attr.startswith("__"):
                continue
            if in_stdlib:
                namespace[attr] = found[0]
            else:
                holders.append(f"{modname}.{attr} ({found[1]})")
    if holders:
        warnings.warn(
            "greenpatch: these names were bound to the original, blocking objects before "
            "monkey_patch() and stay blocking: " + ", ".join(sorted(holders)) +
            ". Patch earlier (python -m greenpatch, or monkey_patch() as the first import).",
            PatchWarning, stacklevel=3)


_STDLIB_DIRS = tuple({os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib")})


def _is_stdlib(module: types.ModuleType) -> bool:
    """A pure-Python module of the standard library (not site-packages)."""
    path = getattr(module, "__file__", None) or ""
    return (path.endswith(".py") and path.startswith(_STDLIB_DIRS)
            and os.sep + "site-packages" + os.sep not in path)


def record_original(name: str, attr: str, value: Any) -> None:
    """Remember ``value`` as the original ``name.attr``, for an ``__after_patch__`` that swaps a second module."""
    _originals.setdefault(name, {}).setdefault(attr, value)


def is_patched(name: str) -> bool:
    """True if the stdlib module ``name`` (or the flag of that name) has been patched."""
    if name in _FLAGS:
        return all(target in _patched for target in _FLAGS[name].targets)
    return name in _patched


def patched() -> list[str]:
    """The stdlib modules patched so far, in the order they were patched."""
    return list(_patched)


def original(name: str, attr: str | None = None) -> Any:
    """The unpatched module ``name`` (a fresh namespace with the originals restored), or one attribute of it.

    Works whether or not ``name`` has been patched; greenpatch itself uses it
    where it needs real blocking (the thread pool, the blocked-hub detector).
    """
    module = importlib.import_module(name)
    saved = _originals.get(name, {})
    if attr is not None:
        value = saved.get(attr, _MISSING)
        if value is _MISSING:
            value = getattr(module, attr)
        return value
    copy = types.ModuleType(name, module.__doc__)
    copy.__dict__.update(module.__dict__)
    for key, value in saved.items():
        if value is _MISSING:
            copy.__dict__.pop(key, None)
        else:
            copy.__dict__[key] = value
    return copy
