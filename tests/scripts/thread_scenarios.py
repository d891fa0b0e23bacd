# Scenarios for the patched threading/_thread/queue, run in a subprocess by
# tests/test_threading.py and tests/test_queue.py (the pytest process itself is
# never patched).  Usage: thread_scenarios.py NAME...   For each name it prints
# "@@ NAME ok" or "@@ NAME FAIL" followed by the traceback.
import greenpatch

greenpatch.monkey_patch()

import _thread  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import greenpatch.event  # noqa: E402
import greenpatch.locks  # noqa: E402
import greenpatch.queue  # noqa: E402

SCENARIOS = {}


def scenario(func):
    SCENARIOS[func.__name__] = func
    return func


def start(target, *args, **kwargs):
    thread = threading.Thread(target=target, args=args, kwargs=kwargs)
    thread.start()
    return thread


def os_threads():
    return len(os.listdir("/proc/self/task"))


# -- what the patch swaps -------------------------------------------------------------

@scenario
def names_are_green():
    assert isinstance(threading.Lock(), greenpatch.locks.Lock)
    assert isinstance(_thread.allocate_lock(), greenpatch.locks.Lock)
    assert isinstance(threading.RLock(), greenpatch.locks.RLock)
    assert threading.Condition is greenpatch.locks.Condition
    assert threading.Event is greenpatch.event.Event
    assert queue.Queue is greenpatch.queue.Queue and queue.SimpleQueue is greenpatch.queue.SimpleQueue
    import _queue
    assert _queue.SimpleQueue is greenpatch.queue.SimpleQueue
    assert queue.Empty is _queue.Empty
    # the stdlib aliases greenpatch's own imports took are rebound too
    import functools
    import reprlib
    assert functools.RLock is greenpatch.locks.RLock and reprlib.get_ident is threading.get_ident


# -- Thread ---------------------------------------------------------------------------------

@scenario
def two_hundred_threads_sleep_concurrently_in_one_os_thread():
    counts = []

    def sleeper():
        counts.append(os_threads())
        time.sleep(0.2)

    begin = time.monotonic()
    threads = [start(sleeper) for _ in range(200)]
    assert threading.active_count() == 201
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begin
    assert 0.2 <= elapsed < 10, elapsed  # 200 real sequential sleeps would take 40 s
    assert set(counts) == {1}, counts
    assert os_threads() == 1


@scenario
def thread_identity_and_introspection():
    main = threading.main_thread()
    assert threading.current_thread() is main and main.name == "MainThread"
    assert main.ident == threading.get_ident() == _thread.get_ident()
    seen = {}
    release = threading.Event()

    def worker(key):
        me = threading.current_thread()
        seen[key] = (me.name, me.ident, threading.get_ident(), me.native_id, threading.get_native_id())
        release.wait()

    threads = [threading.Thread(target=worker, args=(n,), name=f"worker-{n}") for n in range(3)]
    for thread in threads:
        thread.start()
    assert all(t.is_alive() for t in threads)
    assert set(threads) <= set(threading.enumerate()) and main in threading.enumerate()
    assert threading.active_count() == 4
    idents = {seen[n][1] for n in range(3)}
    assert len(idents) == 3 and main.ident not in idents
    for n, thread in enumerate(threads):
        name, ident, get_ident, native_id, get_native_id = seen[n]
        assert name == f"worker-{n}" and ident == get_ident == thread.ident
        assert native_id == get_native_id == main.native_id  # one OS thread
    release.set()
    for thread in threads:
        thread.join()
    assert threading.active_count() == 1 and threading.enumerate() == [main]
    assert not any(t.is_alive() for t in threads)
    assert "stopped" in repr(threads[0])


@scenario
def join_with_timeout_and_is_alive():
    stop = threading.Event()
    thread = start(stop.wait)
    begin = time.monotonic()
    thread.join(0.05)
    assert time.monotonic() - begin >= 0.045
    assert thread.is_alive()
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    try:
        threading.current_thread().join()
    except RuntimeError as exc:
        assert "cannot join current thread" in str(exc)
    else:
        raise AssertionError("joining the current thread must raise")


@scenario
def a_green_thread_can_join_the_main_thread_with_a_timeout():
    result = []

    def joiner():
        threading.main_thread().join(0.05)
        result.append(threading.main_thread().is_alive())

    start(joiner).join()
    assert result == [True]


