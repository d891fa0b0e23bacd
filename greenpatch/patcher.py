"""monkey_patch(): swap stdlib names for green ones, driven by one registry.

The registry ``PATCHES`` is the only place that knows what gets patched: the
patcher, the CLI flags, ``is_patched`` and the docs all read it.  Each target
stdlib module ``m`` has a green twin ``greenpatch.green.m`` whose
``__implements__`` lists the names it replaces; a twin may also define
``__after_patch__(module)`` for fix-ups that are not plain name swaps (e.g.
re-keying threading's main thread).  The patcher itself holds no I/O logic.

Patching cannot be undone.  ``on_import`` targets not imported yet are
patched by a meta-path finder (``_ImportPatcher``) right after their module
is executed, wherever and in whichever thread that happens; the same finder
patches a patched module again when ``importlib.reload`` re-executes it.
What was created or bound before the patch is handled by ``greenpatch._late``
(real locks, Conditions, Queues, logging's locks) and ``_fix_early_imports``
(names bound to originals).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
import sysconfig
import types
import warnings
from _thread import get_ident as _os_thread_ident
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PATCHES", "Patch", "PatchWarning", "monkey_patch", "is_patched", "original", "patched",
    "record_original", "rebind", "report", "format_report",
]


class PatchWarning(UserWarning):
    """Something was imported or created before the patch and may stay blocking."""


@dataclass(frozen=True)
class Patch:
    """One switch of ``monkey_patch``: the stdlib modules it makes green, in order.

    ``on_import`` targets (costly to import, rarely used: ssl, asyncio, ...)
    are not imported by ``monkey_patch``: one already imported is patched at
    once, any other when something first imports it (``_ImportPatcher``).
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
    Patch("signal", ("signal",), "signal.signal: Python handlers run as the main green thread, which may wait in them"),
    Patch("io", ("io",), "open()/io.open/os.fdopen (so Popen pipes) on pipes, FIFOs, ttys and sockets wait greenly; a piped sys.stdin too"),
    Patch("sqlite3", ("sqlite3",), "sqlite3.connect: each connection's blocking calls (execute, commit, fetch*, ...) run in its own real thread", on_import=True),
    Patch("ssl", ("ssl",), "SSLSocket: handshake, read/write, unwrap wait greenly; every SSLContext, old or new, wraps green", on_import=True),
    Patch("asyncio", ("asyncio",), "each green thread runs its own event loop (asyncio.run in many threads at once)", on_import=True),
    Patch("multiprocessing", ("_multiprocessing", "multiprocessing.connection"), "SemLock (Lock, RLock, Semaphore, Condition, Event, queues) and Connection reads/writes/wait() wait greenly", on_import=True),
)

_FLAGS = {patch.flag: patch for patch in PATCHES}
_originals: dict[str, dict[str, Any]] = {}   # module -> {name: original value}, saved once
_patched: dict[str, types.ModuleType] = {}    # module -> its green twin
_targets: dict[str, types.ModuleType] = {}    # module -> the module object patched (a reload patches it again)
_awaiting_import: set[str] = set()            # on_import targets not imported yet (_ImportPatcher patches them)
# What report() shows about the calls so far (filled as patching goes, read only by report()).
_replaced: dict[str, list[str]] = {}          # module -> names swapped
_lacking: dict[str, list[str]] = {}           # module -> names in __implements__ this Python lacks
_switched_off: dict[str, str] = {}            # flag -> why it was left alone
_imported_early: list[str] = []               # targets already in sys.modules before the first patch
_rebound: list[str] = []                      # stdlib names _fix_early_imports rebound ("mod.attr (socket.socket)")
_warned: list[str] = []                       # names it warned about
_rebound_on_request: list[str] = []           # names outside the stdlib rebound by rebind() / monkey_patch(rebind=True)
_made_green: list[str] = []                   # objects made before the patch that were made green (greenpatch._late)
_rebind_asked = False                         # monkey_patch(rebind=True) was called: on_import patches rebind too


