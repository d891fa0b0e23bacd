"""The native green primitives (greenpatch.locks, greenpatch.event), used without patching.

Green threads come from greenpatch.spawn; "real" threads are plain
threading.Thread, since this process is not monkey-patched.
"""

import _thread
import pickle
import threading
import time

import pytest

import greenpatch
from greenpatch.event import Event
from greenpatch.locks import BoundedSemaphore, Condition, Lock, RLock, Semaphore, get_ident


def run_all(*funcs):
    """Spawn each function as a green thread and wait for all; returns their results."""
    threads = [greenpatch.spawn(func) for func in funcs]
    return [thread.wait() for thread in threads]


# -- Lock ---------------------------------------------------------------------------------

def test_lock_acquire_release_and_locked():
    lock = Lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert not lock.locked()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_lock_aliases_behave_like_the_methods():
    lock = Lock()
    assert lock.acquire_lock() is True
    assert lock.locked_lock()
    lock.release_lock()
    assert not lock.locked()


def test_lock_release_of_an_unlocked_lock_raises_the_stdlib_error():
    with pytest.raises(RuntimeError, match="^release unlocked lock$"):
        Lock().release()


ARGUMENT_CASES = [
    (False, 1), (True, -2), (True, -0.5), (True, float("nan")), (True, _thread.TIMEOUT_MAX * 2),
    (True, None), (True, "1"), (0, 1), (True, -1), (False, -1), (True, 0), (1, 0.0),
]


@pytest.mark.parametrize("blocking, timeout", ARGUMENT_CASES)
def test_lock_argument_checks_match_the_real_lock(blocking, timeout):
    outcomes = []
    for lock in (_thread.allocate_lock(), Lock()):
        try:
            outcomes.append(("ok", lock.acquire(blocking, timeout)))
        except Exception as exc:  # compare the exact errors
            outcomes.append((type(exc), str(exc)))
    real, green = outcomes
    if real[0] is OverflowError:
        assert green[0] is OverflowError  # the message names C types that differ by version
    else:
        assert green == real


@pytest.mark.parametrize("blocking, timeout", [(False, 1), (True, -2)])
def test_rlock_argument_checks_match_the_real_rlock_even_when_owned(blocking, timeout):
    real, green = _thread.RLock(), RLock()
    real.acquire()
    green.acquire()
    with pytest.raises(ValueError) as real_error:
        real.acquire(blocking, timeout)
    with pytest.raises(ValueError) as green_error:
        green.acquire(blocking, timeout)
    assert str(green_error.value) == str(real_error.value)


def test_lock_repr_looks_like_the_stdlib_lock():
    lock = Lock()
    assert repr(lock) == f"<unlocked _thread.lock object at {id(lock):#x}>"
    lock.acquire()
    assert repr(lock) == f"<locked _thread.lock object at {id(lock):#x}>"


def test_locks_cannot_be_pickled_like_the_stdlib_ones():
    for lock in (Lock(), RLock()):
        with pytest.raises(TypeError, match="cannot pickle"):
            pickle.dumps(lock)


def test_lock_at_fork_reinit_makes_it_unlocked():
    lock = Lock()
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked()
    assert lock.acquire(False)


def test_contended_lock_parks_green_threads_and_serializes_them():
    lock = Lock()
    inside = []
    overlaps = []

    def worker(n):
        with lock:
            inside.append(n)
            if len(inside) > 1:
                overlaps.append(list(inside))
            greenpatch.sleep(0.01)
            inside.remove(n)
        return n

    threads = [greenpatch.spawn(worker, n) for n in range(5)]
    assert [t.wait() for t in threads] == list(range(5))
    assert overlaps == []


def test_waiting_for_a_lock_lets_other_green_threads_run():
    lock = Lock()
    lock.acquire()
    ticks = []

    def ticker():
        for n in range(5):
            ticks.append(n)
            greenpatch.sleep(0.005)
        lock.release()  # any green thread may release a Lock

    greenpatch.spawn(ticker)
    assert lock.acquire(timeout=5)
    assert ticks == list(range(5))


