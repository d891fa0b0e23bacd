"""The hub's services and the invariants written in greenpatch/hub.py."""

import errno
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import greenpatch
from greenpatch.hub import READ, WRITE, BlockingInHubError, DeadlockError, get_hub, park


def nonblocking_pair():
    """Plain stdlib sockets, announced to the hub as green sockets are (their fd numbers may be reused)."""
    a, b = socket.socketpair()
    for sock in (a, b):
        sock.setblocking(False)
        get_hub().forget_fd(sock.fileno())
    return a, b


def close(*socks):
    """Close plain stdlib sockets the way green sockets do: tell the hub first."""
    for sock in socks:
        get_hub().forget_fd(sock.fileno())
        sock.close()


def test_timers_fire_in_deadline_order():
    hub = get_hub()
    fired = []
    for delay in (0.03, 0.01, 0.02, 0.0):
        hub.call_later(delay, fired.append, delay)
    greenpatch.sleep(0.08)
    assert fired == [0.0, 0.01, 0.02, 0.03]


def test_timers_with_equal_deadlines_fire_in_creation_order(monkeypatch):
    hub = get_hub()
    fired = []
    frozen = time.monotonic()
    monkeypatch.setattr("greenpatch.hub.monotonic", lambda: frozen)  # every deadline exactly equal
    timers = [hub.call_later(0.01, fired.append, n) for n in range(50)]
    monkeypatch.undo()
    assert len({timer.deadline for timer in timers}) == 1
    greenpatch.sleep(0.05)
    assert fired == list(range(50))


def test_cancelled_timer_never_fires():
    hub = get_hub()
    fired = []
    timer = hub.call_later(0.01, fired.append, "x")
    assert timer.pending
    timer.cancel()
    assert not timer.pending
    greenpatch.sleep(0.03)
    assert fired == []


def test_cancelled_timers_do_not_grow_the_heap_without_bound():
    hub = get_hub()
    for _ in range(20):
        timers = [hub.call_later(100, lambda: None) for _ in range(1000)]
        for timer in timers:
            timer.cancel()
    assert len(hub._timers) < 2000
    assert hub.counts()["timers"] == 0


def test_sleep_zero_is_fair_round_robin():
    order = []

    def worker(name):
        for _ in range(3):
            order.append(name)
            greenpatch.sleep(0)

    threads = [greenpatch.spawn(worker, name) for name in "abc"]
    for thread in threads:
        thread.wait()
    assert order == list("abcabcabc")


def test_what_a_batch_makes_ready_waits_for_a_poll_once_a_green_thread_waits_on_an_fd():
    # The hub runs on into what a batch made ready only while nothing waits on an fd:
    # here the batch that starts the reader makes it an fd waiter, so main's next
    # sleep(0) lets the poller in and the reader gets its byte first.
    x, y = nonblocking_pair()
    got = []

    def reader():
        get_hub().wait_fd(y.fileno(), READ)
        got.append(y.recv(1))

    greenpatch.spawn(reader)
    greenpatch.sleep(0)  # one turn: the reader starts and waits on y, main goes on
    x.send(b"!")
    greenpatch.sleep(0)
    assert got == [b"!"]
    close(x, y)


def test_sleep_waits_at_least_the_time_asked():
    start = time.monotonic()
    greenpatch.sleep(0.05)
    assert time.monotonic() - start >= 0.05


def test_schedule_runs_callbacks_fifo():
    hub = get_hub()
    seen = []
    for n in range(5):
        hub.schedule(seen.append, n)
    greenpatch.sleep(0)
    assert seen == list(range(5))


def test_schedule_threadsafe_wakes_a_hub_blocked_in_poll():
    import threading as real_threading

    hub = get_hub()
    waiters = []
    state = {"done": False}

    def from_other_thread():
        time.sleep(0.05)
        state["done"] = True
        hub.schedule_threadsafe(lambda: None)
        from greenpatch.hub import wake_all
        wake_all(waiters)

    thread = real_threading.Thread(target=from_other_thread)
    thread.start()
    assert park(waiters, lambda: state["done"], timeout=5)
    thread.join()


def test_wait_fd_returns_when_readable():
    a, b = nonblocking_pair()
    hub = get_hub()
    greenpatch.spawn_after(0.01, b.send, b"x")
    hub.wait_fd(a.fileno(), READ, timeout=5)
    assert a.recv(1) == b"x"
    close(a, b)


