"""The command line: ``python -m greenpatch [options] (script.py | -m module | -) [args]``.

Patches the standard library first, then runs the target as ``__main__``
exactly as ``python script.py`` or ``python -m module`` would: the same
``sys.argv``, ``sys.path[0]``, ``__file__``, ``__spec__`` and exit status, and
python's traceback starting at the program's own frames.  The ``--no-<flag>`` options are generated from the registry
``greenpatch.patcher.PATCHES``, so a new patch group gets its option and its
``--help`` line without touching this file.

Options are read only up to the script name (or ``-m module``): everything
after it belongs to the target, so ``python -m greenpatch app.py --no-socket``
hands ``--no-socket`` to ``app.py``.
"""

from __future__ import annotations

import argparse
import builtins
import os
import sys
import types
from typing import Any, Sequence

from greenpatch import __version__
from greenpatch.patcher import PATCHES, monkey_patch

__all__ = ["main", "build_parser"]

PROG = "python -m greenpatch"
USAGE = f"{PROG} [options] (script.py | -m module | -) [args ...]"
_TAKES_VALUE = {"--only", "--block-threshold"}  # our options that consume the next argument
_FLAGS = [patch.flag for patch in PATCHES]


def build_parser() -> argparse.ArgumentParser:
    """The option parser; its ``--no-<flag>`` options come from ``PATCHES``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Make the standard library green (socket, select, time, threading, ...),\n"
            "then run a Python script or module as __main__ exactly as python would.\n"
            "Options end at the script name or -m module; the rest goes to the target."),
        epilog=(
            "examples:\n"
            f"  {PROG} samples/echo_server.py 6000\n"
            f"  {PROG} --no-thread -m http.server 8000\n"
            f"  {PROG} --only socket,select client.py --verbose"),
    )
    parser.add_argument("script", nargs="?", metavar="script.py",
                        help="the program to run, as in 'python script.py' (a directory or zip file "
                             "with a __main__.py works too; - reads the program from standard input)")
    parser.add_argument("args", nargs="*", metavar="args",
                        help="passed to the program untouched, as sys.argv[1:]")
    parser.add_argument("-m", dest="module", metavar="module",
                        help="run a library module as a script, as in 'python -m module' (ends the options)")
    group = parser.add_argument_group(
        "what gets patched (default: everything below)")
    for patch in PATCHES:
        group.add_argument(
            f"--no-{patch.flag}", dest=patch.flag, action="store_false", default=True,
            help=f"do not patch {', '.join(patch.targets)}: {patch.summary}"
                 + (" (patched when first imported)" if patch.on_import else ""))
    group.add_argument(
        "--only", metavar="FLAG[,FLAG...]", type=_flag_list,
        help=f"patch only these groups (of: {', '.join(_FLAGS)}); --no-<flag> still removes one")
    parser.add_argument("--report", nargs="?", const="text", choices=("text", "json"),
                        help="print what was patched, left alone and still blocking to stderr before "
                             "running the target (--report=json: as JSON)")
    parser.add_argument("--rebind", action="store_true",
                        help="also rebind names that modules imported before the patch bound to an original "
                             "(from socket import socket), outside the standard library too")
    parser.add_argument("--block-threshold", metavar="SECONDS", type=_positive_float,
                        help="report call sites that block the hub longer than this, at exit "
                             "(as GREENPATCH_BLOCK_THRESHOLD does)")
    parser.add_argument("--concurrent-servers", action="store_true",
                        help="make every socketserver-style server the program creates (TCPServer, "
                             "HTTPServer, WSGIServer, ...) handle each request in its own green thread")
    parser.add_argument("--version", action="version", version=f"greenpatch {__version__}")
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, not {text!r}")
    return value


def _flag_list(text: str) -> list[str]:
    flags = [flag.strip() for flag in text.split(",") if flag.strip()]
    unknown = [flag for flag in flags if flag not in _FLAGS]
    if unknown or not flags:
        raise argparse.ArgumentTypeError(
            f"unknown patch flag(s) {', '.join(unknown) or repr(text)}; choose from {', '.join(_FLAGS)}")
    return flags


def split_argv(argv: Sequence[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split at the target: (our options, script, module, the target's arguments).

    Like python's own command line, an option list ends at the first argument
    that is not an option, at ``-m module`` (also ``-mmodule``) or at ``--``.
    """
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest = argv[i + 1:]
            return argv[:i], (rest[0] if rest else None), None, rest[1:]
        if arg == "-m":
            if i + 1 == len(argv):
                return argv, None, None, []  # let argparse say "expected one argument"
            return argv[:i], None, argv[i + 1], argv[i + 2:]
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:i], None, arg[2:], argv[i + 1:]
        if arg.startswith("-") and arg != "-":
            if arg in _TAKES_VALUE:
                i += 1
            i += 1
            continue
        return argv[:i], arg, None, argv[i + 1:]
    return argv, None, None, []


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options, patch, and run the target as ``__main__``; exits like python would."""
    if argv is None:
        argv = sys.argv[1:]
    options, script, module, target_args = split_argv(argv)
    parser = build_parser()
    opts = parser.parse_args(options)
    if script is None and module is None:
        parser.error("no script or -m module given")

    enabled = set(opts.only) if opts.only else set(_FLAGS)
    flags = {flag: flag in enabled and getattr(opts, flag) for flag in _FLAGS}
    done = monkey_patch(rebind=opts.rebind, **flags)
    if opts.concurrent_servers:
        from greenpatch.servers import install
        install()
    if opts.block_threshold is not None:
        from greenpatch import debug
        debug.watch_blocking(opts.block_threshold)
    if opts.report:
        from greenpatch.patcher import format_report, report
        if opts.report == "json":
            import json
            sys.stderr.write(json.dumps(report(), indent=1) + "\n")
        else:
            sys.stderr.write(format_report())

    try:
        if module is not None:
            _run_module(module, target_args)
        else:
            _run_script(script, target_args)
    except SystemExit:
        raise
    except BaseException as exc:  # KeyboardInterrupt too: python exits by re-raising SIGINT
        _report_without_our_frames(exc)
        raise


def _set_path0(entry: str) -> None:
    """Put ``entry`` where python puts the script's directory (nothing under ``-P``/``-I``)."""
    if getattr(sys.flags, "safe_path", False):
        return
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


