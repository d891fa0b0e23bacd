"""Microbenchmarks of one system, one API, one benchmark per process.

    python benchmarks/micro.py SYSTEM API BENCH [--quick]

SYSTEM is greenpatch, gevent, eventlet or threads; API is ``patched`` (the
stdlib names after the system's monkey-patch: threading, time, queue, socket)
or ``native`` (the library's own spawn/sleep/Event/Queue/timers).  Prints one
JSON object: {"status": "ok", "value": <microseconds per operation>, ...} or
{"status": "n/a", "reason": ...} when the system cannot run the case (or the
piece it needs is not written yet).  run.py runs every cell in its own
process, so one crash or hang costs one cell.

The patch is applied before anything else is imported, as a user would.
"""

import sys

SYSTEM, API, BENCH = sys.argv[1:4]
QUICK = "--quick" in sys.argv[4:]


def emit(**fields):
    fields.setdefault("status", "ok")
    fields.update(system=SYSTEM, api=API, bench=BENCH)
    print("MICRO " + __import__("json").dumps(fields), flush=True)


def not_available(reason):
    emit(status="n/a", reason=reason)
    sys.exit(0)


# -- patching, before any other import ----------------------------------------

NEEDS = {  # greenpatch flags each patched benchmark needs, for a partial patch
    "spawn_join": ("thread", "time"),
    "sleep0": ("thread", "time"),
    "event": ("thread", "time"),
    "queue": ("thread", "time", "queue"),
    "socketpair": ("thread", "time", "socket"),
    "sleepers": ("thread", "time"),
    "timers": ("thread", "time"),
}
patch_note = ""
if API == "patched":
    if SYSTEM == "greenpatch":
        import greenpatch
        monkey_patch = getattr(greenpatch, "monkey_patch", None)
        if monkey_patch is None:
            from greenpatch.patcher import monkey_patch
        try:
            monkey_patch()
        except Exception as exc:  # a green module not written yet: patch only what this case needs
            try:
                monkey_patch(**{flag: True for flag in NEEDS[BENCH]})
                patch_note = f"partial patch ({', '.join(NEEDS[BENCH])}): full patch failed: {exc!r}"
            except Exception as exc2:
                not_available(f"greenpatch.monkey_patch() failed: {exc2!r}")
    elif SYSTEM == "gevent":
        from gevent import monkey
        monkey.patch_all()
    elif SYSTEM == "eventlet":
        import warnings
        warnings.simplefilter("ignore")
        import eventlet
        eventlet.monkey_patch()
    elif SYSTEM != "threads":
        not_available(f"unknown system {SYSTEM}")
elif API == "native":
    if SYSTEM == "threads":
        not_available("plain threads have no native API besides the stdlib (see the patched row)")
    if SYSTEM == "eventlet":
        import warnings
        warnings.simplefilter("ignore")
else:
    not_available(f"unknown api {API}")

import queue  # noqa: E402
import random  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from time import perf_counter  # noqa: E402


# -- the seven operations, behind one small adapter per (system, api) ---------

