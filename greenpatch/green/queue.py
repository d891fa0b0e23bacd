"""Green ``queue``: the queue classes become ``greenpatch.queue``'s.

``Queue``, ``LifoQueue`` and ``PriorityQueue`` keep the standard interface
(mutex, conditions, the ``_init``/``_qsize``/``_put``/``_get`` hooks) on green
primitives; ``SimpleQueue`` replaces the C one, which would block the OS
thread.  ``_queue.SimpleQueue`` is swapped too, so ``from _queue import
SimpleQueue`` and a re-imported ``queue`` are green as well.  ``Empty``,
``Full`` and ``ShutDown`` stay the standard library's classes.
"""

from __future__ import annotations

import sys
from typing import Any

from greenpatch.queue import LifoQueue, PriorityQueue, Queue, SimpleQueue

__implements__ = ["Queue", "LifoQueue", "PriorityQueue", "SimpleQueue"]


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import queue
    return getattr(queue, name)


def __dir__() -> list[str]:
    import queue
    return sorted(set(globals()) | {name for name in dir(queue) if not name.startswith("_")})


def __after_patch__(queue: Any) -> None:
    """Swap ``_queue.SimpleQueue`` too, now and whenever ``_queue`` is imported afresh.

    ``test.support.import_fresh_module("queue", fresh=["_queue"])`` and the
    like load a new ``_queue`` whose C SimpleQueue would block the OS thread
    (it hangs gevent and eventlet); a finder at the head of ``sys.meta_path``
    makes such a module green as it is executed.  The original is recorded
    for ``patcher.original("_queue", "SimpleQueue")``.
    """
    c_queue = sys.modules.get("_queue")
    if c_queue is None:
        try:
            import _queue as c_queue
        except ImportError:
            return
    from greenpatch import patcher
    patcher.record_original("_queue", "SimpleQueue", c_queue.SimpleQueue)
    c_queue.SimpleQueue = SimpleQueue
    if _GreenQueueFinder not in sys.meta_path:
        sys.meta_path.insert(0, _GreenQueueFinder)


class _GreenQueueFinder:
    """Finds ``_queue`` through the other finders and makes its SimpleQueue green once executed."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "_queue":
            return None
        for finder in sys.meta_path:
            if finder is cls or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _GreenQueueLoader(spec.loader)
                return spec
        return None


class _GreenQueueLoader:
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self.loader.exec_module(module)
        empty = getattr(module, "Empty", None)
        if empty is None or empty is SimpleQueue._Empty:
            module.SimpleQueue = SimpleQueue
        else:  # a new module has a new Empty class: raise that one
            module.SimpleQueue = type("SimpleQueue", (SimpleQueue,), {
                "__slots__": (), "_Empty": empty, "__module__": SimpleQueue.__module__,
                "__doc__": SimpleQueue.__doc__})