@scenario
def excepthook_gets_the_uncaught_exception():
    seen = []
    old = threading.excepthook
    threading.excepthook = seen.append
    try:
        thread = threading.Thread(target=lambda: 1 / 0, name="boom")
        thread.start()
        thread.join()
    finally:
        threading.excepthook = old
    assert len(seen) == 1
    args = seen[0]
    assert args.exc_type is ZeroDivisionError and isinstance(args.exc_value, ZeroDivisionError)
    assert args.exc_traceback is not None and args.thread is thread


@scenario
def settrace_and_setprofile_apply_to_new_threads():
    traced, profiled = set(), set()

    def tracer(frame, event, arg):
        traced.add(frame.f_code.co_name)

    def profiler(frame, event, arg):
        profiled.add(frame.f_code.co_name)

    def traced_target():
        pass

    def profiled_target():
        pass

    threading.settrace(tracer)
    try:
        start(traced_target).join()
    finally:
        threading.settrace(None)
        sys.settrace(None)
    threading.setprofile(profiler)
    try:
        start(profiled_target).join()
    finally:
        threading.setprofile(None)
        sys.setprofile(None)
    assert "traced_target" in traced and "profiled_target" in profiled


@scenario
def raw_start_new_thread_reports_through_unraisablehook():
    seen = []
    done = threading.Event()

    def boom():
        done.set()
        raise ValueError("raw")

    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        ident = _thread.start_new_thread(boom, ())
        assert done.wait(5)
        time.sleep(0.01)
    finally:
        sys.unraisablehook = old
    assert isinstance(ident, int)
    assert len(seen) == 1 and seen[0].exc_type is ValueError
    if sys.version_info >= (3, 13):  # the function moved into the message
        assert seen[0].object is None and seen[0].err_msg.endswith(f"thread started by {boom!r}")
    else:
        assert seen[0].object is boom and seen[0].err_msg == "Exception ignored in thread started by"


@scenario
def interrupt_main_from_a_green_thread_raises_in_the_main_thread():
    resumed = []

    def interrupter():
        _thread.interrupt_main()
        resumed.append(True)  # this thread goes on after the main thread got the exception

    thread = threading.Thread(target=interrupter)
    try:
        thread.start()
        thread.join(5)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("KeyboardInterrupt must reach the main thread")
    thread.join(5)
    assert resumed == [True] and not thread.is_alive()


# -- locks ---------------------------------------------------------------------------------

@scenario
def lock_serializes_green_threads_and_times_out():
    lock = threading.Lock()
    inside, overlaps = [], []

    def worker(n):
        with lock:
            inside.append(n)
            overlaps.extend([tuple(inside)] if len(inside) > 1 else [])
            time.sleep(0.01)
            inside.remove(n)

    threads = [start(worker, n) for n in range(5)]
    for thread in threads:
        thread.join()
    assert overlaps == []
    lock.acquire()
    holder_done = []
    start(lambda: holder_done.append(lock.acquire(timeout=0.05))).join()
    assert holder_done == [False]
    lock.release()


@scenario
def rlock_is_owned_by_the_green_thread_that_took_it():
    rlock = threading.RLock()
    rlock.acquire()
    rlock.acquire()
    results = {}

    def other():
        try:
            rlock.release()
        except RuntimeError as exc:
            results["release"] = str(exc)
        results["try"] = rlock.acquire(timeout=0.05)

    start(other).join()
    assert results == {"release": "cannot release un-acquired lock", "try": False}, results
    rlock.release()
    rlock.release()
    got = []
    start(lambda: got.append(rlock.acquire(timeout=1) and rlock._is_owned())).join()
    assert got == [True]


@scenario
def condition_wait_notify_and_timeouts():
    cond = threading.Condition()
    woken = []

    def waiter(n):
        with cond:
            woken.append((n, cond.wait(5)))

    threads = [start(waiter, n) for n in range(4)]
    time.sleep(0.01)
    with cond:
        cond.notify()
    time.sleep(0.01)
    assert woken == [(0, True)], woken
    with cond:
        cond.notify_all()
    for thread in threads:
        thread.join()
    assert sorted(woken) == [(n, True) for n in range(4)]
    with cond:
        begin = time.monotonic()
        assert cond.wait(0.05) is False
        assert time.monotonic() - begin >= 0.045
        assert cond.wait_for(lambda: False, 0.02) is False


