"""concurrent.futures under the patch (issue 6, item 9).

``ThreadPoolExecutor`` workers are green threads (no new OS thread);
``ProcessPoolExecutor`` works from many green threads at once.  Programs run
in child interpreters under ``python -m greenpatch`` and print one JSON line;
a heartbeat green thread (10 ms sleeps) proves the hub kept running.
"""

import pytest

from children import RUN_THREADS, assert_kept_beating, run_child

pytestmark = pytest.mark.timeout(90)

PRELUDE = """
import os
import concurrent.futures as cf

def os_threads():
    return len(os.listdir("/proc/self/task"))
""" + RUN_THREADS


def run(tmp_path, code: str, *args: str) -> dict:
    """Run ``code`` (after the prelude) from a script under ``python -m greenpatch``."""
    return run_child(code, prelude=PRELUDE, script_dir=tmp_path, args=args, timeout=80)


def test_thread_pool_workers_are_green_threads(tmp_path):
    result = run(tmp_path, """
        if __name__ == "__main__":
            import _thread
            from greenpatch.patcher import original
            real_count = original("_thread", "_count")
            before_os, before_real = os_threads(), real_count()
            peak = [0, 0]
            running = [0]

            def job(n):
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                peak[1] = max(peak[1], threading.active_count())
                time.sleep(0.05)                     # all 16 sleep at the same time
                running[0] -= 1
                return n * n, threading.current_thread().name

            beat = Heartbeat()
            with cf.ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(job, range(16)))
                during_os, during_real = os_threads(), real_count()
            print(json.dumps({"squares": [r[0] for r in results],
                              "names": sorted({r[1].rsplit("_", 1)[0] for r in results}),
                              "peak_running": peak[0], "active_count_grew": peak[1] >= 16,
                              "new_os_threads": during_os - before_os,
                              "new_real_threads": during_real - before_real,
                              "beat": beat.done()}))
    """)
    assert result["squares"] == [n * n for n in range(16)]
    assert result["names"] == ["ThreadPoolExecutor-0"]
    assert result["peak_running"] == 16            # they ran concurrently...
    assert result["active_count_grew"]             # ...as threads threading knows about...
    assert result["new_os_threads"] == 0           # ...without a single new OS thread
    assert result["new_real_threads"] == 0
    assert_kept_beating(result["beat"])


def test_thread_pool_results_exceptions_and_waits_from_many_green_threads(tmp_path):
    result = run(tmp_path, """
        if __name__ == "__main__":
            def job(n):
                time.sleep(0.01 * (n % 5))
                if n % 7 == 3:
                    raise ValueError(n)
                return n

            beat = Heartbeat()
            outcomes = {}
            with cf.ThreadPoolExecutor(max_workers=4) as pool:
                def submitter(k):
                    futures = [pool.submit(job, k * 10 + n) for n in range(10)]
                    done, _ = cf.wait(futures, timeout=20)
                    values = []
                    for future in cf.as_completed(futures):
                        error = future.exception()
                        values.append(["error", error.args[0]] if error else ["ok", future.result()])
                    outcomes[k] = sorted(values, key=lambda v: v[1]), len(done)
                run_threads(submitter, [(k,) for k in range(5)])
            expected = {k: [["error", n] if n % 7 == 3 else ["ok", n] for n in range(k * 10, k * 10 + 10)]
                        for k in range(5)}
            print(json.dumps({"ok": all(outcomes[k][0] == expected[k] and outcomes[k][1] == 10
                                        for k in range(5)),
                              "beat": beat.done()}))
    """)
    assert result["ok"]
    assert_kept_beating(result["beat"])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_map_from_several_green_threads(tmp_path, method):
    result = run(tmp_path, """
        import multiprocessing

        def cube(x):
            time.sleep(0.001)
            return x ** 3

        if __name__ == "__main__":
            ctx = multiprocessing.get_context(sys.argv[1])
            results = {}
            with cf.ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
                list(pool.map(cube, range(2)))       # the workers are up
                beat = Heartbeat()
                run_threads(lambda k: results.__setitem__(k, list(pool.map(cube, range(k, k + 25)))),
                            [(k,) for k in range(4)])
                lateness = beat.done()
                error = pool.submit(divmod, 1, 0).exception(timeout=10)
            ok = all(results[k] == [x ** 3 for x in range(k, k + 25)] for k in range(4))
            print(json.dumps({"ok": ok, "error": type(error).__name__, "beat": lateness}))
    """, method)
    assert result["ok"]
    assert result["error"] == "ZeroDivisionError"
    assert_kept_beating(result["beat"])