def test_wait_fd_timeout_raises_the_given_exception():
    a, b = nonblocking_pair()
    with pytest.raises(TimeoutError, match="timed out"):
        get_hub().wait_fd(a.fileno(), READ, timeout=0.01)
    assert get_hub().counts()["fd_waiters"] == 0
    close(a, b)


def test_wait_fd_writable_socket_returns_at_once():
    a, b = nonblocking_pair()
    get_hub().wait_fd(a.fileno(), WRITE, timeout=5)
    close(a, b)


def test_forget_fd_wakes_every_waiter_with_ebadf():
    a, b = nonblocking_pair()
    hub = get_hub()
    fd = a.fileno()

    def waiter(direction):
        try:
            hub.wait_fd(fd, direction)
        except OSError as exc:
            return exc.errno
        return None

    # fill a's send buffer so a writer really waits
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass
    readers = [greenpatch.spawn(waiter, READ) for _ in range(3)]
    writer = greenpatch.spawn(waiter, WRITE)
    greenpatch.sleep(0.01)
    close(a)
    assert [r.wait() for r in readers] == [errno.EBADF] * 3
    assert writer.wait() == errno.EBADF
    close(b)


def test_reused_fd_number_never_gets_the_old_sockets_events():
    hub = get_hub()
    a, b = nonblocking_pair()
    fd = a.fileno()
    hub.wait_fd(fd, WRITE, timeout=1)  # registers the fd
    alive = os.dup(fd)  # keeps the old file description (and its epoll item) alive
    close(a)
    c, d = nonblocking_pair()
    reuse = c if c.fileno() == fd else d
    other = d if reuse is c else c
    assert reuse.fileno() == fd
    # The old peer writing must not wake a reader of the new socket.
    b.send(b"old")
    with pytest.raises(TimeoutError):
        hub.wait_fd(fd, READ, timeout=0.05)
    other.send(b"new")
    hub.wait_fd(fd, READ, timeout=5)
    assert reuse.recv(10) == b"new"
    close(b, c, d)
    os.close(alive)


def test_wait_fd_on_negative_fd_raises_ebadf():
    with pytest.raises(OSError) as info:
        get_hub().wait_fd(-1, READ)
    assert info.value.errno == errno.EBADF


def test_wait_fds_reports_timeout_and_readiness():
    a, b = nonblocking_pair()
    hub = get_hub()
    assert hub.wait_fds([a.fileno()], [], 0.01) is False
    greenpatch.spawn_after(0.01, b.send, b"y")
    assert hub.wait_fds([a.fileno()], [], 5) is True
    close(a, b)