@scenario
def semaphores_limit_and_bound():
    sem = threading.Semaphore(2)
    running, peak = [0], [0]

    def worker():
        with sem:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            time.sleep(0.01)
            running[0] -= 1

    threads = [start(worker) for _ in range(6)]
    for thread in threads:
        thread.join()
    assert peak[0] == 2
    bounded = threading.BoundedSemaphore(1)
    bounded.acquire()
    bounded.release()
    try:
        bounded.release()
    except ValueError as exc:
        assert "released too many times" in str(exc)
    else:
        raise AssertionError("over-release must raise ValueError")


@scenario
def event_between_threads():
    event = threading.Event()
    results = []
    threads = [start(lambda: results.append(event.wait(5))) for _ in range(3)]
    time.sleep(0.01)
    assert results == []
    event.set()
    for thread in threads:
        thread.join()
    assert results == [True] * 3
    event.clear()
    begin = time.monotonic()
    assert event.wait(0.05) is False and time.monotonic() - begin >= 0.045


@scenario
def barrier_passes_breaks_and_times_out():
    barrier = threading.Barrier(3)
    indices = []
    threads = [start(lambda: indices.append(barrier.wait(5))) for _ in range(3)]
    for thread in threads:
        thread.join()
    assert sorted(indices) == [0, 1, 2]

    broken = threading.Barrier(3)
    errors = []

    def wait_broken():
        try:
            broken.wait(5)
        except threading.BrokenBarrierError:
            errors.append("broken")

    threads = [start(wait_broken) for _ in range(2)]
    time.sleep(0.01)
    broken.abort()
    for thread in threads:
        thread.join()
    assert errors == ["broken", "broken"] and broken.broken

    lonely = threading.Barrier(2)
    begin = time.monotonic()
    try:
        lonely.wait(0.05)
    except threading.BrokenBarrierError:
        pass
    else:
        raise AssertionError("a barrier wait that times out must raise")
    assert time.monotonic() - begin >= 0.045 and lonely.broken


@scenario
def timer_fires_and_cancel_prevents_it():
    fired = []
    begin = time.monotonic()
    timer = threading.Timer(0.05, lambda: fired.append(time.monotonic() - begin))
    timer.start()
    cancelled = threading.Timer(0.05, fired.append, args=("cancelled",))
    cancelled.start()
    cancelled.cancel()
    timer.join(5)
    cancelled.join(5)
    assert len(fired) == 1 and fired[0] >= 0.045, fired


@scenario
def local_data_is_per_green_thread():
    data = threading.local()
    data.value = "main"

    class Counter(threading.local):
        inits = 0

        def __init__(self, start):
            Counter.inits += 1
            self.count = start

    counter = Counter(10)
    seen = []

    def worker(n):
        assert not hasattr(data, "value")
        data.value = n
        counter.count += n
        time.sleep(0.01)
        seen.append((data.value, counter.count, sorted(data.__dict__)))

    threads = [start(worker, n) for n in range(3)]
    for thread in threads:
        thread.join()
    assert sorted(seen) == [(n, 10 + n, ["value"]) for n in range(3)]
    assert data.value == "main" and counter.count == 10
    assert Counter.inits == 4  # once here, once per green thread


# -- exit ------------------------------------------------------------------------------

@scenario
def exit_joins_non_daemon_and_abandons_daemon_threads():
    # The checks are in the output: the test reads what is printed after this returns.
    def non_daemon():
        time.sleep(0.1)
        print("non-daemon finished", flush=True)

    def daemon():
        time.sleep(30)
        print("daemon finished", flush=True)

    start(non_daemon)
    threading.Thread(target=daemon, daemon=True).start()
    print("main returns", flush=True)


# -- queue ---------------------------------------------------------------------------------