_replaced_mains: list[Any] = []


def _fresh_main_module() -> types.ModuleType:
    """A new ``__main__`` left in ``sys.modules`` afterwards, as python leaves its own."""
    _replaced_mains.append(sys.modules.get("__main__"))  # keep the CLI's own globals alive
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    if sys.version_info < (3, 14):
        module.__dict__["__annotations__"] = {}  # CPython's own __main__ starts with one
    sys.modules["__main__"] = module
    return module


def _run_module(name: str, args: list[str]) -> None:
    """``python -m name``: runpy's own entry point, in a fresh ``__main__``."""
    import runpy

    _set_path0(os.getcwd())
    sys.argv[:] = ["-m", *args]  # runpy sets argv[0] to the module's file once it is found
    _fresh_main_module()
    runpy._run_module_as_main(name, alter_argv=True)  # what python -m itself calls


def _run_script(path: str, args: list[str]) -> None:
    """``python path``: a file, or a directory / zip file holding ``__main__.py``."""
    import pkgutil
    import runpy

    sys.argv[:] = [path, *args]
    if path == "-":
        _run_stdin()
        return
    abspath = os.path.abspath(path)
    if os.path.isdir(path) or (os.path.isfile(path) and pkgutil.get_importer(path) is not None):
        if getattr(sys.flags, "safe_path", False):
            sys.path.insert(0, abspath)
        else:
            _set_path0(abspath)
        _fresh_main_module()
        runpy._run_module_as_main("__main__", alter_argv=False)
        return
    try:
        with open(abspath, "rb") as file:
            source = file.read()
    except OSError as exc:
        program = sys.orig_argv[0] if getattr(sys, "orig_argv", None) else sys.executable
        sys.stderr.write(f"{program}: can't open file {abspath!r}: [Errno {exc.errno}] {exc.strerror}\n")
        raise SystemExit(2) from None
    _set_path0(os.path.dirname(os.path.realpath(abspath)))
    from importlib.machinery import SourceFileLoader

    module = _fresh_main_module()
    namespace = module.__dict__
    namespace.update(__file__=abspath, __cached__=None,
                     __loader__=SourceFileLoader("__main__", abspath))
    code = compile(source, abspath, "exec", dont_inherit=True)
    del source
    exec(code, namespace)


def _run_stdin() -> None:
    """``python -``: the program is read from standard input."""
    from importlib.machinery import BuiltinImporter

    source = sys.stdin.read()
    _set_path0("")
    namespace = _fresh_main_module().__dict__
    namespace.update(__file__="<stdin>", __cached__=None, __loader__=BuiltinImporter)
    exec(compile(source, "<stdin>", "exec", dont_inherit=True), namespace)


# -- tracebacks as plain python prints them ----------------------------------------

def _report_without_our_frames(exc: BaseException) -> None:
    """Make python's report of ``exc`` start at the target's frames, not the CLI's or runpy's.

    The exception still propagates, so python itself prints it, sets the exit
    status (1, or death by SIGINT for KeyboardInterrupt) and runs its shutdown;
    a one-shot wrapper around ``sys.excepthook`` swaps in the trimmed traceback.
    """
    trimmed = _trim(exc.__traceback__)
    hook = sys.excepthook

    def excepthook(typ: type[BaseException], value: BaseException, tb: Any) -> None:
        sys.excepthook = hook
        if value is exc:
            tb = value.__traceback__ = trimmed  # the default hook prints value.__traceback__
        hook(typ, value, tb)

    sys.excepthook = excepthook


_OUR_FILES = {os.path.abspath(__file__)}


def _trim(tb: types.TracebackType | None) -> types.TracebackType | None:
    import runpy

    skip = _OUR_FILES | {os.path.abspath(runpy.__file__), "<frozen runpy>"}
    ours_seen = False
    cut = None
    entry = tb
    while entry is not None:
        filename = entry.tb_frame.f_code.co_filename
        if filename in skip:
            ours_seen = ours_seen or filename in _OUR_FILES
            cut = entry.tb_next
        elif ours_seen:
            break
        entry = entry.tb_next
    return cut if ours_seen else tb


if __name__ == "__main__":
    main()
