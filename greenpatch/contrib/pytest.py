"""pytest plugin: run a project's existing test suite green, and catch leaks and blocked hubs.

Enable it with ``pytest -p greenpatch.contrib.pytest``, or with ``pytest
--greenpatch`` (the package registers this module as a ``pytest11`` entry
point; loaded that way it patches nothing unless ``--greenpatch`` is given).

When enabled:

* ``monkey_patch()`` runs in ``pytest_load_initial_conftests`` (first among
  plugins), so before any conftest.py or test module is imported.  pytest
  itself and the plugins loaded before it (pytest-timeout, ...) have already
  imported ``threading``/``time``/``socket`` by then: the patcher rebinds the
  standard library's early bindings and the names it could not rebind are
  shown in the header (``greenpatch: ... stay blocking``).  For an earlier
  patch use ``GREENPATCH=1 pytest``.
* A test whose green threads (threading.Thread or greenpatch.spawn, started
  while the test function ran) are still alive after its teardown fails
  ("ERROR at teardown") with where each one waits.  Leaked ``spawn`` threads
  are then killed so they do not spill into the next test; a leaked
  ``threading.Thread`` has no kill and is only reported.  Threads started by
  fixtures are not checked (a module-scoped server outlives the first test on
  purpose).
* With ``--greenpatch-block-threshold S``, a test during which the hub was
  blocked longer than ``S`` seconds (a blocking call that is not green, or a
  long computation) fails with the stack of the culprit, found by
  ``greenpatch.debug.watch_blocking``.
"""

from __future__ import annotations

import gc
import os
import sys
import traceback
import warnings
from time import monotonic
from typing import Any

import pytest

_STATE = pytest.StashKey[dict]()
_PLUGIN_NAME = "greenpatch.contrib.pytest"
LEAK_SETTLE = 1.0  # seconds a test's green threads get to end after its teardown


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("greenpatch")
    group.addoption("--greenpatch", action="store_true", default=False,
                    help="monkey-patch the standard library green before collection and fail tests "
                         "that leak green threads (same as -p greenpatch.contrib.pytest)")
    group.addoption("--greenpatch-block-threshold", metavar="SECONDS", type=float, default=None,
                    help="with greenpatch on: fail a test that blocks the hub longer than this")


def _enabled(config: pytest.Config) -> bool:
    ns = config.known_args_namespace
    plugins = [p.strip() for p in (getattr(ns, "plugins", None) or [])]
    return bool(getattr(ns, "greenpatch", False)) or _PLUGIN_NAME in plugins


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    threshold = early_config.known_args_namespace.greenpatch_block_threshold
    if not _enabled(early_config):
        if threshold is not None:
            raise pytest.UsageError("--greenpatch-block-threshold needs --greenpatch "
                                    "(or -p greenpatch.contrib.pytest)")
        return
    if threshold is not None and not threshold > 0:
        raise pytest.UsageError(f"--greenpatch-block-threshold must be positive, not {threshold}")
    from greenpatch.patcher import monkey_patch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        done = monkey_patch()
    early_config.stash[_STATE] = {
        "patched": done,
        "warnings": [str(w.message) for w in caught],
        "threshold": threshold,
    }


def _state(config: pytest.Config) -> dict | None:
    return config.stash.get(_STATE, None)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = _state(config)
    if state is None:
        return None
    lines = [f"greenpatch: patched {', '.join(state['patched']) or 'nothing new'}"
             + (f"; block threshold {state['threshold']:g} s" if state["threshold"] else "")]
    lines.extend(text if text.startswith("greenpatch:") else f"greenpatch: {text}"
                 for text in state["warnings"])
    return lines


# -- per test -------------------------------------------------------------------------

def _live_green_threads() -> list[Any]:
    """Green threads alive now: threads started through the patched ``threading``/``_thread``
    (their registry) and ``greenpatch.spawn`` GreenThreads (found through gc)."""
    from greenpatch.greenthread import GreenThread

    green_thread = sys.modules.get("greenpatch.green._thread")
    alive = [glet for glet in getattr(green_thread, "_alive", {}).values() if not glet.dead]
    return alive + [obj for obj in gc.get_objects() if isinstance(obj, GreenThread) and not obj.ready()]