@scenario
def queues_producer_consumer():
    for cls, expected in ((queue.Queue, [0, 1, 2, 3, 4]), (queue.LifoQueue, None),
                          (queue.PriorityQueue, None), (queue.SimpleQueue, [0, 1, 2, 3, 4])):
        q = cls()
        got = []

        def consumer():
            for _ in range(5):
                got.append(q.get(timeout=5))

        thread = start(consumer)
        for n in range(5):
            q.put(n)
            time.sleep(0.001)
        thread.join()
        assert sorted(got) == [0, 1, 2, 3, 4], (cls, got)
        if expected:
            assert got == expected, (cls, got)
    lifo = queue.LifoQueue()
    prio = queue.PriorityQueue()
    for n in (3, 1, 2):
        lifo.put(n)
        prio.put(n)
    assert [lifo.get() for _ in range(3)] == [2, 1, 3]
    assert [prio.get() for _ in range(3)] == [1, 2, 3]


@scenario
def queue_timeouts_raise_the_stdlib_exceptions():
    for cls in (queue.Queue, queue.SimpleQueue):
        q = cls()
        begin = time.monotonic()
        try:
            q.get(timeout=0.05)
        except queue.Empty:
            assert time.monotonic() - begin >= 0.045
        else:
            raise AssertionError(f"{cls.__name__}.get(timeout=) must raise queue.Empty")
    bounded = queue.Queue(maxsize=1)
    bounded.put(1)
    begin = time.monotonic()
    try:
        bounded.put(2, timeout=0.05)
    except queue.Full:
        assert time.monotonic() - begin >= 0.045
    else:
        raise AssertionError("put(timeout=) on a full queue must raise queue.Full")


@scenario
def many_consumers_share_queues_in_one_os_thread():
    jobs = queue.Queue(maxsize=10)
    results = queue.SimpleQueue()

    def worker():
        while True:
            item = jobs.get()
            if item is None:
                jobs.task_done()
                return
            time.sleep(0.01)
            results.put(item * 2)
            jobs.task_done()

    workers = [start(worker) for _ in range(100)]
    begin = time.monotonic()
    for n in range(300):
        jobs.put(n)
    for _ in workers:
        jobs.put(None)
    jobs.join()
    elapsed = time.monotonic() - begin
    assert sorted(results.get_nowait() for _ in range(300)) == [n * 2 for n in range(300)]
    assert results.empty() and elapsed < 2.5, elapsed  # 300 sequential 10 ms jobs would take 3 s
    assert os_threads() == 1
    for thread in workers:
        thread.join()


@scenario
def reimported_queue_module_is_still_green():
    import importlib
    fresh = importlib.reload(queue)
    assert fresh.SimpleQueue is greenpatch.queue.SimpleQueue  # from _queue import SimpleQueue
    q = fresh.Queue()  # the stdlib class again, on threading's green primitives
    got = []
    thread = start(lambda: got.append(q.get(timeout=5)))
    time.sleep(0.01)
    q.put("x")
    thread.join()
    assert got == ["x"] and isinstance(q.mutex, greenpatch.locks.Lock)


@scenario
def freshly_imported_c_queue_module_is_green():
    import importlib
    saved = sys.modules.pop("_queue")
    try:
        fresh = importlib.import_module("_queue")  # what test.support.import_fresh_module does
    finally:
        sys.modules["_queue"] = saved
    assert fresh is not saved and fresh.Empty is not saved.Empty
    q = fresh.SimpleQueue()
    assert isinstance(q, greenpatch.queue.SimpleQueue)
    try:
        q.get(timeout=0.01)
    except fresh.Empty:  # its own module's Empty, as the C class raises
        pass
    else:
        raise AssertionError("get(timeout=) must raise the fresh module's Empty")
    start(lambda: (time.sleep(0.02), q.put("late")))
    assert q.get(timeout=5) == "late"  # a blocking get parks greenly instead of blocking the OS thread


@scenario
def thread_pool_executor_works():
    from concurrent.futures import ThreadPoolExecutor

    def slow_square(n):
        time.sleep(0.05)
        return n * n

    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(slow_square, range(20)))
    assert results == [n * n for n in range(20)]
    assert time.monotonic() - begin < 0.9  # 20 sequential 50 ms calls take 1 s
    assert os_threads() == 1


def main(names):
    for name in names:
        try:
            SCENARIOS[name]()
        except BaseException:
            print(f"@@ {name} FAIL", flush=True)
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
        else:
            print(f"@@ {name} ok", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(SCENARIOS))
