"""Debugging tools: the blocked-hub detector and run info.

Both read the hub from outside and add nothing to its loop:

* ``watch_blocking(threshold)`` starts a real OS thread that samples
  ``hub.turns`` and ``hub.polling`` every ``threshold / 2`` seconds.  A turn
  that has not ended after ``threshold`` seconds while the hub is not idle in
  the poller means one green thread runs without yielding (a blocking call
  that is not green, or a long computation); the watcher records the hub
  thread's stack once per such episode, keyed by the innermost call site
  outside greenpatch, in a bounded table.
* ``format_run_info()`` lists the green threads of a hub with their state,
  stack and what each waits on, read from their suspended frames.

Environment (read by ``install_from_env``, which ``monkey_patch()`` calls, so
``python -m greenpatch`` honours it too):

* ``GREENPATCH_BLOCK_THRESHOLD=0.1`` starts ``watch_blocking(0.1)``.
* ``GREENPATCH_DUMP_ON=SIGUSR1`` prints ``format_run_info(all_hubs=True)`` to
  stderr on that signal (any signal name or number).
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import signal
import sys
import traceback
from time import monotonic
from typing import Any, Iterator

from greenlet import getcurrent, greenlet

from greenpatch import hub as _hub
from greenpatch.patcher import original

__all__ = [
    "BlockingWatcher", "watch_blocking", "format_run_info", "run_info", "dump_on",
    "install_from_env",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside(filename: str) -> bool:
    return not filename.startswith(_PACKAGE_DIR)


# -- the blocked-hub detector ----------------------------------------------------

class _Site:
    """One call site that blocked the hub: how often, how long, and one sample stack."""

    __slots__ = ("where", "count", "max", "total", "stack")

    def __init__(self, where: str, stack: list[str]) -> None:
        self.where = where
        self.count = 0
        self.max = 0.0
        self.total = 0.0
        self.stack = stack


class BlockingWatcher:
    """Notices when the hub of one OS thread runs a turn longer than ``threshold``.

    Use ``watch_blocking()`` to start one.  The watcher is a real OS thread
    (started and paced with the original ``_thread`` functions, so it stays
    real under the patch); it costs one wakeup every ``threshold / 2`` seconds
    and a stack capture per blocking episode, and holds at most ``limit``
    call sites.
    """

    def __init__(self, threshold: float = 0.1, thread_ident: int | None = None,
                 limit: int = 100, report_at_exit: bool = True) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, not {threshold!r}")
        self.threshold = float(threshold)
        self.interval = self.threshold / 2
        self.thread_ident = _hub._main_thread_ident if thread_ident is None else thread_ident
        self.limit = limit
        self.sites: dict[str, _Site] = {}
        self.episodes = 0
        self.dropped = 0          # episodes whose call site did not fit in the table
        self.running = False
        self._stop = original("_thread", "allocate_lock")()
        self._stop.acquire()
        self._done = original("_thread", "allocate_lock")()
        self._report_at_exit = report_at_exit

    def start(self) -> "BlockingWatcher":
        if self.running:
            return self
        self.running = True
        self._done.acquire()
        _hub.own_threads += 1  # a waiting green thread cannot be woken by us: keep deadlock detection
        original("_thread", "start_new_thread")(self._run, ())
        if self._report_at_exit:
            atexit.register(self._at_exit)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watcher thread and wait (up to ``timeout``) until it has ended."""
        if not self.running:
            return
        self.running = False
        self._stop.release()
        if self._done.acquire(True, timeout):
            self._done.release()
        _hub.own_threads -= 1
        if self._report_at_exit:
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        self.stop()
        if self.sites:
            sys.stderr.write(self.summary())

    def _run(self) -> None:
        current_frames = sys._current_frames
        wait = self._stop.acquire
        interval, threshold = self.interval, self.threshold
        last_turn = -1
        turn_seen = monotonic()
        episode: _Site | None = None
        episode_start = 0.0
        now = turn_seen
        try:
            while not wait(True, interval):
                hub = _hub.hubs.get(self.thread_ident)
                if hub is None:
                    continue
                turn = hub.turns
                now = monotonic()
                if turn != last_turn or hub.polling:
                    if episode is not None:
                        self._close(episode, now - episode_start)
                        episode = None
                    last_turn = turn
                    turn_seen = now
                    continue
                if episode is None and now - turn_seen >= threshold:
                    frame = current_frames().get(hub.thread_ident)
                    if frame is None or hub.turns != turn or hub.polling:
                        continue
                    episode = self._site(traceback.extract_stack(frame, limit=64))
                    episode_start = turn_seen
                    del frame
            if episode is not None:
                self._close(episode, now - episode_start)
        finally:
            self._done.release()

    def _site(self, stack: traceback.StackSummary) -> _Site:
        outside = [entry for entry in stack if _outside(entry.filename)]
        last = (outside or stack)[-1]
        where = f"{last.filename}:{last.lineno} in {last.name}"
        site = self.sites.get(where)
        if site is None:
            if len(self.sites) >= self.limit:
                # Make room by forgetting the site that cost least so far.
                cheapest = min(self.sites.values(), key=lambda s: s.total)
                del self.sites[cheapest.where]
                self.dropped += cheapest.count
            site = self.sites[where] = _Site(where, stack.format())
        return site

    def _close(self, site: _Site, duration: float) -> None:
        self.episodes += 1
        site.count += 1
        site.total += duration
        if duration > site.max:
            site.max = duration

    def summary(self, top: int = 10) -> str:
        """The worst call sites so far (by total blocked time), as text; empty if none."""
        sites = sorted(self.sites.values(), key=lambda s: s.total, reverse=True)
        if not sites:
            return ""
        total = sum(s.total for s in sites)
        lines = [f"greenpatch: the hub was blocked {self.episodes} time(s) for longer than "
                 f"{self.threshold:g} s, {total:.3f} s in all; worst call sites:\n"]
        for site in sites[:top]:
            lines.append(f"  {site.where}: {site.count} time(s), max {site.max:.3f} s, "
                         f"total {site.total:.3f} s; stack when first seen:\n")
            lines.extend("      " + line.rstrip("\n").replace("\n", "\n      ") + "\n" for line in site.stack)
        if len(sites) > top:
            lines.append(f"  ... and {len(sites) - top} more call site(s)\n")
        if self.dropped:
            lines.append(f"  ({self.dropped} episode(s) at call sites dropped from the bounded table)\n")
        return "".join(lines)

    def __enter__(self) -> "BlockingWatcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def watch_blocking(threshold: float = 0.1, thread_ident: int | None = None,
                   limit: int = 100, report_at_exit: bool = True) -> BlockingWatcher:
    """Start a blocked-hub detector for the main thread's hub (or ``thread_ident``'s).

    Returns the running ``BlockingWatcher``: ``summary()`` gives the worst
    call sites so far, ``stop()`` ends it.  While it runs, the summary is
    printed to stderr at interpreter exit if anything blocked.
    """
    return BlockingWatcher(threshold, thread_ident, limit, report_at_exit).start()