def _name(glet: Any) -> str:
    threading = sys.modules.get("threading")
    thread = threading._active.get(id(glet)) if threading is not None else None
    return repr(thread) if thread is not None else repr(glet)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    state = _state(item.config)
    if state is None:
        return
    from greenpatch.hub import get_hub
    get_hub()  # the watcher reads this hub; it must exist before the test blocks
    # Held, not just their ids: a thread that ends could hand its id to a new one.
    state["before"] = {id(t): t for t in _live_green_threads()}
    state["watcher"] = None
    if state["threshold"]:
        from greenpatch.debug import watch_blocking
        state["watcher"] = watch_blocking(state["threshold"], report_at_exit=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    state = _state(item.config)
    if state is None or call.when not in ("call", "teardown"):
        return
    report = outcome.get_result()
    if call.when == "call":
        watcher = state.pop("watcher", None)
        if watcher is None:
            return
        watcher.stop()
        if watcher.episodes and not report.failed:
            report.outcome = "failed"
            report.longrepr = _describe_blocking(item.nodeid, watcher)
        return
    before = state.pop("before", None)
    if before is None:
        return
    leaked = _settle(before)
    if leaked and not report.failed:
        report.outcome = "failed"
        report.longrepr = _describe_leaks(item.nodeid, leaked)
    from greenpatch.greenthread import GreenThread
    for thread in leaked:
        if isinstance(thread, GreenThread):  # threading.Thread has no kill: those are only reported
            try:
                thread.kill()
            except Exception:  # a thread that refuses to die is already reported
                pass


def _settle(before: dict[int, Any]) -> list[Any]:
    """The test's green threads still alive after letting the hub run up to ``LEAK_SETTLE`` s."""
    import greenpatch

    deadline = monotonic() + LEAK_SETTLE
    while True:
        leaked = [t for t in _live_green_threads() if id(t) not in before]
        if not leaked or monotonic() >= deadline:
            return leaked
        for _ in range(5):
            greenpatch.sleep(0)
        if not [t for t in _live_green_threads() if id(t) not in before]:
            return []
        greenpatch.sleep(0.01)


_PYTEST_FRAMES = (f"{os.sep}_pytest{os.sep}", f"{os.sep}pluggy{os.sep}", f"{os.sep}pytest{os.sep}__main__.py", "<frozen runpy>")


def _describe_blocking(nodeid: str, watcher: Any) -> str:
    """The watcher's call sites, each stack cut to the frames below pytest's own."""
    lines = [f"greenpatch: {nodeid} blocked the hub {watcher.episodes} time(s) for longer than "
             f"{watcher.threshold:g} s:"]
    for site in sorted(watcher.sites.values(), key=lambda site: site.total, reverse=True):
        lines.append(f"  {site.where}: {site.count} time(s), max {site.max:.3f} s; stack:")
        stack = list(site.stack)
        inner = [i for i, entry in enumerate(stack) if any(part in entry for part in _PYTEST_FRAMES)]
        for entry in stack[inner[-1] + 1 if inner and inner[-1] + 1 < len(stack) else 0:]:
            lines.append("      " + entry.rstrip("\n").replace("\n", "\n      "))
    return "\n".join(lines)


def _describe_leaks(nodeid: str, leaked: list[Any]) -> str:
    from greenpatch import debug

    lines = [f"greenpatch: {nodeid} leaked {len(leaked)} green thread(s) past its end "
             f"(still alive {LEAK_SETTLE:g} s after teardown):"]
    for thread in leaked:
        frame = thread.gr_frame
        if frame is None:
            lines.append(f"  {_name(thread)}: not started")
            continue
        lines.append(f"  {_name(thread)} waiting on {debug._describe_wait(frame)}")
        stack = traceback.extract_stack(frame, limit=64)
        outside = [entry for entry in stack if debug._outside(entry.filename)] or list(stack)
        for entry in traceback.StackSummary.from_list(outside[-8:]).format():
            lines.append("      " + entry.rstrip("\n").replace("\n", "\n      "))
    return "\n".join(lines)