def monkey_patch(*, rebind: bool = False, **flags: bool) -> list[str]:
    """Make the standard library green; returns the modules patched by this call.

    With no arguments everything in ``PATCHES`` is patched; ``socket=False``
    leaves that group alone, and ``socket=True`` alone patches only that group.
    Calling it again is harmless: what is already patched stays as it is.
    Patching cannot be undone: ``socket=False`` once socket is patched (or
    waits for its first import) warns and changes nothing.  ``rebind=True``
    also rebinds the names outside the standard library that were bound to
    an original before the patch (see ``rebind()``); without it they are
    named in a ``PatchWarning``.
    """
    global _rebind_asked
    unknown = set(flags) - set(_FLAGS)
    if unknown:
        raise TypeError(f"monkey_patch() got unknown flags {sorted(unknown)}; known: {sorted(_FLAGS)}")
    _rebind_asked = _rebind_asked or rebind
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
            if flags.get(patch.flag) is False:
                waits = [name for name in patch.targets if name in _awaiting_import]
                warnings.warn(
                    f"greenpatch: monkey_patch({patch.flag}=False) changes nothing: "
                    f"{', '.join(patch.targets)} {'will be patched when first imported' if waits else 'is patched'}"
                    " and greenpatch cannot unpatch", PatchWarning, stacklevel=2)
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
    late = None
    if "threading" not in _patched and any("threading" in patch.targets for patch in chosen):
        # Before threading's twin runs: it names the real locks that are left.
        from greenpatch import _late
        late = _late.make_green("threading" in _imported_early)
        _made_green.extend(late[0])
    done = []
    for patch in chosen:
        for name in patch.targets:
            if name in _patched or name in _awaiting_import:
                continue
            if patch.on_import and name not in sys.modules:
                _await_import(name)
                if name not in sys.modules:
                    continue
                # Another thread began importing it meanwhile, maybe past the finder: patch it here
                # (importing waits until that import is done).
                _awaiting_import.discard(name)
            _patch_module(name)
            done.append(name)
    if late is not None:
        _made_green.extend(_late.made_green_since(late[2]))
        left = _late.still_left(late[1])
        late = None
        if left:
            warnings.warn(
                "greenpatch: these were created before monkey_patch() on real locks that could not be "
                "swapped safely (held, waited on, or shared) and block the OS thread when contended: "
                + ", ".join(left) + ". Patch earlier (python -m greenpatch, or monkey_patch() as the "
                "first import).", PatchWarning, stacklevel=2)
    if done:
        _fix_early_imports(done, rebind)
    if rebind:
        _rebind_holders()  # what earlier calls patched, too
    if os.environ.get("GREENPATCH_BLOCK_THRESHOLD") or os.environ.get("GREENPATCH_DUMP_ON"):
        from greenpatch import debug
        debug.install_from_env()
    return done


def _patch_module(name: str, target: types.ModuleType | None = None) -> None:
    """Swap the names; ``target`` is the module just executed (first import, reload), else it is imported."""
    green = importlib.import_module(f"greenpatch.green.{name}")
    if target is None:
        target = importlib.import_module(name)
    saved = _originals.setdefault(name, {})
    replaced = _replaced.setdefault(name, [])
    for attr in green.__implements__:
        if not hasattr(green, attr):
            lacking = _lacking.setdefault(name, [])
            if attr not in lacking:
                lacking.append(attr)
            continue
        if attr not in replaced:
            replaced.append(attr)
        if attr not in saved:  # a reload keeps the first originals
            saved[attr] = getattr(target, attr, _MISSING)
        setattr(target, attr, getattr(green, attr))
    _patched[name] = green
    _targets[name] = target
    _watch_imports()
    after = getattr(green, "__after_patch__", None)
    if after is not None:
        after(target)


_MISSING = object()


def _await_import(name: str) -> None:
    """Patch ``name`` right after its first import, wherever that happens."""
    _awaiting_import.add(name)
    _watch_imports()


def _watch_imports() -> None:
    if _ImportPatcher not in sys.meta_path:
        sys.meta_path.insert(0, _ImportPatcher)


