"""Late patching: monkey_patch() after threading, logging, queue and user modules made their locks.

Every scenario runs in a child interpreter (patching is process-wide).  The
main one, tests/scripts/late_patch.py, is also the script the anchors
(gevent, eventlet) are compared with.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"


def child(code, cwd=None, timeout=60):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_twenty_green_threads_log_and_contend_on_objects_made_before_the_patch():
    # A hang here (subprocess timeout) is the failure this guards against: a real lock held
    # across a switch blocks the OS thread and the green thread holding it never runs again.
    result = subprocess.run([sys.executable, str(SCRIPTS / "late_patch.py")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.splitlines()[-1])
    assert data["records_ok"], "a log record is missing or garbled"
    assert data["root_records"] == 500
    assert data["counter"] == 500, "two green threads were inside the Lock at once"
    assert data["violations"] == [], "a second green thread entered the RLock"
    assert data["rlock_probes"] == [False, False, True], "a second green thread must wait for the RLock"
    assert data["jobs"] == 500 and data["finished"]
    # The green heartbeat is never late by more than 100 ms beyond what a real OS thread's
    # heartbeat suffered meanwhile (a loaded machine delays both; a blocked hub only the green one).
    assert data["max_late"] < 0.1 + data["os_max_late"], "the heartbeat was held up"
    made = set(data["made_green"])
    assert {"__main__.LOCK (a real Lock)", "__main__.RLOCK (a real RLock)", "logging._lock (a real RLock)",
            "__main__.JOBS (queue.Queue: its lock)", "__main__.DONE (queue.Queue: its lock)",
            "__main__.COND (threading.Condition: its lock)"} <= made
    assert sum(entry.startswith("logging handler <StreamHandler") for entry in data["made_green"]) == 2
    # What stayed original is named, in the warnings and in the report.
    assert data["still_real"] == {"__main__.CAPTURED": "a real Lock"}
    assert data["originals_still_referenced"] == {"__main__.early_sleep": "time.sleep"}
    warned = " ".join(data["warnings"])
    assert "__main__.CAPTURED (a real Lock)" in warned and "__main__.early_sleep (time.sleep)" in warned
    assert "__main__.LOCK" not in warned and "logging" not in warned


def test_a_lock_someone_else_holds_too_stays_real_and_is_named():
    data = child("""
        import json, threading, warnings
        SHARED = threading.Lock()
        COND = threading.Condition(SHARED)          # holds SHARED too: swapping either would split them
        METHOD = threading.RLock()
        RELEASE = METHOD.release                    # a bound method holds it
        HELD = threading.Lock()
        HELD.acquire()
        MINE = threading.RLock()
        MINE.acquire()                              # held by the patching thread itself
        import greenpatch
        from greenpatch.patcher import report
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            greenpatch.monkey_patch()
        MINE.release()                              # still the real RLock, owned by this thread
        print(json.dumps([report()["still_real"], " ".join(str(w.message) for w in caught),
                          COND._lock is SHARED]))
    """)
    still_real, warned, same = data
    assert still_real == {
        "__main__.COND": "threading.Condition on a real lock",
        "__main__.HELD": "a real Lock",
        "__main__.METHOD": "a real RLock",
        "__main__.MINE": "a real RLock",
        "__main__.SHARED": "a real Lock",
    }
    for name in ("__main__.SHARED (a real Lock)", "__main__.HELD (a real Lock)", "__main__.METHOD (a real RLock)",
                 "__main__.MINE (a real RLock)", "__main__.COND (threading.Condition on a real lock)"):
        assert name in warned
    assert same


def test_aliases_class_attributes_and_other_modules_get_one_green_lock(tmp_path):
    (tmp_path / "lib.py").write_text(
        "import threading\n_lock = threading.RLock()\n\nclass Pool:\n    guard = threading.Lock()\n")
    data = child("""
        import json, threading
        import lib
        from lib import _lock as alias            # the same lock, bound in two modules
        A = B = threading.Lock()
        import greenpatch
        from greenpatch.locks import Lock, RLock
        from greenpatch.patcher import report
        greenpatch.monkey_patch()
        print(json.dumps([alias is lib._lock, type(lib._lock) is RLock, A is B, type(A) is Lock,
                          type(lib.Pool.guard) is Lock, report()["made_green"], report()["still_real"]]))
    """, cwd=tmp_path)
    assert data[:5] == [True, True, True, True, True]
    assert {"lib._lock (a real RLock)", "__main__.alias (a real RLock)", "__main__.A (a real Lock)",
            "__main__.B (a real Lock)", "lib.Pool.guard (a real Lock)"} <= set(data[5])
    assert data[6] == {}


def test_a_queue_made_before_the_patch_keeps_its_items_and_waits_greenly():
    data = child("""
        import json, queue, threading
        Q = queue.Queue(maxsize=2)
        Q.put("early")
        L = queue.LifoQueue()
        import greenpatch, time
        greenpatch.monkey_patch()
        got = []

        def consumer():
            for _ in range(4):
                got.append(Q.get())        # waits greenly while the queue is empty
                Q.task_done()

        thread = threading.Thread(target=consumer)
        thread.start()
        for item in ("a", "b", "c"):
            time.sleep(0.01)
            Q.put(item)
        Q.join()
        thread.join()
        L.put(1); L.put(2)
        print(json.dumps([got, [L.get(), L.get()], type(Q.mutex).__module__, type(L.mutex).__module__]))
    """)
    assert data == [["early", "a", "b", "c"], [2, 1], "greenpatch.locks", "greenpatch.locks"]


def test_logging_locks_are_green_on_this_python():
    data = child("""
        import json, logging, logging.handlers, io
        handler = logging.StreamHandler(io.StringIO())
        memory = logging.handlers.MemoryHandler(10)
        logging.getLogger().addHandler(handler)
        import greenpatch
        from greenpatch.locks import RLock
        greenpatch.monkey_patch()
        print(json.dumps([type(logging._lock) is RLock, type(handler.lock) is RLock, type(memory.lock) is RLock]))
    """)
    assert data == [True, True, True]


def test_without_the_thread_group_nothing_is_swapped():
    data = child("""
        import json, threading
        LOCK = threading.Lock()
        import greenpatch
        from greenpatch.patcher import report
        greenpatch.monkey_patch(thread=False)
        print(json.dumps([type(LOCK).__module__, report()["made_green"], report()["still_real"]]))
    """)
    assert data == ["_thread", [], {}]


def test_rebind_on_request(tmp_path):
    (tmp_path / "early.py").write_text("from socket import socket\nfrom time import sleep\n")
    data = child("""
        import json, warnings
        import early
        import greenpatch, socket, time
        from greenpatch.patcher import format_report, report
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            greenpatch.monkey_patch(rebind=True)
        print(json.dumps([early.socket is socket.socket, early.sleep is time.sleep, report()["rebound_on_request"],
                          report()["originals_still_referenced"], report()["warned"], len(caught),
                          "rebound to green on request (rebind):" in format_report()]))
    """, cwd=tmp_path)
    assert data[:2] == [True, True]
    assert sorted(data[2]) == ["early.sleep (time.sleep)", "early.socket (socket.socket)"]
    assert data[3:6] == [{}, [], 0]
    assert data[6]


def test_rebind_later_rebinds_what_the_warning_named(tmp_path):
    (tmp_path / "early.py").write_text("from time import sleep\n")
    data = child("""
        import json, warnings
        warnings.simplefilter("ignore")
        import early
        import greenpatch, time
        from greenpatch.patcher import rebind, report
        greenpatch.monkey_patch()
        before = report()["originals_still_referenced"]
        print(json.dumps([before, rebind(), early.sleep is time.sleep, report()["originals_still_referenced"]]))
    """, cwd=tmp_path)
    assert data == [{"early.sleep": "time.sleep"}, ["early.sleep (time.sleep)"], True, {}]


def test_the_report_text_names_what_was_made_green_and_what_stays_real():
    data = child("""
        import json, threading
        LOCK = threading.Lock()
        KEPT = threading.RLock()
        HOLDER = [KEPT]
        import greenpatch
        from greenpatch.patcher import format_report
        greenpatch.monkey_patch()
        print(json.dumps(format_report()))
    """)
    assert "created before the patch on real locks, made green:\n  __main__.LOCK (a real Lock)\n" in data
    assert "real locks still in use (block the OS thread when contended): \n  __main__.KEPT: a real RLock\n" in data


def test_a_thread_made_before_the_patch_starts_as_a_green_thread():
    # On 3.13 the Thread was made with a real _ThreadHandle, which cannot follow a green thread.
    data = child("""
        import json, threading
        ran = []
        EARLY = threading.Thread(target=lambda: ran.append(threading.get_ident()), name="early")
        import greenpatch, os
        greenpatch.monkey_patch()
        EARLY.start()
        EARLY.join()
        print(json.dumps([ran == [EARLY.ident], EARLY.is_alive(), EARLY.ident != threading.main_thread().ident,
                          len(os.listdir("/proc/self/task"))]))
    """)
    assert data == [True, False, True, 1]


def test_events_semaphores_and_barriers_made_before_the_patch_wait_greenly():
    data = child("""
        import json, threading
        EVENT = threading.Event()
        SEM = threading.BoundedSemaphore(1)
        BARRIER = threading.Barrier(3)
        import greenpatch, os, time
        greenpatch.monkey_patch()
        order = []

        def worker(n):
            with SEM:                       # held across a sleep: the others wait greenly
                order.append(("in", n))
                time.sleep(0.01)
                order.append(("out", n))
            BARRIER.wait(timeout=5)
            EVENT.wait(timeout=5)
            order.append(("done", n))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        EVENT.set()
        for thread in threads:
            thread.join()
        nested = all(order[i][0] == "in" and order[i + 1] == ("out", order[i][1]) for i in range(0, 6, 2))
        print(json.dumps([nested, sorted(order[6:]), len(os.listdir("/proc/self/task"))]))
    """)
    assert data == [True, [["done", 0], ["done", 1], ["done", 2]], 1]
