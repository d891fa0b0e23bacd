"""Green threads: spawn, wait, join, kill, link, exceptions, Timeout and GreenPool."""

import time

import pytest

import greenpatch
from greenpatch import GreenletExit, GreenPool, Timeout, with_timeout


def test_spawn_runs_the_function_and_wait_returns_its_result():
    thread = greenpatch.spawn(lambda a, b=0: a + b, 2, b=3)
    assert thread.wait() == 5
    assert thread.ready() and thread.successful()


def test_spawned_threads_do_not_run_until_the_spawner_yields():
    ran = []
    greenpatch.spawn(ran.append, 1)
    assert ran == []
    greenpatch.sleep(0)
    assert ran == [1]


def test_spawn_after_starts_later():
    start = time.monotonic()
    thread = greenpatch.spawn_after(0.05, time.monotonic)
    assert thread.wait() - start >= 0.05


def test_wait_reraises_and_excepthook_reports(capsys):
    import threading

    seen = []
    old = threading.excepthook
    threading.excepthook = seen.append
    try:
        thread = greenpatch.spawn(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            thread.wait()
    finally:
        threading.excepthook = old
    assert len(seen) == 1
    assert seen[0].exc_type is ZeroDivisionError and seen[0].thread is thread
    assert not thread.successful()


def test_default_report_looks_like_an_uncaught_thread_exception(capsys, monkeypatch):
    import threading

    monkeypatch.setattr(threading, "excepthook", threading.__excepthook__)  # pytest installs its own
    thread = greenpatch.spawn(lambda: {}["nope"])
    thread.join()
    err = capsys.readouterr().err
    assert f"Exception in thread {thread.name}" in err and "KeyError" in err


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_an_exception_in_one_green_thread_does_not_stop_the_others():
    results = []

    def good(n):
        greenpatch.sleep(0.01)
        results.append(n)

    threads = [greenpatch.spawn(good, 1), greenpatch.spawn(lambda: 1 / 0), greenpatch.spawn(good, 2)]
    for thread in threads:
        thread.join()
    assert results == [1, 2]


def test_join_timeout_returns_false_then_true():
    thread = greenpatch.spawn(greenpatch.sleep, 0.05)
    assert thread.join(0.001) is False
    assert thread.join(5) is True


def test_kill_raises_greenletexit_inside_and_waits():
    state = []

    def victim():
        try:
            greenpatch.sleep(10)
        except GreenletExit:
            state.append("exit")
            raise

    thread = greenpatch.spawn(victim)
    greenpatch.sleep(0)
    thread.kill()
    assert state == ["exit"]
    assert thread.ready()
    assert isinstance(thread.wait(), GreenletExit)


def test_kill_before_start_means_it_never_runs_and_joiners_wake():
    ran = []
    thread = greenpatch.spawn(ran.append, 1)
    thread.kill()
    assert thread.join(1) is True
    greenpatch.sleep(0.01)
    assert ran == []


def test_kill_with_a_custom_exception():
    def victim():
        try:
            greenpatch.sleep(10)
        except ValueError as exc:
            return str(exc)

    thread = greenpatch.spawn(victim)
    greenpatch.sleep(0)
    thread.kill(ValueError("stop"))
    assert thread.wait() == "stop"


def test_link_is_called_with_the_thread_when_it_ends():
    seen = []
    thread = greenpatch.spawn(lambda: "r")
    thread.link(lambda t, extra: seen.append((t.wait(), extra)), "x")
    thread.join()
    assert seen == [("r", "x")]
    thread.link(lambda t: seen.append("late"))
    assert seen[-1] == "late"


def test_timeout_raises_in_the_guarded_block():
    with pytest.raises(Timeout) as info:
        with Timeout(0.01):
            greenpatch.sleep(5)
    assert "0.01 seconds" in str(info.value)


def test_timeout_with_false_is_silent():
    start = time.monotonic()
    with Timeout(0.01, False):
        greenpatch.sleep(5)
    assert time.monotonic() - start < 4


def test_timeout_raises_a_given_exception():
    with pytest.raises(KeyError):
        with Timeout(0.01, KeyError("k")):
            greenpatch.sleep(5)


def test_timeout_is_not_caught_by_except_exception():
    caught = []
    with pytest.raises(Timeout):
        with Timeout(0.01):
            try:
                greenpatch.sleep(5)
            except Exception:
                caught.append(1)
    assert caught == []


def test_cancelled_timeout_does_not_fire():
    with Timeout(0.01) as timeout:
        pass
    assert not timeout.pending
    greenpatch.sleep(0.03)  # would raise here if it still fired


def test_with_timeout_returns_value_or_timeout_value():
    assert with_timeout(1, lambda: 7) == 7
    assert with_timeout(0.01, greenpatch.sleep, 5, timeout_value="late") == "late"
    with pytest.raises(Timeout):
        with_timeout(0.01, greenpatch.sleep, 5)


def test_pool_limits_concurrency():
    pool = GreenPool(3)
    active, peak = [0], [0]

    def job(n):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        greenpatch.sleep(0.005)
        active[0] -= 1
        return n * n

    assert list(pool.imap(job, range(20))) == [n * n for n in range(20)]
    assert peak[0] == 3
    pool.waitall()
    assert pool.running() == 0 and pool.free() == 3


def test_pool_spawn_n_and_waitall():
    pool = GreenPool(10)
    done = []
    for n in range(25):
        pool.spawn_n(lambda n=n: (greenpatch.sleep(0.001), done.append(n)))
    pool.waitall()
    assert sorted(done) == list(range(25))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_pool_imap_raises_the_failing_items_exception():
    pool = GreenPool(2)

    def job(n):
        if n == 3:
            raise ValueError(n)
        return n

    results = pool.imap(job, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError):
        next(results)


def test_full_pool_spawning_from_its_own_thread_runs_inline_instead_of_deadlocking():
    pool = GreenPool(1)

    def outer():
        return pool.spawn(lambda: "inner").wait()

    assert pool.spawn(outer).wait() == "inner"


def test_pool_resize_lets_waiting_spawners_in():
    pool = GreenPool(1)
    pool.spawn(greenpatch.sleep, 0.05)
    spawner = greenpatch.spawn(pool.spawn, lambda: "second")
    greenpatch.sleep(0.01)
    assert not spawner.ready()
    pool.resize(2)
    assert spawner.wait().wait() == "second"


def test_many_green_threads_sleep_concurrently():
    start = time.monotonic()
    threads = [greenpatch.spawn(greenpatch.sleep, 0.1) for _ in range(2000)]
    for thread in threads:
        thread.wait()
    assert time.monotonic() - start < 2000 * 0.1 / 10