def test_regular_file_counts_as_always_ready(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with open(path, "rb") as f:
        get_hub().wait_fd(f.fileno(), READ, timeout=0.01)


def test_exception_in_a_callback_is_reported_and_the_hub_goes_on(capsys):
    hub = get_hub()
    hub.schedule(lambda: 1 / 0)
    hub.call_later(0, lambda: {}["missing"])
    greenpatch.sleep(0.01)
    greenpatch.sleep(0)
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "KeyError" in err
    assert greenpatch.spawn(lambda: 42).wait() == 42


def test_waiting_inside_the_hub_raises():
    hub = get_hub()
    errors = []

    def callback():
        try:
            greenpatch.sleep(0.01)
        except BlockingInHubError as exc:
            errors.append(exc)

    hub.schedule(callback)
    greenpatch.sleep(0)
    assert len(errors) == 1


def run_script(code, timeout=20):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def test_deadlock_raises_a_clear_error_naming_the_waiters():
    result = run_script("""
        import greenpatch
        from greenpatch.hub import park
        def stuck():
            park([], lambda: False)
        t = greenpatch.spawn(stuck)
        park([], lambda: False)
    """)
    assert result.returncode == 1
    assert "DeadlockError" in result.stderr
    assert "every green thread is waiting" in result.stderr
    assert "in stuck" in result.stderr and "main greenlet" in result.stderr


def test_no_deadlock_error_while_a_signal_handler_could_wake_us():
    result = run_script("""
        import os, signal, greenpatch
        from greenpatch.hub import park, wake_all
        waiters, state = [], []
        def handler(signum, frame):
            state.append(signum)
            wake_all(waiters)
        signal.signal(signal.SIGUSR1, handler)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGUSR1))
        park(waiters, lambda: bool(state))
        print("woken by", state)
    """)
    assert result.returncode == 0, result.stderr
    assert "woken by [%d]" % 10 in result.stdout or "woken by [" in result.stdout


def test_ctrl_c_reaches_the_main_greenlet_while_the_hub_polls():
    code = """
        import socket, sys, greenpatch
        from greenpatch.hub import READ, get_hub
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(); srv.setblocking(False)
        for n in range(100):
            greenpatch.spawn(greenpatch.sleep, 60)
        print("ready", flush=True)
        try:
            get_hub().wait_fd(srv.fileno(), READ)
        except KeyboardInterrupt:
            print("KeyboardInterrupt in main", flush=True)
            sys.exit(0)
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        proc.send_signal(2)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert "KeyboardInterrupt in main" in out, err
    assert proc.returncode == 0


def test_fork_child_gets_a_fresh_hub():
    result = run_script("""
        import os, greenpatch
        from greenpatch.hub import get_hub
        parent_hub = get_hub()
        greenpatch.spawn(greenpatch.sleep, 30)
        greenpatch.sleep(0)
        pid = os.fork()
        if pid == 0:
            ok = get_hub() is not parent_hub and get_hub().counts()["timers"] == 0
            greenpatch.sleep(0.01)
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status))
        os._exit(0)
    """)
    assert "child 0" in result.stdout, result.stderr


def test_ctrl_c_while_another_green_thread_runs_still_reaches_main():
    code = """
        import os, signal, sys, threading, time
        import greenpatch
        greenpatch.monkey_patch()
        def busy():
            # Runs Python code (not waiting) when the signal arrives.
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(100000):
                pass
            print("busy thread finished", flush=True)
        worker = threading.Thread(target=busy)
        try:
            worker.start()
            worker.join()
            time.sleep(5)
        except KeyboardInterrupt:
            print("KeyboardInterrupt in main", flush=True)
            sys.exit(0)
    """
    result = run_script(code)
    assert "busy thread finished" in result.stdout
    assert "KeyboardInterrupt in main" in result.stdout, result.stderr
    assert "Exception in thread" not in result.stderr


FORK_FROM_A_GREEN_THREAD = """
    import os, sys, threading, time, atexit
    import greenpatch
    greenpatch.monkey_patch()
    atexit.register(lambda: print("atexit", "child" if os.getpid() != parent else "parent", flush=True))
    parent = os.getpid()
    stop = threading.Event()

    def ticker():  # a parent thread: it must never run in the child
        while not stop.wait(0.005):
            if os.getpid() != parent:
                print("ticker ran in the child", flush=True)

    def forker():
        pid = os.fork()
        if pid == 0:
            print("child main thread:", threading.main_thread().name, flush=True)
            CHILD_BODY
            return
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status), flush=True)

    tick = threading.Thread(target=ticker, name="ticker")
    tick.start()
    t = threading.Thread(target=forker, name="forker")
    t.start()
    t.join()
    stop.set()
    tick.join()
    print("parent main done", flush=True)
"""


def test_fork_from_a_green_thread_continues_only_that_thread_and_exits_when_it_ends():
    body = ("late = threading.Thread(target=lambda: (time.sleep(0.05), print('new child thread done', flush=True)))\n"
            "            late.start()")
    result = run_script(FORK_FROM_A_GREEN_THREAD.replace("CHILD_BODY", body))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # As with real threads: the forking thread is the child's main thread, the child's own
    # thread finishes, the child exits 0 without atexit; the parent's main and ticker never run there.
    assert lines == ["child main thread: forker", "new child thread done", "child status 0",
                     "parent main done", "atexit parent"], result.stdout + result.stderr
    assert "DeadlockError" not in result.stderr, result.stderr


def test_fork_from_a_green_thread_whose_child_threads_are_stuck_reports_and_exits_1():
    body = "threading.Thread(target=threading.Event().wait, name='stuck-in-child').start()"
    result = run_script(FORK_FROM_A_GREEN_THREAD.replace("CHILD_BODY", body))
    assert result.returncode == 0, result.stderr
    assert "child status 1" in result.stdout, result.stdout + result.stderr
    assert "stuck-in-child" in result.stderr and "DeadlockError" in result.stderr, result.stderr
    assert "ticker ran in the child" not in result.stdout


def test_a_due_timer_fires_within_a_long_batch_of_ready_callbacks():
    hub = get_hub()
    order = []
    hub.call_later(0, order.append, "timer")
    for n in range(1000):
        hub.schedule(order.append, n)
    greenpatch.sleep(0.01)
    # The timer does not wait for all 1,000 callbacks: the hub checks for due timers every 64.
    assert order.index("timer") <= 64
    assert [item for item in order if item != "timer"] == list(range(1000))
