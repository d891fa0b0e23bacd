"""The green thread layer: greenpatch.green._thread and greenpatch.green.threading.

The pytest process is never patched.  The pieces of the green ``_thread``
(thread-local data, start_new_thread, handles, sentinels) are tested here
in-process; ``threading`` under the patch is tested by running scenario
scripts in subprocesses (tests/scripts/thread_*.py) and reading their output.
"""

import _thread
import gc
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest

import greenpatch
from greenpatch.green import _thread as green_thread
from greenpatch.green import threading as green_threading
from greenpatch.locks import Lock, RLock, get_ident

SCRIPTS = Path(__file__).parent / "scripts"
PY313 = sys.version_info >= (3, 13)


def run_script(name, *args, timeout=60):
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True,
                          text=True, timeout=timeout)


def scenario_results(names):
    """Run thread_scenarios.py once for ``names``; {name: (passed, output)}."""
    proc = run_script("thread_scenarios.py", *names)
    results, current = {}, None
    for line in proc.stdout.splitlines():
        if line.startswith("@@ "):
            _, current, verdict = line.split(" ", 2)
            results[current] = [verdict == "ok", ""]
        elif current is not None:
            results[current][1] += line + "\n"
    for name in names:
        results.setdefault(name, [False, f"no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"])
    return results


THREADING_SCENARIOS = [
    "names_are_green",
    "two_hundred_threads_sleep_concurrently_in_one_os_thread",
    "thread_identity_and_introspection",
    "join_with_timeout_and_is_alive",
    "a_green_thread_can_join_the_main_thread_with_a_timeout",
    "excepthook_gets_the_uncaught_exception",
    "settrace_and_setprofile_apply_to_new_threads",
    "raw_start_new_thread_reports_through_unraisablehook",
    "interrupt_main_from_a_green_thread_raises_in_the_main_thread",
    "lock_serializes_green_threads_and_times_out",
    "rlock_is_owned_by_the_green_thread_that_took_it",
    "condition_wait_notify_and_timeouts",
    "semaphores_limit_and_bound",
    "event_between_threads",
    "barrier_passes_breaks_and_times_out",
    "timer_fires_and_cancel_prevents_it",
    "local_data_is_per_green_thread",
    "thread_pool_executor_works",
]


@pytest.fixture(scope="module")
def patched():
    return scenario_results(THREADING_SCENARIOS)


@pytest.mark.parametrize("name", THREADING_SCENARIOS)
def test_patched_threading(patched, name):
    passed, output = patched[name]
    assert passed, output


def test_interpreter_exit_joins_non_daemon_and_abandons_daemon_threads():
    begin = time.monotonic()
    proc = run_script("thread_scenarios.py", "exit_joins_non_daemon_and_abandons_daemon_threads")
    elapsed = time.monotonic() - begin
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("@@")]
    assert lines == ["main returns", "non-daemon finished"], proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert elapsed < 20  # the daemon thread sleeps 30 s: it was not waited for


def test_patching_after_threading_and_logging_were_imported():
    proc = run_script("thread_preimported.py")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("@@ ok"), proc.stdout + proc.stderr


def test_fork_keeps_only_the_forking_green_thread():
    proc = run_script("thread_fork.py")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("@@ ok"), proc.stdout + proc.stderr


