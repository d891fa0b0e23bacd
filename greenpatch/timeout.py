"""Timeout: raise an exception in the current green thread after a delay."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from greenlet import getcurrent

from greenpatch.hub import get_hub

__all__ = ["Timeout", "with_timeout"]

T = TypeVar("T")
_NONE = object()


class Timeout(BaseException):
    """Raises in the green thread that created it once ``seconds`` pass.

    Use it as a context manager (``with Timeout(2): ...``) or start and
    ``cancel()`` it by hand.  ``exception`` chooses what is raised: ``None``
    raises this Timeout, a class or instance raises that, and ``False`` raises
    this Timeout but the ``with`` block swallows it.  It derives from
    BaseException so that ``except Exception`` in the guarded code does not
    swallow it.  ``seconds=None`` never fires.
    """

    def __init__(self, seconds: float | None = None, exception: Any = None) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.exception = exception
        self._timer = None
        self.start()

    def start(self) -> "Timeout":
        """(Re)arm the timeout for the calling green thread."""
        self.cancel()
        if self.seconds is not None:
            self._timer = get_hub().call_later(self.seconds, self._fire, getcurrent())
        return self

    def _fire(self, glet: Any) -> None:
        if glet.dead:
            return
        exc = self.exception
        if exc is None or exc is False:
            glet.throw(self)
        elif isinstance(exc, BaseException):
            glet.throw(exc)
        else:
            glet.throw(exc())

    @property
    def pending(self) -> bool:
        return self._timer is not None and self._timer.pending

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self) -> "Timeout":
        if not self.pending:
            self.start()
        return self

    def __exit__(self, typ: Any, value: Any, tb: Any) -> bool:
        self.cancel()
        return value is self and self.exception is False

    def __str__(self) -> str:
        if self.seconds is None:
            return ""
        suffix = "" if self.seconds == 1 else "s"
        return f"{self.seconds} second{suffix}"

    def __repr__(self) -> str:
        state = " pending" if self.pending else ""
        return f"<Timeout seconds={self.seconds!r}{state}>"


def with_timeout(seconds: float, func: Callable[..., T], *args: Any,
                 timeout_value: Any = _NONE, **kwargs: Any) -> T:
    """Call ``func(*args, **kwargs)``; after ``seconds`` raise Timeout, or return ``timeout_value`` if given."""
    timeout = Timeout(seconds)
    try:
        return func(*args, **kwargs)
    except Timeout as exc:
        if exc is timeout and timeout_value is not _NONE:
            return timeout_value
        raise
    finally:
        timeout.cancel()
