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
    "record_original", "report", "format_report",
]


class PatchWarning(UserWarning):
    """Something was imported or created before the patch and may stay blocking."""


@dataclass(frozen=True)
class Patch:
    """One switch of ``monkey_patch``: the stdlib modules it makes green, in order.

    ``on_import`` targets (costly to import, rarely used: ssl, asyncio, ...)
    are not imported by ``monkey_patch``: one already imported is patched at
    once, any other when something first imports it (a wrapt post-import hook).
    """

    flag: str
    targets: tuple[str, ...]
    summary: str
    on_import: bool = False


PATCHES: tuple[Patch, ...] = (
    Patch("socket", ("socket",), "socket.socket and the helpers that build it (create_connection, socketpair, fromfd, ...)"),
    Patch("select", ("select", "selectors"), "select.select/poll/epoll and every selectors class"),
    Patch("time", ("time",), "time.sleep"),
    Patch("thread", ("_thread", "threading"), "threads become green threads; locks, RLock, local, Thread"),
    Patch("queue", ("queue",), "Queue, LifoQueue, PriorityQueue and SimpleQueue"),
    Patch("os", ("os",), "os.read/os.write on pipes, FIFOs and sockets; os.waitpid/os.wait"),
    Patch("subprocess", ("subprocess",), "Popen: wait, communicate (so run, call, check_output) wait greenly"),
)

_FLAGS = {patch.flag: patch for patch in PATCHES}
_originals: dict[str, dict[str, Any]] = {}   # module -> {name: original value}, saved once
_patched: dict[str, types.ModuleType] = {}    # module -> its green twin
_awaiting_import: set[str] = set()            # on_import targets whose post-import hook is registered
# What report() shows about the calls so far (filled as patching goes, read only by report()).
_replaced: dict[str, list[str]] = {}          # module -> names swapped
_lacking: dict[str, list[str]] = {}           # module -> names in __implements__ this Python lacks
_switched_off: dict[str, str] = {}            # flag -> why it was left alone
_imported_early: list[str] = []               # targets already in sys.modules before the first patch
_rebound: list[str] = []                      # stdlib names _fix_early_imports rebound ("mod.attr (socket.socket)")
_warned: list[str] = []                       # names it warned about


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
    for patch in PATCHES:
        if patch in chosen or is_patched(patch.flag):
            _switched_off.pop(patch.flag, None)
        elif flags:
            if flags.get(patch.flag) is False:
                _switched_off[patch.flag] = f"switched off: monkey_patch({patch.flag}=False)"
            else:
                named = ", ".join(f"{flag}=True" for flag, on in flags.items() if on)
                _switched_off[patch.flag] = f"not chosen: monkey_patch({named}) patches only those"
    for patch in chosen:
        for name in patch.targets:
            if name not in _patched:
                if name in sys.modules and name not in _imported_early:
                    _imported_early.append(name)
                if not patch.on_import:
                    importlib.import_module(name)
    done = []
    for patch in chosen:
        for name in patch.targets:
            if name in _patched or name in _awaiting_import:
                continue
            if patch.on_import and name not in sys.modules:
                _patch_on_import(name)
                continue
            _patch_module(name)
            done.append(name)
    if done:
        _fix_early_imports(done)
    if os.environ.get("GREENPATCH_BLOCK_THRESHOLD") or os.environ.get("GREENPATCH_DUMP_ON"):
        from greenpatch import debug
        debug.install_from_env()
    return done


def _patch_module(name: str) -> None:
    green = importlib.import_module(f"greenpatch.green.{name}")
    target = importlib.import_module(name)
    saved = _originals.setdefault(name, {})
    replaced = _replaced.setdefault(name, [])
    for attr in green.__implements__:
        if not hasattr(green, attr):
            _lacking.setdefault(name, []).append(attr)
            continue
        replaced.append(attr)
        if attr not in saved:
            saved[attr] = getattr(target, attr, _MISSING)
        setattr(target, attr, getattr(green, attr))
    _patched[name] = green
    after = getattr(green, "__after_patch__", None)
    if after is not None:
        after(target)


_MISSING = object()


def _patch_on_import(name: str) -> None:
    """Patch ``name`` right after its first import, wherever that happens."""
    import wrapt

    def hook(module: types.ModuleType) -> None:
        _awaiting_import.discard(name)
        if name not in _patched:
            _patch_module(name)

    _awaiting_import.add(name)
    wrapt.register_post_import_hook(hook, name)


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
            if found is None or attr.startswith("__") or getattr(value, "__module__", None) == modname:
                continue  # (the C module that defines the original, e.g. posix.read, _socket.gethostbyname)
            if in_stdlib:
                namespace[attr] = found[0]
                _rebound.append(f"{modname}.{attr} ({found[1]})")
            else:
                holders.append(f"{modname}.{attr} ({found[1]})")
    _warned.extend(sorted(holders))
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