def test_a_non_daemon_thread_that_can_never_finish_is_reported_at_exit_instead_of_hanging():
    code = ("import greenpatch; greenpatch.monkey_patch(thread=True)\n"
            "import threading\n"
            "threading.Thread(target=threading.Event().wait, name='stuck').start()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "DeadlockError" in proc.stderr and "stuck" in proc.stderr, proc.stderr


# -- dir() parity ---------------------------------------------------------------------------

@pytest.mark.parametrize("green, real", [(green_thread, _thread), (green_threading, threading)],
                         ids=["_thread", "threading"])
def test_green_module_exposes_every_public_name_of_its_twin(green, real):
    public = {name for name in dir(real) if not name.startswith("_")}
    assert public <= set(dir(green))
    missing = [name for name in public if not hasattr(green, name)]
    assert missing == []


# -- get_ident, start_new_thread, _count ------------------------------------------------------

def test_start_new_thread_runs_a_green_thread_and_returns_its_ident():
    seen = []
    done = Lock()
    done.acquire()

    def target(a, b=None):
        seen.append((a, b, get_ident(), _thread.get_ident()))
        done.release()

    before = green_thread._count()
    ident = green_thread.start_new_thread(target, (1,), {"b": 2})
    assert green_thread._count() == before + 1
    assert done.acquire(timeout=5)
    greenpatch.sleep(0)
    (a, b, green_ident, os_ident), = seen
    assert (a, b) == (1, 2) and green_ident == ident and os_ident == _thread.get_ident() != ident
    assert green_thread._count() == before


@pytest.mark.parametrize("args, message", [
    ((1, ()), "first arg must be callable"),
    ((print, 1), "2nd arg must be a tuple"),
    ((print, (), 1), "optional 3rd arg must be a dictionary"),
])
def test_start_new_thread_argument_errors_match_the_stdlib(args, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        green_thread.start_new_thread(*args)
    with pytest.raises(TypeError, match=f"^{message}$"):
        _thread.start_new_thread(*args)


@pytest.mark.skipif(PY313, reason="3.13 replaced the thread-state sentinel by thread handles")
def test_set_sentinel_is_released_when_the_green_thread_ends():
    sentinels = []
    finish = Lock()
    finish.acquire()

    def target():
        sentinel = green_thread._set_sentinel()
        sentinel.acquire()  # as threading does
        sentinels.append(sentinel)
        finish.acquire()

    green_thread.start_new_thread(target, ())
    greenpatch.sleep(0)
    sentinel, = sentinels
    assert sentinel.locked()
    assert sentinel.acquire(timeout=0.02) is False
    finish.release()
    assert sentinel.acquire(timeout=5)  # what Thread.join does


@pytest.mark.skipif(not PY313, reason="thread handles are new in 3.13")
def test_thread_handles_join_and_report_done():
    finish = Lock()
    finish.acquire()
    handle = green_thread.start_joinable_thread(finish.acquire, daemon=False)
    assert repr(handle) == f"<_thread._ThreadHandle object: ident={handle.ident}>"
    assert handle.ident and not handle.is_done()
    assert handle in green_thread._shutdown_handles
    begin = time.monotonic()
    handle.join(0.05)
    assert time.monotonic() - begin >= 0.045 and not handle.is_done()
    finish.release()
    handle.join()
    assert handle.is_done() and handle not in green_thread._shutdown_handles
    with pytest.raises(RuntimeError, match="thread not started"):
        green_thread._ThreadHandle().join()
    with pytest.raises(RuntimeError, match="thread already started"):
        green_thread.start_joinable_thread(print, handle=handle)
    with pytest.raises(TypeError, match="'handle' must be a _ThreadHandle"):
        green_thread.start_joinable_thread(print, handle=1)
    with pytest.raises(RuntimeError, match="Cannot join current thread"):
        green_thread._make_thread_handle(get_ident()).join()


@pytest.mark.skipif(not PY313, reason="thread handles are new in 3.13")
def test_shutdown_waits_greenly_for_non_daemon_threads_only():
    order = []
    green_thread.start_joinable_thread(lambda: (greenpatch.sleep(0.05), order.append("non-daemon")),
                                       daemon=False)
    daemon_done = Lock()
    daemon_done.acquire()
    green_thread.start_joinable_thread(daemon_done.acquire, daemon=True)
    green_thread._shutdown()
    order.append("shutdown returned")
    assert order == ["non-daemon", "shutdown returned"]
    daemon_done.release()


# -- thread-local data ---------------------------------------------------------------------

def test_local_attributes_are_per_green_thread():
    data = green_thread._local()
    data.x = "main"

    def other(n):
        assert not hasattr(data, "x")
        data.x = n
        greenpatch.sleep(0.005)
        return data.x, dict(data.__dict__)

    threads = [greenpatch.spawn(other, n) for n in range(3)]
    assert [t.wait() for t in threads] == [(n, {"x": n}) for n in range(3)]
    assert data.x == "main" and data.__dict__ == {"x": "main"}
    del data.x
    with pytest.raises(AttributeError):
        del data.x
    with pytest.raises(AttributeError, match="read-only"):
        data.__dict__ = {}


def test_local_subclass_init_runs_again_in_each_green_thread_with_the_same_arguments():
    class Config(green_thread._local):
        created = []

        def __init__(self, value, *, scale):
            Config.created.append(get_ident())
            self.value = value * scale

        @property
        def doubled(self):
            greenpatch.sleep(0)  # a property that switches still sees its own thread's dict
            return self.value * 2

        def describe(self):
            return f"value={self.value}"

    config = Config(2, scale=10)
    assert config.value == 20 and config.doubled == 40

    def other():
        config.value += 1
        return config.describe(), config.doubled

    threads = [greenpatch.spawn(other) for _ in range(2)]
    assert [t.wait() for t in threads] == [("value=21", 42)] * 2
    assert config.value == 20
    assert len(Config.created) == 3 and len(set(Config.created)) == 3


def test_local_slots_and_class_attributes_are_shared():
    class Slotted(green_thread._local):
        __slots__ = ("shared",)
        kind = "class"

    obj = Slotted()
    obj.shared = "everyone"
    obj.own = "main"
    assert greenpatch.spawn(lambda: (obj.shared, obj.kind, hasattr(obj, "own"))).wait() == \
        ("everyone", "class", False)


def test_local_without_init_rejects_arguments():
    with pytest.raises(TypeError, match="Initialization arguments are not supported"):
        green_thread._local(1)


def test_local_dict_of_a_green_thread_is_dropped_when_it_ends():
    import greenlet

    class Payload:
        pass

    data = green_thread._local()
    refs, glets = [], []

    def keep():
        payload = Payload()
        refs.append(weakref.ref(payload))
        data.payload = payload
        glets.append(greenlet.getcurrent())  # the greenlet object outlives the thread

    done = Lock()
    done.acquire()
    green_thread.start_new_thread(lambda: (keep(), done.release()), ())
    assert done.acquire(timeout=5)
    greenpatch.sleep(0)
    gc.collect()
    assert glets[0].dead and refs[0]() is None  # dropped as the thread ended, as real threads do
    greenpatch.spawn(keep).wait()  # a greenlet green._thread did not start: dropped once it is collected
    del glets[:]
    gc.collect()
    assert refs[1]() is None
    impl = green_thread._local.__dict__["_greenpatch_local"].__get__(data)
    assert list(impl.dicts) == [id(greenlet.getcurrent())]


def test_local_works_with_real_os_threads_too():
    data = green_thread._local()
    data.x = "main"
    seen = []
    real = threading.Thread(target=lambda: seen.append(hasattr(data, "x")))
    real.start()
    real.join()
    assert seen == [False] and data.x == "main"


def test_rlock_from_green_thread_module_is_the_green_rlock():
    assert green_thread.RLock is RLock and green_thread.allocate_lock is Lock


def test_event_repr_is_threading_events():
    event = green_threading.Event()
    assert repr(event) == f"<threading.Event at {id(event):#x}: unset>"
    event.set()
    assert repr(event) == f"<threading.Event at {id(event):#x}: set>"

    class Sub(green_threading.Event):
        pass

    assert repr(Sub()).startswith(f"<{__name__}.test_event_repr_is_threading_events.<locals>.Sub at ")


def test_count_leaves_out_the_default_tpool_workers():
    """A name lookup leaves an idle tpool worker behind; _count() is back to before, as CPython's would be."""
    from greenpatch import tpool

    before = green_thread._count()
    assert tpool.execute(lambda: 42) == 42
    assert greenpatch.hub.own_threads >= 1  # the worker idles on, for the next lookup
    assert green_thread._count() == before