def test_acquire_with_timeout_returns_false_after_the_timeout():
    lock = Lock()
    lock.acquire()
    start = time.monotonic()
    assert lock.acquire(timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert lock.locked()


def test_a_lock_released_from_a_real_thread_wakes_the_green_waiter():
    lock = Lock()
    lock.acquire()
    timer = threading.Timer(0.05, lock.release)
    timer.start()
    try:
        assert lock.acquire(timeout=10) is True
    finally:
        timer.join()


def test_a_real_thread_and_green_threads_share_a_lock_without_lost_updates():
    lock = Lock()
    counter = [0]

    def bump(times):
        for _ in range(times):
            with lock:
                value = counter[0]
                if get_ident() % 3 == 0:
                    greenpatch.sleep(0)  # switch while holding it
                counter[0] = value + 1

    def real_thread():
        bump(2000)

    real = threading.Thread(target=real_thread)
    real.start()
    greens = [greenpatch.spawn(bump, 500) for _ in range(4)]
    for green in greens:
        green.wait()
    real.join()
    assert counter[0] == 4000


# -- get_ident ------------------------------------------------------------------------

def test_get_ident_is_the_os_ident_in_the_main_greenlet_and_unique_per_green_thread():
    assert get_ident() == _thread.get_ident()
    idents = run_all(get_ident, get_ident, get_ident)
    assert len(set(idents)) == 3 and _thread.get_ident() not in idents


# -- RLock ----------------------------------------------------------------------------

def test_rlock_recursion_and_count():
    lock = RLock()
    assert lock.acquire() and lock.acquire()
    assert lock._is_owned()
    assert lock._recursion_count() == 2
    assert repr(lock) == f"<locked _thread.RLock object owner={get_ident()} count=2 at {id(lock):#x}>"
    lock.release()
    lock.release()
    assert not lock._is_owned()
    assert repr(lock) == f"<unlocked _thread.RLock object owner=0 count=0 at {id(lock):#x}>"
    with pytest.raises(RuntimeError, match="^cannot release un-acquired lock$"):
        lock.release()


def test_rlock_is_owned_per_green_thread():
    lock = RLock()
    lock.acquire()

    def other():
        errors = []
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(str(exc))
        return errors, lock._is_owned(), lock._recursion_count(), lock.acquire(timeout=0.02)

    errors, owned, count, got = greenpatch.spawn(other).wait()
    assert errors == ["cannot release un-acquired lock"]
    assert (owned, count, got) == (False, 0, False)
    lock.release()


def test_rlock_waiter_gets_it_only_after_the_last_release():
    lock = RLock()
    order = []

    def holder():
        with lock:
            with lock:
                order.append("held twice")
                greenpatch.sleep(0.02)
            order.append("released once")
            greenpatch.sleep(0.02)
        order.append("released")

    def waiter():
        greenpatch.sleep(0.005)
        with lock:
            order.append("waiter got it")

    run_all(holder, waiter)
    assert order == ["held twice", "released once", "released", "waiter got it"]


def test_rlock_release_save_and_acquire_restore_round_trip():
    lock = RLock()
    lock.acquire()
    lock.acquire()
    state = lock._release_save()
    assert state == (2, get_ident())
    assert not lock._is_owned()
    assert greenpatch.spawn(lambda: lock.acquire(False) and (lock.release() or True)).wait()
    lock._acquire_restore(state)
    assert lock._recursion_count() == 2
    lock.release()
    lock.release()
    with pytest.raises(RuntimeError, match="cannot release un-acquired lock"):
        lock._release_save()


# -- Condition ------------------------------------------------------------------------

def test_condition_requires_the_lock():
    cond = Condition()
    with pytest.raises(RuntimeError, match="^cannot wait on un-acquired lock$"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="^cannot notify on un-acquired lock$"):
        cond.notify()
    cond_plain = Condition(Lock())
    with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
        cond_plain.notify_all()


def test_condition_wait_times_out_and_returns_false():
    cond = Condition(Lock())
    with cond:
        start = time.monotonic()
        assert cond.wait(0.05) is False
        assert time.monotonic() - start >= 0.045
        assert cond._lock.locked()  # re-acquired
    assert repr(cond) == f"<Condition({cond._lock!r}, 0)>"


@pytest.mark.parametrize("make_lock", [Lock, RLock], ids=["Lock", "RLock"])
def test_notify_wakes_exactly_n_waiters_and_notify_all_the_rest(make_lock):
    cond = Condition(make_lock())
    woken = []

    def waiter(n):
        with cond:
            if cond.wait(timeout=5):
                woken.append(n)

    threads = [greenpatch.spawn(waiter, n) for n in range(5)]
    greenpatch.sleep(0.01)
    with cond:
        assert len(cond._waiters) == 5
        cond.notify(2)
    greenpatch.sleep(0.01)
    assert sorted(woken) == [0, 1]
    with cond:
        cond.notify_all()
    for thread in threads:
        thread.wait()
    assert sorted(woken) == [0, 1, 2, 3, 4]


def test_wait_on_a_recursively_held_rlock_releases_it_fully_and_restores_the_count():
    cond = Condition(RLock())
    got_in = []

    def other():
        with cond:
            got_in.append(True)
            cond.notify()

    with cond:
        with cond:
            greenpatch.spawn(other)
            assert cond.wait(5) is True
            assert cond._lock._recursion_count() == 2
    assert got_in == [True]


def test_wait_for_returns_the_predicate_value_and_honours_the_timeout():
    cond = Condition()
    state = {"n": 0}

    def bump():
        for _ in range(3):
            greenpatch.sleep(0.005)
            with cond:
                state["n"] += 1
                cond.notify_all()

    greenpatch.spawn(bump)
    with cond:
        assert cond.wait_for(lambda: state["n"] >= 3, timeout=5) is True
        start = time.monotonic()
        assert cond.wait_for(lambda: state["n"] > 10, timeout=0.05) is False
        assert time.monotonic() - start >= 0.045


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_notified_waiter_that_is_killed_passes_the_notification_on():
    cond = Condition(Lock())
    results = {}

    def waiter(name):
        with cond:
            results[name] = cond.wait(timeout=5)

    first = greenpatch.spawn(waiter, "first")
    greenpatch.sleep(0.01)
    second = greenpatch.spawn(waiter, "second")
    greenpatch.sleep(0.01)
    first.kill(KeyError("killed"), block=False)  # lands before the wakeup below
    with cond:
        cond.notify(1)  # goes to "first", which dies with it
    second.join(5)
    first.join(5)
    assert results == {"second": True}
    assert isinstance(first.exception, KeyError)


def test_notify_all_deprecated_alias_warns():
    cond = Condition()
    with cond, pytest.warns(DeprecationWarning, match="notifyAll"):
        cond.notifyAll()


# -- Semaphore ------------------------------------------------------------------------

def test_semaphore_limits_concurrency():
    sem = Semaphore(3)
    running = [0]
    peak = [0]

    def worker():
        with sem:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            greenpatch.sleep(0.01)
            running[0] -= 1

    run_all(*[worker] * 10)
    assert peak[0] == 3
    assert sem._value == 3


def test_semaphore_nonblocking_timeout_and_argument_errors():
    sem = Semaphore(0)
    assert sem.acquire(False) is False
    start = time.monotonic()
    assert sem.acquire(timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    with pytest.raises(ValueError, match="^can't specify timeout for non-blocking acquire$"):
        sem.acquire(False, 1)
    with pytest.raises(ValueError, match="^semaphore initial value must be >= 0$"):
        Semaphore(-1)
    with pytest.raises(ValueError, match="^n must be one or more$"):
        sem.release(0)


def test_semaphore_release_n_wakes_n_waiters():
    sem = Semaphore(0)
    got = []

    def waiter(n):
        if sem.acquire(timeout=5):
            got.append(n)

    threads = [greenpatch.spawn(waiter, n) for n in range(4)]
    greenpatch.sleep(0.01)
    sem.release(3)
    greenpatch.sleep(0.01)
    assert len(got) == 3
    sem.release()
    for thread in threads:
        thread.wait()
    assert sorted(got) == [0, 1, 2, 3]


def test_bounded_semaphore_over_release_raises_value_error():
    sem = BoundedSemaphore(2)
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError, match="^Semaphore released too many times$"):
        sem.release()
    assert repr(sem).endswith(": value=2/2>")
    assert repr(Semaphore(4)).endswith(": value=4>")


# -- Event ------------------------------------------------------------------------------

def test_event_set_clear_and_wait():
    event = Event()
    assert not event.is_set()
    assert event.wait(0) is False
    start = time.monotonic()
    assert event.wait(0.05) is False
    assert time.monotonic() - start >= 0.045
    event.set()
    assert event.is_set() and event.wait() is True and event.wait(0) is True
    event.clear()
    assert not event.is_set()
    assert repr(event) == f"<threading.Event at {id(event):#x}: unset>"  # threading.Event once patched


def test_set_wakes_every_waiter():
    event = Event()
    threads = [greenpatch.spawn(event.wait, 5) for _ in range(5)]
    greenpatch.sleep(0.01)
    assert all(not t.ready() for t in threads)
    event.set()
    assert [t.wait() for t in threads] == [True] * 5


def test_a_set_then_clear_pulse_still_wakes_the_waiters_with_true():
    event = Event()
    threads = [greenpatch.spawn(event.wait, 5) for _ in range(3)]
    greenpatch.sleep(0.01)
    event.set()
    event.clear()  # before any waiter ran: like threading.Event, they were notified
    assert [t.wait() for t in threads] == [True] * 3
    assert not event.is_set()
    assert event.wait(0.01) is False  # a later wait does not see the old pulse


def test_an_event_set_from_a_real_thread_wakes_a_green_waiter():
    event = Event()
    timer = threading.Timer(0.05, event.set)
    timer.start()
    try:
        assert event.wait(10) is True
    finally:
        timer.join()


def test_event_isset_alias_is_deprecated():
    event = Event()
    with pytest.warns(DeprecationWarning, match="isSet"):
        assert event.isSet() is False
