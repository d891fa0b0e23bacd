"""greenpatch.tpool: blocking calls in real OS threads while green threads keep running."""

import threading
import time

import pytest

import greenpatch
from greenpatch import tpool


def test_execute_returns_the_result_from_another_os_thread():
    main_ident = threading.get_ident()
    result, ident = tpool.execute(lambda x: (x * 2, threading.get_ident()), 21)
    assert result == 42
    assert ident != main_ident


def test_execute_carries_the_exception_and_its_traceback_back():
    def fail():
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker") as info:
        tpool.execute(fail)
    assert any(entry.name == "fail" for entry in info.traceback)


def test_a_blocking_call_does_not_block_other_green_threads():
    ticks = []

    def heartbeat():
        for _ in range(10):
            ticks.append(time.monotonic())
            greenpatch.sleep(0.01)

    beat = greenpatch.spawn(heartbeat)
    tpool.execute(time.sleep, 0.2)  # the real, blocking sleep
    beat.wait()
    assert len(ticks) == 10
    assert ticks[-1] - ticks[0] < 0.2 + 0.5


def test_pool_size_bounds_the_worker_threads():
    pool = tpool.ThreadPool(size=2)
    active, peak = [0], [0]
    lock = threading.Lock()

    def job():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return 1

    threads = [greenpatch.spawn(pool.execute, job) for _ in range(8)]
    assert sum(t.wait() for t in threads) == 8
    assert peak[0] <= 2


def test_size_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GREENPATCH_THREADPOOL_SIZE", "3")
    assert tpool.ThreadPool().size == 3
    with pytest.raises(ValueError):
        tpool.ThreadPool(size=0)


def test_timeout_while_waiting_for_a_worker_leaves_the_hub_consistent():
    with pytest.raises(greenpatch.Timeout):
        with greenpatch.Timeout(0.01):
            tpool.execute(time.sleep, 0.1)
    greenpatch.sleep(0.2)  # the abandoned job finishes and releases its keepalive
    assert greenpatch.get_hub().keepalive == 0


def test_queued_jobs_start_new_workers_even_when_one_is_idle():
    pool = tpool.ThreadPool(size=10)
    pool.execute(lambda: None)  # leaves one idle worker behind
    start = time.monotonic()
    threads = [greenpatch.spawn(pool.execute, time.sleep, 0.2) for _ in range(10)]
    for thread in threads:
        thread.wait()
    assert time.monotonic() - start < 10 * 0.2 / 2