class _ImportPatcher:
    """Meta-path finder: patches on_import targets as they are first executed, and patched modules reloaded.

    It asks the finders after it for the spec and wraps the loader, whose
    ``exec_module`` patches the module right after executing it, still inside
    the import: the ``import`` statement (in any green or OS thread; others
    importing the same module wait on its import lock) returns the patched
    module, so ``from ssl import SSLContext`` can never get an original.
    ``importlib.reload`` of a patched module passes that module as
    ``target``: it is patched again after re-executing (which rebinds its
    names to fresh originals).  A fresh copy (``del sys.modules[name]`` then
    an import, as ``test.support.import_fresh_module`` does, or a module
    executed aside with ``module_from_spec``) is a new module and is left
    alone.  Not wrapt's post-import hooks: importing wrapt 2
    imports asyncio, ssl, logging and concurrent.futures, the very modules
    on_import is there to leave alone, and wrapt ignores reloads.
    """

    _busy: set[tuple[str, int]] = set()  # (name, OS thread) being looked up: a finder after us may ask again

    @classmethod
    def find_spec(cls, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in _awaiting_import and (target is None or _targets.get(fullname) is not target):
            return None
        key = (fullname, _os_thread_ident())
        if key in cls._busy:
            return None
        cls._busy.add(key)
        try:
            finders = sys.meta_path[sys.meta_path.index(cls) + 1:] if cls in sys.meta_path else []
            for finder in finders:
                find = getattr(finder, "find_spec", None)
                spec = find(fullname, path, target) if find is not None else None
                if spec is not None:
                    if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                        spec.loader = _PatchingLoader(spec.loader)
                    return spec
            return None
        finally:
            cls._busy.discard(key)


class _PatchingLoader:
    """Wraps a target's loader: executes the module, then patches it (see ``_ImportPatcher``)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.loader, attr)

    def create_module(self, spec: Any) -> Any:
        create = getattr(self.loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module: types.ModuleType) -> None:
        if getattr(module, "__loader__", None) is self:  # the module keeps its real loader
            module.__loader__ = self.loader
        spec = getattr(module, "__spec__", None)
        if spec is not None and spec.loader is self:
            spec.loader = self.loader
        self.loader.exec_module(module)
        name = spec.name if spec is not None else module.__name__
        if name in _awaiting_import and sys.modules.get(name) is module:  # not a copy made aside
            _patch_module(name, module)
            _awaiting_import.discard(name)  # only now: if patching failed, the next import tries again
            _fix_early_imports([name], _rebind_asked)
        elif _targets.get(name) is module:
            _patch_module(name, module)


def _fix_early_imports(done: list[str], rebind: bool = False) -> None:
    """Handle names bound to originals before the patch (``from socket import socket``).

    In standard-library modules the name is rebound to its green replacement
    (functools' RLock, socketserver's selector class, ...); elsewhere it is
    left alone and named in one PatchWarning, since user code may hold an
    original on purpose, unless ``rebind`` asks to rebind those too.
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
        if module is None or modname.partition(".")[0] == "greenpatch" or _is_compiled(module):
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        in_stdlib = _is_stdlib(module)
        for attr, value in list(namespace.items()):
            found = replacements.get(id(value))
            if found is None or attr.startswith("__") or _own_name(modname, attr, value):
                continue
            if in_stdlib:
                namespace[attr] = found[0]
                _rebound.append(f"{modname}.{attr} ({found[1]})")
            elif rebind:
                namespace[attr] = found[0]
                _rebound_on_request.append(f"{modname}.{attr} ({found[1]})")
            else:
                holders.append(f"{modname}.{attr} ({found[1]})")
    _warned.extend(sorted(holders))
    if holders:
        warnings.warn(
            "greenpatch: these names were bound to the original, blocking objects before "
            "monkey_patch() and stay blocking: " + ", ".join(sorted(holders)) +
            ". Patch earlier (python -m greenpatch, or monkey_patch() as the first import).",
            PatchWarning, stacklevel=3)


def _is_compiled(module: types.ModuleType) -> bool:
    """A built-in or extension module: the originals it holds are its own (posix.read, _io.open, _socket...)."""
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or ""
    return origin == "built-in" or origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def _own_name(modname: str, attr: str, value: Any) -> bool:
    """Where the original is defined, or a name the module's own twin swaps: not a copy bound early."""
    if getattr(value, "__module__", None) == modname:
        return True
    green = _patched.get(modname)
    return green is not None and attr in green.__implements__


_STDLIB_DIRS = tuple({os.path.join(sysconfig.get_paths()[key], "") for key in ("stdlib", "platstdlib")})


def _is_stdlib(module: types.ModuleType) -> bool:
    """A pure-Python module of the standard library (not site-packages)."""
    path = getattr(module, "__file__", None) or ""
    return (path.endswith(".py") and path.startswith(_STDLIB_DIRS)
            and os.sep + "site-packages" + os.sep not in path)


def _holders() -> list[tuple[str, dict, str, str, Any]]:
    """(module, namespace, attr, "orig.name", green value): every name outside greenpatch bound to an original, now."""
    originals: dict[int, tuple[str, Any]] = {}
    for name in _patched:
        target = _targets.get(name)
        for attr, value in _originals.get(name, {}).items():
            if value is _MISSING or isinstance(value, (int, str, bytes, float, types.ModuleType)):
                continue
            current = getattr(target, attr, None)
            if current is value:
                continue  # not swapped after all (the twin kept the original)
            originals.setdefault(id(value), (f"{name}.{attr}", current))
    holders = []
    for modname, module in list(sys.modules.items()):
        if module is None or modname.partition(".")[0] == "greenpatch" or _is_compiled(module):
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            found = originals.get(id(value))
            if found is not None and not attr.startswith("__") and not _own_name(modname, attr, value):
                holders.append((modname, namespace, attr, found[0], found[1]))
    return holders


def _original_holders() -> dict[str, str]:
    """Every ``module.attr`` outside greenpatch still bound to a saved original, now."""
    return dict(sorted((f"{modname}.{attr}", which) for modname, _, attr, which, _ in _holders()))


def rebind() -> list[str]:
    """Rebind every name that still holds an original (``report()["originals_still_referenced"]``) to its green twin.

    For modules that bound an original before the patch (``from socket
    import socket``, ``from time import sleep``): afterwards they call the
    green one.  It rebinds module attributes only (a copy kept in a local
    variable, a default argument or an instance stays what it is) and also a
    name that holds an original on purpose, so call it only when nothing
    should block.  ``monkey_patch(rebind=True)`` does the same for what the
    patch finds.  Returns ``["module.attr (orig.name)", ...]``.
    """
    return _rebind_holders()


def _rebind_holders() -> list[str]:
    done = []
    for modname, namespace, attr, which, green in _holders():
        namespace[attr] = green
        done.append(f"{modname}.{attr} ({which})")
    _rebound_on_request.extend(done)
    return done


def report() -> dict[str, Any]:
    """What the patch did, as plain data (``format_report()`` prints it; the CLI's ``--report=json`` dumps it).

    Keys: ``patched`` (module -> names swapped), ``patched_on_import`` (targets
    that will be patched when first imported), ``not_patched`` (flag ->
    why it was left alone), ``not_in_this_python`` (module -> names its twin
    lists that this Python lacks), ``imported_before_patch`` (targets already
    imported when patched), ``rebound_in_stdlib`` and ``warned`` (what
    ``_fix_early_imports`` did), ``rebound_on_request`` (``rebind()``),
    ``made_green`` (real locks, Conditions, Queues and logging handlers
    created before the patch and made green), and, computed now,
    ``originals_still_referenced`` (``module.attr`` -> the original it holds)
    and ``still_real`` (where -> what: real locks and objects on them that
    block the OS thread when contended; only once threading is patched).
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
        "rebound_on_request": list(_rebound_on_request),
        "made_green": list(_made_green),
        "originals_still_referenced": _original_holders(),
        "still_real": _still_real(),
    }


def _still_real() -> dict[str, str]:
    if "threading" not in _patched:
        return {}
    from greenpatch import _late
    return _late.still_real()


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
    if data.get("rebound_on_request"):
        out.append("rebound to green on request (rebind):\n")
        out.extend(f"  {entry}\n" for entry in data["rebound_on_request"])
    if data.get("made_green"):
        out.append("created before the patch on real locks, made green:\n")
        out.extend(f"  {entry}\n" for entry in data["made_green"])
    holders = data["originals_still_referenced"]
    out.append(f"originals still referenced outside greenpatch: {'none' if not holders else ''}\n")
    for where, which in holders.items():
        out.append(f"  {where} -> original {which} (stays blocking)\n")
    if "thread" not in data["not_patched"]:
        real = data.get("still_real") or {}
        out.append(f"real locks still in use (block the OS thread when contended): {'none' if not real else ''}\n")
        for where, what in real.items():
            out.append(f"  {where}: {what}\n")
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