# -- run info ------------------------------------------------------------------------

def _describe_wait(frame: Any) -> str:
    """What a suspended green thread waits on, read from its frames (innermost first)."""
    from greenpatch import greenthread

    codes = {
        _hub.Hub.wait_fd.__code__: "wait_fd",
        _hub.Hub.wait_fds.__code__: "wait_fds",
        _hub.park.__code__: "park",
        greenthread.sleep.__code__: "sleep",
    }
    f = frame
    while f is not None:
        kind = codes.get(f.f_code)
        if kind is not None:
            return _describe_frame(kind, f)
        f = f.f_back
    return "the hub (switched away directly)"


def _deadline(timer: Any) -> str:
    if timer is None or getattr(timer, "callback", None) is None:
        return ""
    return f" (timer due in {timer.deadline - monotonic():.3f} s)"


def _describe_frame(kind: str, f: Any) -> str:
    local = f.f_locals
    if kind == "wait_fd":
        direction = "read" if local.get("direction") == _hub.READ else "write"
        text = f"fd {local.get('fd')} for {direction}"
        owner = _caller_self(f, skip=(_hub.Hub,))
        if owner is not None:
            text += f" on {_safe_repr(owner)}"
        return text + _deadline(local.get("timer"))
    if kind == "wait_fds":
        reads, writes = local.get("reads"), local.get("writes")
        return (f"fds read={_safe_repr(_as_list(reads))} write={_safe_repr(_as_list(writes))}"
                + _deadline(local.get("timer")))
    if kind == "park":
        owner = _caller_self(f)
        if owner is None:
            ready = local.get("ready")
            if isinstance(ready, functools.partial):
                ready = ready.func
            owner = getattr(ready, "__self__", ready)
        text = f"{type(owner).__name__} {_safe_repr(owner)}"
        threading = sys.modules.get("threading")
        outer = _caller_self(f, skip=(type(owner),), depth=3, with_frame=True)
        if outer is not None and outer[0] is not owner and not (
                threading is not None and isinstance(outer[0], threading.Thread)):
            text += f" in {type(outer[0]).__name__}.{outer[1].f_code.co_name}() of {_safe_repr(outer[0])}"
        return text + _deadline(local.get("timer"))
    timer = local.get("timer")
    if timer is not None:
        return f"sleep until {timer.deadline:.3f} (in {timer.deadline - monotonic():.3f} s)"
    return "sleep(0)"


def _caller_self(f: Any, skip: tuple = (), depth: int = 4, with_frame: bool = False) -> Any:
    """The ``self`` of the nearest caller frame of ``f`` that is a method of something else."""
    f = f.f_back
    for _ in range(depth):
        if f is None:
            return None
        owner = f.f_locals.get("self")
        if owner is not None and not isinstance(owner, skip) and not isinstance(owner, greenlet):
            return (owner, f) if with_frame else owner
        f = f.f_back
    return None


