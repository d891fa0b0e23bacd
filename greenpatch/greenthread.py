"""Green threads: spawn, sleep, join, kill, link."""

from __future__ import annotations

import sys
from itertools import count
from typing import Any, Callable, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

from greenpatch.hub import BlockingInHubError, get_hub, park, switch_out, wake_all

__all__ = [
    "GreenThread", "spawn", "spawn_n", "spawn_after", "sleep", "getcurrent", "kill",
    "GreenletExit", "report_exception",
]

T = TypeVar("T")
_counter = count(1).__next__
_NOT_DONE = object()


class GreenThread(greenlet):
    """A function running in its own green thread; ``wait()`` returns its result.

    An exception escaping the function is reported through
    ``threading.excepthook`` (as an uncaught exception in a thread is) and
    re-raised by ``wait()``; it never reaches the hub.
    """

    def __init__(self, func: Callable[..., Any], args: tuple = (), kwargs: dict | None = None,
                 name: str | None = None) -> None:
        hub = get_hub()
        super().__init__(parent=hub)
        self.hub = hub
        self.name = name or f"GreenThread-{_counter()}"
        self._func = func
        self._args = args
        self._kwargs = kwargs or {}
        self._result: Any = _NOT_DONE
        self._exception: BaseException | None = None
        self._joiners: list = []
        self._links: list = []
        self._start_timer = None

    def __repr__(self) -> str:
        state = "done" if self.ready() else "running" if self else "pending"
        return f"<GreenThread {self.name} {state}>"

    def run(self) -> None:
        func, args, kwargs = self._func, self._args, self._kwargs
        self._func = self._args = self._kwargs = None
        try:
            self._result = func(*args, **kwargs)
        except GreenletExit as exc:
            self._result = exc
        except SystemExit as exc:
            self._result = None
            self._exception = exc
        except BaseException as exc:
            self._exception = exc
            self._result = None
            if isinstance(exc, KeyboardInterrupt):
                self.hub.schedule(self.hub._to_main, exc)
            else:
                report_exception(exc, self)
        finally:
            del func, args, kwargs
            self._finish()

    def _start(self) -> None:
        if not self.ready():
            self.switch()

    def _finish(self) -> None:
        if self._result is _NOT_DONE:
            self._result = None
        wake_all(self._joiners)
        links, self._links = self._links, []
        for callback, args, kwargs in links:
            try:
                callback(self, *args, **kwargs)
            except BaseException as exc:
                report_exception(exc, self)

    # -- state -------------------------------------------------------------

    def ready(self) -> bool:
        """True once the function has returned, raised, or was killed."""
        return self._result is not _NOT_DONE

    def successful(self) -> bool:
        return self.ready() and self._exception is None

    @property
    def exception(self) -> BaseException | None:
        return self._exception

    # -- waiting -------------------------------------------------------------

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the green thread ends; False if ``timeout`` passed first."""
        if self.ready():
            return True
        return park(self._joiners, self.ready, timeout)

    def wait(self) -> Any:
        """Wait for the green thread and return its result, or raise its exception."""
        self.join()
        if self._exception is not None and not isinstance(self._exception, SystemExit):
            raise self._exception
        return self._result

    def link(self, callback: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``callback(self, *args, **kwargs)`` when the green thread ends."""
        if self.ready():
            callback(self, *args, **kwargs)
        else:
            self._links.append((callback, args, kwargs))

    def unlink(self, callback: Callable[..., Any]) -> bool:
        for entry in self._links:
            if entry[0] == callback:
                self._links.remove(entry)
                return True
        return False

    # -- killing ---------------------------------------------------------------

    def kill(self, exception: type[BaseException] | BaseException = GreenletExit,
             block: bool = True, timeout: float | None = None) -> None:
        """Raise ``exception`` in the green thread; by default wait until it ends.

        A green thread that has not started yet never runs.
        """
        if self.ready():
            return
        if not self:  # not started: it will never run, but joiners must learn it ended
            if self._start_timer is not None:
                self._start_timer.cancel()
            self._result = GreenletExit() if exception is GreenletExit else None
            self._func = self._args = self._kwargs = None
            self.hub.schedule(self._finish)
            return
        if getcurrent() is self:
            raise exception if isinstance(exception, BaseException) else exception()
        self.hub.schedule(_throw_if_alive, self, exception)
        if block:
            self.join(timeout)

    def cancel(self) -> None:
        """Kill the green thread only if it has not started."""
        if not self:
            self.kill()


def _throw_if_alive(glet: greenlet, exception: Any) -> None:
    if not glet.dead:
        glet.throw(exception)


def report_exception(exc: BaseException, thread: Any = None) -> None:
    """Report an uncaught exception the way ``threading`` reports one from a thread."""
    import threading

    hook = getattr(threading, "excepthook", None)
    args = threading.ExceptHookArgs([type(exc), exc, exc.__traceback__, thread])
    try:
        hook(args)
    except BaseException:
        sys.stderr.write(f"Exception in {getattr(thread, 'name', thread)} (and in threading.excepthook):\n")
        import traceback
        traceback.print_exception(type(exc), exc, exc.__traceback__)


def spawn(func: Callable[..., T], *args: Any, **kwargs: Any) -> GreenThread:
    """Start ``func(*args, **kwargs)`` in a new green thread on the hub's next turn."""
    thread = GreenThread(func, args, kwargs)
    thread.hub.schedule(thread._start)
    return thread


def spawn_n(func: Callable[..., Any], *args: Any, **kwargs: Any) -> GreenThread:
    """Like ``spawn``; kept for eventlet users (the result is simply not waited on)."""
    return spawn(func, *args, **kwargs)


def spawn_after(seconds: float, func: Callable[..., T], *args: Any, **kwargs: Any) -> GreenThread:
    """Start ``func(*args, **kwargs)`` in a new green thread after ``seconds``."""
    thread = GreenThread(func, args, kwargs)
    thread._start_timer = thread.hub.call_later(seconds, thread._start)
    return thread


def kill(thread: GreenThread, exception: type[BaseException] | BaseException = GreenletExit) -> None:
    thread.kill(exception)


def sleep(seconds: float = 0) -> None:
    """Yield to other green threads for ``seconds`` (0: go to the back of the ready queue)."""
    hub = get_hub()
    current = getcurrent()
    if current is hub:
        raise BlockingInHubError("cannot sleep inside the hub (a callback or timer)")
    if seconds <= 0:
        hub._ready.append(current)
        switch_out(hub)
        return
    timer = hub.call_later(seconds, current.switch)
    try:
        while timer.pending:
            switch_out(hub)
    finally:
        timer.cancel()