def _original_holders() -> dict[str, str]:
    """Every ``module.attr`` outside greenpatch still bound to a saved original, now."""
    originals: dict[int, str] = {}
    for name in _patched:
        for attr, value in _originals.get(name, {}).items():
            if value is _MISSING or isinstance(value, (int, str, bytes, float, types.ModuleType)):
                continue
            if getattr(sys.modules.get(name), attr, None) is value:
                continue  # not swapped after all (the twin kept the original)
            originals.setdefault(id(value), f"{name}.{attr}")
    holders = {}
    for modname, module in list(sys.modules.items()):
        if module is None or modname.partition(".")[0] == "greenpatch":
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            found = originals.get(id(value))
            if found is not None and not attr.startswith("__") and getattr(value, "__module__", None) != modname:
                holders[f"{modname}.{attr}"] = found
    return dict(sorted(holders.items()))


def report() -> dict[str, Any]:
    """What the patch did, as plain data (``format_report()`` prints it; the CLI's ``--report=json`` dumps it).

    Keys: ``patched`` (module -> names swapped), ``patched_on_import`` (targets
    that will be patched when first imported), ``not_patched`` (flag ->
    why it was left alone), ``not_in_this_python`` (module -> names its twin
    lists that this Python lacks), ``imported_before_patch`` (targets already
    imported when patched), ``rebound_in_stdlib`` and ``warned`` (what
    ``_fix_early_imports`` did), and ``originals_still_referenced``
    (``module.attr`` -> the original it holds), computed now.
    """
    not_patched = {}
    for patch in PATCHES:
        if is_patched(patch.flag):
            continue
        not_patched[patch.flag] = _switched_off.get(patch.flag, "monkey_patch() not called")
    return {
        "patched": {name: list(_replaced.get(name, [])) for name in _patched},
        "patched_on_import": sorted(_awaiting_import),
        "not_patched": not_patched,
        "not_in_this_python": {name: list(attrs) for name, attrs in _lacking.items()},
        "imported_before_patch": list(_imported_early),
        "rebound_in_stdlib": list(_rebound),
        "warned": list(_warned),
        "originals_still_referenced": _original_holders(),
    }


def format_report(data: dict[str, Any] | None = None) -> str:
    """``report()`` as text, one section per key."""
    data = report() if data is None else data
    out = [f"greenpatch: patched {', '.join(data['patched']) or 'nothing'}\n"]
    out.append("patched names:\n")
    for name, attrs in data["patched"].items():
        out.append(f"  {name}: {', '.join(attrs)}\n")
    if not data["patched"]:
        out.append("  nothing\n")
    if data.get("patched_on_import"):
        out.append(f"patched when first imported (not imported yet): {', '.join(data['patched_on_import'])}\n")
    if data["not_patched"]:
        out.append("left alone:\n")
        for flag, why in data["not_patched"].items():
            out.append(f"  {flag} ({', '.join(_FLAGS[flag].targets)}): {why}\n")
    if data["not_in_this_python"]:
        out.append(f"not in this Python {sys.version.split()[0]} (listed by the green twin, skipped):\n")
        for name, attrs in data["not_in_this_python"].items():
            out.append(f"  {name}: {', '.join(attrs)}\n")
    out.append(f"imported before the patch: {', '.join(data['imported_before_patch']) or 'none'}\n")
    if data["rebound_in_stdlib"]:
        out.append("rebound to green in the standard library (bound before the patch):\n")
        out.extend(f"  {entry}\n" for entry in data["rebound_in_stdlib"])
    holders = data["originals_still_referenced"]
    out.append(f"originals still referenced outside greenpatch: {'none' if not holders else ''}\n")
    for where, which in holders.items():
        out.append(f"  {where} -> original {which} (stays blocking)\n")
    return "".join(out)


def record_original(name: str, attr: str, value: Any) -> None:
    """Remember ``value`` as the original ``name.attr``, for an ``__after_patch__`` that swaps a second module."""
    _originals.setdefault(name, {}).setdefault(attr, value)


def is_patched(name: str) -> bool:
    """True if the stdlib module ``name`` (or the flag of that name) has been patched."""
    if name in _FLAGS:
        return all(target in _patched or target in _awaiting_import for target in _FLAGS[name].targets)
    return name in _patched or name in _awaiting_import


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
