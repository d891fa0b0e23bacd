"""greenpatch.debug: the blocked-hub detector and run info.

Every scenario runs in a child interpreter (the pytest process is never
patched); the assertions read what the child printed.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from greenpatch import debug


def run(code, *args, env=None, timeout=20):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=full_env)


BLOCKER = textwrap.dedent("""
    import greenpatch, threading, time
    from greenpatch.patcher import original
    greenpatch.monkey_patch()
    from greenpatch import debug
    watcher = debug.watch_blocking(0.1)

    def blocker():
        original("time", "sleep")(0.3)  # BLOCKS THE HUB

    def ticker():
        for _ in range(5):
            time.sleep(0.02)

    threads = [threading.Thread(target=f) for f in (blocker, ticker)]
    for t in threads: t.start()
    for t in threads: t.join()
    time.sleep(0.15)
""")


def test_a_green_thread_calling_the_original_sleep_is_reported_at_its_line():
    result = run(BLOCKER + "print(watcher.summary())\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "blocked 1 time(s)" in out
    assert "in blocker: 1 time(s)" in out
    line = [n for n, text in enumerate(textwrap.dedent(BLOCKER).splitlines(), 1) if "BLOCKS THE HUB" in text][0]
    assert f"<string>:{line} in blocker" in out
    assert f'File "<string>", line {line}, in blocker' in out  # the sample stack
    # The summary is also printed at exit, while the watcher still runs.
    assert "in blocker: 1 time(s)" in result.stderr


def test_green_sleeps_only_report_nothing():
    result = run("""
        import greenpatch, threading, time
        greenpatch.monkey_patch()
        from greenpatch import debug
        watcher = debug.watch_blocking(0.05)
        def napper():
            for _ in range(10):
                time.sleep(0.03)
        threads = [threading.Thread(target=napper) for _ in range(3)]
        for t in threads: t.start()
        for t in threads: t.join()
        time.sleep(0.2)  # idle in the poller: not blocking
        print(repr(watcher.summary()), watcher.episodes)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "'' 0"
    assert "blocked" not in result.stderr


def test_stop_ends_the_watcher_thread_and_nothing_is_printed_at_exit():
    result = run(BLOCKER + """
import _thread
before = _thread._count()
watcher.stop()
print(watcher.running, before - original("_thread", "_count")())
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1"]
    assert result.stderr == ""


def test_the_environment_variable_starts_the_watcher_at_patch_time():
    code = BLOCKER.replace("watcher = debug.watch_blocking(0.1)", "")
    result = run(code, env={"GREENPATCH_BLOCK_THRESHOLD": "0.1"})
    assert result.returncode == 0, result.stderr
    assert "in blocker: 1 time(s)" in result.stderr


def test_the_cli_option_starts_the_watcher(tmp_path):
    script = tmp_path / "blocks.py"
    script.write_text(textwrap.dedent(BLOCKER).replace("greenpatch.monkey_patch()", "")
                      .replace("watcher = debug.watch_blocking(0.1)", ""))
    result = subprocess.run([sys.executable, "-m", "greenpatch", "--block-threshold", "0.1", str(script)],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert f"{script}:9 in blocker: 1 time(s)" in result.stderr
    assert 'original("time", "sleep")(0.3)  # BLOCKS THE HUB' in result.stderr


def test_the_table_of_call_sites_is_bounded():
    watcher = debug.BlockingWatcher(0.1, limit=3, report_at_exit=False)
    import traceback
    for n in range(10):
        entry = traceback.FrameSummary(f"/app/f{n}.py", n, "g")
        site = watcher._site(traceback.StackSummary.from_list([entry]))
        watcher._close(site, 0.1 * (n + 1))
    assert len(watcher.sites) == 3
    assert watcher.episodes == 10 and watcher.dropped == 7
    assert "/app/f9.py:9 in g" in watcher.summary()


def test_a_threshold_must_be_positive():
    with pytest.raises(ValueError):
        debug.watch_blocking(0)


SCENARIO = textwrap.dedent("""
    import greenpatch, queue, socket, threading, time
    greenpatch.monkey_patch()
    from greenpatch import debug

    lock = threading.Lock(); lock.acquire()
    event = threading.Event()
    a, b = socket.socketpair()
    q = queue.Queue()
    def on_recv(): a.recv(10)
    def on_lock(): lock.acquire()
    def on_event(): event.wait()
    def on_sleep(): time.sleep(30)
    def on_queue(): q.get()
    for f in (on_recv, on_lock, on_event, on_sleep, on_queue):
        threading.Thread(target=f, name=f.__name__[3:] + "-thread", daemon=True).start()
    never = greenpatch.spawn_after(60, print)
    time.sleep(0.05)
""")


def parse_threads(text):
    """{name: (state, the rest of its line)} from format_run_info's output."""
    found = {}
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and " [" in line:
            name, _, rest = line.strip().partition(" [")
            state, _, waits = rest.partition("]")
            found[name] = (state, waits)
    return found


def test_run_info_names_what_each_green_thread_waits_on():
    result = run(SCENARIO + "print(debug.format_run_info())\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    threads = parse_threads(out)
    assert threads["MainThread"][0] == "running"
    state, waits = threads["recv-thread"]
    assert state == "waiting" and "for read on <greenpatch.green.socket.socket fd=" in waits
    assert threads["lock-thread"][0] == "waiting" and "waiting on Lock <locked" in threads["lock-thread"][1]
    assert "waiting on Event <" in threads["event-thread"][1] and "unset" in threads["event-thread"][1]
    assert "waiting on sleep until" in threads["sleep-thread"][1]
    assert "in Queue.get() of <" in threads["queue-thread"][1]
    assert any(state == "not started" for state, _ in threads.values())
    assert "fd_waiters 1" in out and "timers 2" in out
    # each thread's stack ends at its own line
    assert 'File "<string>", line 10, in on_recv' in out and 'line 11, in on_lock' in out


def test_run_info_data_is_plain():
    result = run(SCENARIO + """
import json
info = debug.run_info(all_hubs=True)
print(json.dumps(info)[:20], len(info), sorted(t["state"] for t in info[0]["threads"]))
""")
    assert result.returncode == 0, result.stderr
    assert "1 ['not started', 'running', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting']" in result.stdout


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_dump_on_a_signal_prints_run_info_to_stderr():
    code = textwrap.dedent(SCENARIO) + textwrap.dedent("""
        print("ready", flush=True)
        time.sleep(5)
    """)
    env = dict(os.environ, GREENPATCH_DUMP_ON="SIGUSR1")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            if all(f"{name}-thread [" in "".join(lines) for name in ("recv", "lock", "event", "sleep", "queue")):
                break  # (threads are listed in no fixed order)
        text = "".join(lines)
        assert "run info on signal" in text
        assert "recv-thread [waiting] waiting on fd" in text
        assert "MainThread [" in text
    finally:
        proc.kill()
        proc.communicate()
