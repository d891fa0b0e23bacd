"""multiprocessing from many green threads at once (issue 6, item 9).

Each test writes a program to a file (spawn children re-import it, so its
functions must live in a real module) and runs it under ``python -m
greenpatch`` in a child interpreter; the program prints one JSON line.  A
heartbeat green thread (10 ms sleeps) proves the hub kept running while green
threads waited on semaphores, pipes and child processes.
"""

import pytest

from children import RUN_THREADS, assert_kept_beating, run_child

pytestmark = pytest.mark.timeout(90)

PRELUDE = "import multiprocessing\n" + RUN_THREADS


def run(tmp_path, code: str, *args: str) -> dict:
    """Run ``code`` (after the prelude) from a script under ``python -m greenpatch``."""
    return run_child(code, prelude=PRELUDE, script_dir=tmp_path, args=args, timeout=80)


QUEUE_GETTERS = """
    def producer(queue, count, stoppers):
        for item in range(count):
            queue.put(item)
            if item % 20 == 0:
                time.sleep(0.005)
        for _ in range(stoppers):
            queue.put(None)

    def consume(queue, got):
        while (item := queue.get()) is not None:
            got.append(item)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context(sys.argv[1])
        queue = ctx.Queue()
        got = []
        child = ctx.Process(target=producer, args=(queue, 300, 10))
        child.start()
        beat = Heartbeat()
        run_threads(consume, [(queue, got)] * 10)
        child.join()
        print(json.dumps({"got": sorted(got), "exitcode": child.exitcode, "beat": beat.done()}))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_green_threads_get_from_one_queue_fed_by_a_process(tmp_path, method):
    # The anchors hang here: one getter holds the queue's read lock while it waits
    # for data, the next blocks the OS thread in the C semaphore wait.
    result = run(tmp_path, QUEUE_GETTERS, method)
    assert result["got"] == list(range(300))  # every item exactly once
    assert result["exitcode"] == 0
    assert_kept_beating(result["beat"])


def test_queue_get_with_timeout_and_put_from_green_threads(tmp_path):
    result = run(tmp_path, """
        import queue as stdqueue

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue(maxsize=3)
            beat = Heartbeat()
            started = time.monotonic()
            try:
                q.get(timeout=0.2)
                empty = False
            except stdqueue.Empty:
                empty = True
            waited = time.monotonic() - started
            got = []
            run_threads(lambda n: [q.put((n, k)) for k in range(10)] if n < 3 else
                        [got.append(q.get(timeout=5)) for _ in range(10)], [(n,) for n in range(6)])
            print(json.dumps({"empty": empty, "waited": waited, "got": sorted(map(list, got)),
                              "beat": beat.done()}))
    """)
    assert result["empty"] and result["waited"] >= 0.19
    assert result["got"] == sorted([n, k] for n in range(3) for k in range(10))
    assert_kept_beating(result["beat"])


def test_lock_and_rlock_contended_by_green_threads_and_a_process(tmp_path):
    result = run(tmp_path, """
        def add(lock, value, times, recursive):
            for _ in range(times):
                with lock:
                    if recursive:
                        with lock:
                            current = value.value
                    else:
                        current = value.value
                    time.sleep(0.0005)      # hold it across a switch
                    value.value = current + 1

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            totals, beats = {}, {}
            for kind in ("Lock", "RLock"):
                lock = getattr(ctx, kind)()
                value = ctx.Value("i", 0, lock=False)
                child = ctx.Process(target=add, args=(lock, value, 40, kind == "RLock"))
                child.start()
                beat = Heartbeat()                  # from here on: forking is not what we measure
                run_threads(add, [(lock, value, 20, kind == "RLock")] * 5)
                child.join()
                totals[kind] = value.value
                beats[kind] = beat.done()
            print(json.dumps({"totals": totals, "beats": beats}))
    """)
    assert result["totals"] == {"Lock": 140, "RLock": 140}, result  # no lost update
    assert_kept_beating(result["beats"]["Lock"])
    assert_kept_beating(result["beats"]["RLock"])


def test_rlock_is_owned_by_one_green_thread(tmp_path):
    # The C RLock records the OS thread: every green thread would pass as its owner.
    result = run(tmp_path, """
        if __name__ == "__main__":
            rlock = multiprocessing.get_context("fork").RLock()
            out = {}

            def holder():
                with rlock:
                    with rlock:
                        out["count"] = rlock._semlock._count()
                        out["mine"] = rlock._semlock._is_mine()
                        time.sleep(0.1)

            def other():
                time.sleep(0.02)
                out["other_mine"] = rlock._semlock._is_mine()
                out["other_acquire"] = rlock.acquire(timeout=0.02)
                try:
                    rlock.release()
                except AssertionError as exc:
                    out["release_error"] = str(exc)
                started = time.monotonic()
                with rlock:
                    out["waited"] = time.monotonic() - started

            run_threads(lambda f: f(), [(holder,), (other,)])
            out["repr"] = "unlocked" in repr(rlock) or "None" in repr(rlock)
            print(json.dumps(out))
    """)
    assert result["count"] == 2 and result["mine"] is True
    assert result["other_mine"] is False and result["other_acquire"] is False
    assert result["release_error"] == "attempt to release recursive lock not owned by thread"
    assert result["waited"] > 0.03
    assert result["repr"]


def test_semaphore_event_and_condition_from_green_threads(tmp_path):
    result = run(tmp_path, """
        def set_later(event):
            time.sleep(0.3)
            event.set()

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            event = ctx.Event()
            child = ctx.Process(target=set_later, args=(event,))
            child.start()
            beat = Heartbeat()

            sem = ctx.Semaphore(2)
            inside, peak = [0], [0]
            def use():
                for _ in range(4):
                    with sem:
                        inside[0] += 1
                        peak[0] = max(peak[0], inside[0])
                        time.sleep(0.005)
                        inside[0] -= 1
            run_threads(use, [()] * 6)

            bounded = ctx.BoundedSemaphore(1)
            try:
                bounded.release()
                over = None
            except ValueError as exc:
                over = str(exc)

            woke = []
            run_threads(lambda: woke.append(event.wait(10)), [()] * 5)
            child.join()
            timed_out = ctx.Event().wait(0.05)

            cond = ctx.Condition()
            items, got = [], []
            def consumer():
                with cond:
                    while not items:
                        cond.wait(5)
                    got.append(items.pop())
            def producer():
                for n in range(4):
                    time.sleep(0.01)
                    with cond:
                        items.append(n)
                        cond.notify()
            run_threads(lambda f: f(), [(consumer,)] * 4 + [(producer,)])
            with cond:
                notified = cond.wait(0.05)
            print(json.dumps({"peak": peak[0], "over": over, "woke": woke, "timed_out": timed_out,
                              "got": sorted(got), "notified": notified, "beat": beat.done()}))
    """)
    assert result["peak"] == 2
    assert result["over"] == "semaphore or lock released too many times"
    assert result["woke"] == [True] * 5 and result["timed_out"] is False
    assert result["got"] == [0, 1, 2, 3] and result["notified"] is False
    assert_kept_beating(result["beat"])


def test_lock_held_by_another_process_times_out_and_a_killed_waiter_leaks_nothing(tmp_path):
    result = run(tmp_path, """
        import greenpatch

        def hold(lock, held, release):
            with lock:
                held.set()
                release.wait(10)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            lock, held, release = ctx.Lock(), ctx.Event(), ctx.Event()
            child = ctx.Process(target=hold, args=(lock, held, release))
            child.start()
            held.wait(10)
            beat = Heartbeat()
            started = time.monotonic()
            timed = lock.acquire(timeout=0.2)
            waited = time.monotonic() - started
            waiter = greenpatch.spawn(lock.acquire)   # waits in the thread pool...
            time.sleep(0.05)
            waiter.kill()                             # ...and gives up
            release.set()
            child.join()
            time.sleep(0.05)
            free = lock.acquire(timeout=2)            # the killed waiter did not keep it
            print(json.dumps({"timed": timed, "waited": waited, "free": free, "beat": beat.done()}))
    """)
    assert result["timed"] is False and result["waited"] >= 0.19
    assert result["free"] is True
    assert_kept_beating(result["beat"])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_map_from_several_green_threads(tmp_path, method):
    result = run(tmp_path, """
        def square(x):
            time.sleep(0.001)
            return x * x

        if __name__ == "__main__":
            ctx = multiprocessing.get_context(sys.argv[1])
            results = {}
            with ctx.Pool(2) as pool:
                pool.map(square, range(2))            # the workers are up
                beat = Heartbeat()
                run_threads(lambda k: results.__setitem__(k, pool.map(square, range(k, k + 30))),
                            [(k,) for k in range(4)])
                lateness = beat.done()
                more = pool.apply_async(square, (7,)).get(timeout=10)
            ok = all(results[k] == [x * x for x in range(k, k + 30)] for k in range(4))
            print(json.dumps({"ok": ok, "more": more, "beat": lateness}))
    """, method)
    assert result["ok"] and result["more"] == 49
    assert_kept_beating(result["beat"])


def test_duplex_pipe_between_green_threads_and_its_fds_stay_blocking(tmp_path):
    result = run(tmp_path, """
        import os

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            left, right = ctx.Pipe()
            beat = Heartbeat()
            got = []
            def echo():
                while (msg := right.recv()) is not None:
                    right.send(msg * 2)
            def talk():
                for n in range(20):
                    left.send(n)
                    got.append(left.recv())
                left.send(None)
            run_threads(lambda f: f(), [(echo,), (talk,)])
            polled = left.poll(0.05)
            print(json.dumps({"got": got, "polled": polled,
                              "blocking": [os.get_blocking(c.fileno()) for c in (left, right)],
                              "beat": beat.done()}))
    """)
    assert result["got"] == [n * 2 for n in range(20)]
    assert result["polled"] is False
    assert result["blocking"] == [True, True]
    assert_kept_beating(result["beat"])


def test_semlock_is_patched_on_import_and_lists_what_it_replaces(tmp_path):
    result = run(tmp_path, """
        import greenpatch.patcher as patcher
        if __name__ == "__main__":
            before = "_multiprocessing" in sys.modules or "multiprocessing.connection" in sys.modules
            import _multiprocessing, multiprocessing.connection as connection
            lock = multiprocessing.Lock()
            print(json.dumps({
                "imported_by_patch": before,
                "patched": patcher.is_patched("multiprocessing"),
                "semlock": type(lock._semlock).__qualname__ + " " + type(lock._semlock).__mro__[0].__module__,
                "green_class": type(lock._semlock) is __import__("greenpatch.green._multiprocessing",
                                                                fromlist=["SemLock"]).SemLock,
                "wait_selector": connection._WaitSelector.__module__,
            }))
    """)
    assert result["imported_by_patch"] is False
    assert result["patched"] is True
    assert result["green_class"] is True
    assert result["wait_selector"] == "greenpatch.green.multiprocessing.connection"