def _as_list(fds: Any) -> Any:
    return list(fds) if isinstance(fds, (list, tuple, set, frozenset)) else fds


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception as exc:  # a half-closed object may fail to describe itself
        text = f"<{type(obj).__name__} (repr failed: {exc!r})>"
    return text if len(text) <= 200 else text[:197] + "..."


def _thread_name(glet: greenlet, hub: Any) -> str:
    threading = sys.modules.get("threading")
    ident = hub.thread_ident if glet is hub.main else id(glet)
    thread = threading._active.get(ident) if threading is not None else None
    if thread is not None and not (isinstance(thread, threading._DummyThread) and hasattr(glet, "_func")):
        return thread.name
    if glet is hub.main:
        return "main greenlet"
    name = getattr(glet, "name", None)
    return name if isinstance(name, str) else repr(glet)


def _is_ready(glet: greenlet, hub: Any) -> bool:
    for item in tuple(hub._ready):
        if item is glet:
            return True
        if type(item) is tuple and getattr(item[0], "__self__", None) is glet:
            return True
    return False


def _greenlets(hub: Any) -> Iterator[greenlet]:
    yield hub.main
    for obj in gc.get_objects():
        if isinstance(obj, greenlet) and obj is not hub and obj is not hub.main \
                and not obj.dead and _hub.belongs_to(obj, hub):
            yield obj


def run_info(all_hubs: bool = False) -> list[dict[str, Any]]:
    """The data ``format_run_info`` prints: one dict per hub, with its green threads."""
    current_hub = _hub.peek_hub()
    if all_hubs:
        hubs = list(_hub.hubs.values())
    else:
        hubs = [current_hub] if current_hub is not None else []
    frames = sys._current_frames()
    me = getcurrent()
    result = []
    for hub in hubs:
        threads = []
        for glet in _greenlets(hub):
            if glet is me:
                state, frame = "running", sys._getframe(1)
            elif not glet and glet is not hub.main:
                state, frame = "not started", None
            elif glet.gr_frame is None:
                # Started and alive but without a suspended frame: it is the
                # greenlet running in that hub's OS thread right now.
                state, frame = "running", frames.get(hub.thread_ident)
            else:
                frame = glet.gr_frame
                state = "ready" if _is_ready(glet, hub) else "waiting"
            stack = [] if frame is None else traceback.extract_stack(frame, limit=64)
            outside = traceback.StackSummary.from_list(
                [entry for entry in stack if _outside(entry.filename)])
            waits = _describe_wait(frame) if state in ("waiting", "ready") and frame is not None else None
            threads.append({
                "name": _thread_name(glet, hub),
                "state": state,
                "waits_on": waits,
                "stack": (outside or stack).format() if stack else [],
            })
        result.append({"thread_ident": hub.thread_ident, "counts": hub.counts(),
                       "turns": hub.turns, "polling": hub.polling, "threads": threads})
    return result


def format_run_info(all_hubs: bool = False, stack_depth: int = 8) -> str:
    """Every green thread of the calling thread's hub (or of all hubs): name, state, stack, wait."""
    out = []
    for info in run_info(all_hubs):
        counts = ", ".join(f"{key} {value}" for key, value in info["counts"].items())
        out.append(f"hub of OS thread {info['thread_ident']}: {len(info['threads'])} green thread(s); "
                   f"{counts}; turns {info['turns']}{', polling' if info['polling'] else ''}\n")
        for thread in info["threads"]:
            line = f"  {thread['name']} [{thread['state']}]"
            if thread["waits_on"]:
                line += f" waiting on {thread['waits_on']}"
            out.append(line + "\n")
            for entry in thread["stack"][-stack_depth:]:
                out.append("      " + entry.rstrip("\n").replace("\n", "\n      ") + "\n")
    if not out:
        out.append("greenpatch: no hub in this thread\n")
    return "".join(out)


def dump_on(signum: int | str) -> None:
    """Print ``format_run_info(all_hubs=True)`` to stderr whenever ``signum`` arrives."""
    if isinstance(signum, str):
        name = signum.upper()
        signum = int(name) if name.isdigit() else getattr(signal, name if name.startswith("SIG") else "SIG" + name)
    signal.signal(signum, _dump_handler)


def _dump_handler(signum: int, frame: Any) -> None:
    try:
        sys.stderr.write(f"greenpatch: run info on signal {signum}\n" + format_run_info(all_hubs=True))
        sys.stderr.flush()
    except Exception:
        pass


_env_watcher: BlockingWatcher | None = None


def install_from_env() -> None:
    """Honour ``GREENPATCH_BLOCK_THRESHOLD`` and ``GREENPATCH_DUMP_ON`` (once per process)."""
    global _env_watcher
    threshold = os.environ.get("GREENPATCH_BLOCK_THRESHOLD")
    if threshold and _env_watcher is None:
        _env_watcher = watch_blocking(float(threshold))
    dump = os.environ.get("GREENPATCH_DUMP_ON")
    if dump:
        dump_on(dump)