class Api:
    """What a benchmark needs; the patched adapter is the stdlib itself."""

    is_real_threads = False

    def spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        return t

    def join(self, t):
        t.join()

    def sleep(self, seconds):
        time.sleep(seconds)

    def event(self):
        """Returns (set, wait, clear) of a fresh event."""
        e = threading.Event()
        return e.set, e.wait, e.clear

    def queue(self):
        return queue.Queue()

    def socketpair(self):
        return socket.socketpair()

    def timers(self, n):
        """Start n pending timers (100 s away), cancel them all; returns when done."""
        ts = [threading.Timer(100.0, _noop) for _ in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.cancel()
        for t in ts:
            t.join()


def _noop():
    pass


class GreenpatchNative(Api):
    def __init__(self):
        import greenpatch
        self.gp = greenpatch
        self._spawn, self._sleep = greenpatch.spawn, greenpatch.sleep

    def spawn(self, fn, *args):
        return self._spawn(fn, *args)

    def join(self, t):
        t.join()

    def sleep(self, seconds):
        self._sleep(seconds)

    def event(self):
        try:
            from greenpatch.event import Event
        except ImportError:
            not_available("greenpatch.event.Event is not written yet")
        e = Event()
        return e.set, e.wait, e.clear

    def queue(self):
        try:
            from greenpatch.queue import Queue
        except ImportError:
            not_available("greenpatch.queue.Queue is not written yet")
        return Queue()

    def socketpair(self):
        try:
            from greenpatch.green.socket import socketpair
        except ImportError:
            not_available("greenpatch.green.socket is not written yet")
        return socketpair()

    def timers(self, n):
        hub = self.gp.get_hub()
        call_later = hub.call_later
        ts = [call_later(100.0, _noop) for _ in range(n)]
        for t in ts:
            t.cancel()
        self._sleep(0)  # one hub turn, so lazy cancellation gets its chance


class GeventNative(Api):
    def __init__(self):
        import gevent
        import gevent.event
        import gevent.queue
        import gevent.socket
        self.gevent = gevent
        self._spawn, self._sleep = gevent.spawn, gevent.sleep

    def spawn(self, fn, *args):
        return self._spawn(fn, *args)

    def join(self, t):
        t.join()

    def sleep(self, seconds):
        self._sleep(seconds)

    def event(self):
        e = self.gevent.event.Event()
        return e.set, e.wait, e.clear

    def queue(self):
        return self.gevent.queue.Queue()

    def socketpair(self):
        return self.gevent.socket.socketpair()

    def timers(self, n):
        loop = self.gevent.get_hub().loop
        ts = [loop.timer(100.0) for _ in range(n)]
        for t in ts:
            t.start(_noop)
        for t in ts:
            t.stop()
            t.close()
        self._sleep(0)


class EventletNative(Api):
    def __init__(self):
        import eventlet
        import eventlet.event
        import eventlet.green.socket
        import eventlet.hubs
        import eventlet.queue
        self.eventlet = eventlet
        self._spawn, self._sleep = eventlet.spawn, eventlet.sleep

    def spawn(self, fn, *args):
        return self._spawn(fn, *args)

    def join(self, t):
        t.wait()

    def sleep(self, seconds):
        self._sleep(seconds)

    def event(self):
        e = self.eventlet.event.Event()   # one-shot: send(), then reset() before the next send()
        return e.send, e.wait, e.reset

    def queue(self):
        return self.eventlet.queue.Queue()

    def socketpair(self):
        return self.eventlet.green.socket.socketpair()

    def timers(self, n):
        hub = self.eventlet.hubs.get_hub()
        schedule = hub.schedule_call_global
        ts = [schedule(100.0, _noop) for _ in range(n)]
        for t in ts:
            t.cancel()
        self._sleep(0)


def make_api():
    if API == "patched":
        api = Api()
        api.is_real_threads = SYSTEM == "threads"
        return api
    return {"greenpatch": GreenpatchNative, "gevent": GeventNative, "eventlet": EventletNative}[SYSTEM]()


# -- benchmarks: each returns (microseconds per operation, extra fields) ------

def scaled(n_green, n_real):
    """Operation count: smaller for real OS threads (far slower per op), smaller again with --quick."""
    n = n_real if api.is_real_threads else n_green
    return max(1, n // 5) if QUICK else n


def bench_spawn_join():
    n = scaled(100_000, 10_000)
    t0 = perf_counter()
    ts = [api.spawn(_noop) for _ in range(n)]
    for t in ts:
        api.join(t)
    return (perf_counter() - t0) * 1e6 / n, {"n": n}


def bench_sleep0():
    n = scaled(200_000, 100_000)
    half = n // 2

    def loop():
        sleep = api.sleep
        for _ in range(half):
            sleep(0)

    t0 = perf_counter()
    other = api.spawn(loop)
    loop()
    api.join(other)
    return (perf_counter() - t0) * 1e6 / (2 * half), {"n": 2 * half}


def bench_event():
    n = scaled(50_000, 10_000)
    a_set, a_wait, a_clear = api.event()
    b_set, b_wait, b_clear = api.event()

    def responder():
        for _ in range(n):
            a_wait()
            a_clear()
            b_set()

    t0 = perf_counter()
    other = api.spawn(responder)
    for _ in range(n):
        a_set()
        b_wait()
        b_clear()
    api.join(other)
    return (perf_counter() - t0) * 1e6 / n, {"n": n, "unit": "us per round trip"}


def bench_queue():
    n = scaled(50_000, 10_000)
    q1, q2 = api.queue(), api.queue()

    def responder():
        get, put = q1.get, q2.put
        for _ in range(n):
            put(get())

    t0 = perf_counter()
    other = api.spawn(responder)
    put, get = q1.put, q2.get
    for i in range(n):
        put(i)
        get()
    api.join(other)
    return (perf_counter() - t0) * 1e6 / n, {"n": n, "unit": "us per round trip"}


def bench_socketpair():
    n = scaled(50_000, 20_000)
    a, b = api.socketpair()

    def responder():
        recv, send = b.recv, b.send
        for _ in range(n):
            send(recv(1))

    t0 = perf_counter()
    other = api.spawn(responder)
    recv, send = a.recv, a.send
    for _ in range(n):
        send(b"x")
        recv(1)
    api.join(other)
    a.close()
    b.close()
    return (perf_counter() - t0) * 1e6 / n, {"n": n, "unit": "us per round trip"}


def bench_sleepers():
    # 10k real OS threads pinned to one core collapse into a GIL convoy (seconds of
    # lateness, thousands of runnable threads): plain threads get 1k.
    n = 1_000 if api.is_real_threads else 10_000 if not QUICK else 5_000
    rng = random.Random(42)
    delays = [rng.random() for _ in range(n)]
    late = []

    def sleeper(delay):
        deadline = time.monotonic() + delay
        api.sleep(delay)
        late.append(time.monotonic() - deadline)

    t0 = perf_counter()
    ts = [api.spawn(sleeper, d) for d in delays]
    for t in ts:
        api.join(t)
    wall = perf_counter() - t0
    mean_ms = sum(late) / len(late) * 1e3
    return mean_ms * 1e3, {"n": n, "unit": "us mean lateness", "mean_late_ms": round(mean_ms, 3),
                           "max_late_ms": round(max(late) * 1e3, 3), "wall_s": round(wall, 3)}


def bench_timers():
    # threading.Timer is a whole thread; CPython's Thread.start() also walks every live
    # thread's shutdown lock, so the patched API is quadratic: fewer timers there.
    n = scaled(100_000, 2_000) if API == "native" else scaled(5_000, 2_000)
    t0 = perf_counter()
    api.timers(n)
    return (perf_counter() - t0) * 1e6 / n, {"n": n, "unit": "us per timer (start+cancel)"}


BENCHES = {
    "spawn_join": bench_spawn_join, "sleep0": bench_sleep0, "event": bench_event, "queue": bench_queue,
    "socketpair": bench_socketpair, "sleepers": bench_sleepers, "timers": bench_timers,
}

if __name__ == "__main__":
    if BENCH not in BENCHES:
        not_available(f"unknown benchmark {BENCH}")
    api = make_api()
    value, extra = BENCHES[BENCH]()
    if patch_note:
        extra["note"] = patch_note
    emit(value=round(value, 4), **extra)
