"""The pytest plugin, run as real pytest in a child process on a throwaway project.

Each test writes a small test file into ``tmp_path`` and runs
``python -m pytest`` there with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` set (so the
run does not depend on which other plugins this venv has) and the plugin
named with ``-p``; the ``--greenpatch`` tests load it through its ``pytest11``
entry point instead and skip when the installed metadata lacks it.
"""

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

PLUGIN = "greenpatch.contrib.pytest"


def has_entry_point():
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


def run_pytest(tmp_path, source, *args, autoload=False):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(source))
    env = dict(os.environ)
    env.pop("GREENPATCH", None)
    env.pop("PYTEST_ADDOPTS", None)
    if not autoload:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


GREEN_TEST = """
    import os, socket, threading
    import greenpatch.patcher

    def test_green():
        assert greenpatch.patcher.is_patched("socket") and greenpatch.patcher.is_patched("thread")
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        tasks = []

        def serve():
            for _ in range(5):
                conn, _ = listener.accept()
                with conn:
                    conn.sendall(conn.recv(100).upper())

        def client(i, out):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"hi%d" % i)
                out.append(sock.recv(100))
                tasks.append(len(os.listdir("/proc/self/task")))

        out = []
        threads = [threading.Thread(target=serve)] + [
            threading.Thread(target=client, args=(i, out)) for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        listener.close()
        assert sorted(out) == [b"HI%d" % i for i in range(5)]
        assert tasks == [1] * 5, tasks   # six threads, one OS thread
"""


def test_suite_runs_green(tmp_path):
    result = run_pytest(tmp_path, GREEN_TEST, "-p", PLUGIN, "-v")  # -v cancels -q: show the header
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "greenpatch: patched socket" in result.stdout  # the report header


def test_without_the_plugin_nothing_is_patched(tmp_path):
    source = """
        import socket, time
        import greenpatch.patcher

        def test_plain():
            assert greenpatch.patcher.patched() == []
            assert socket.socket is greenpatch.patcher.original("socket", "socket")
    """
    result = run_pytest(tmp_path, source, autoload=True)
    assert result.returncode == 0, result.stdout + result.stderr
    if has_entry_point():
        assert "--greenpatch" in run_pytest(tmp_path, source, "--help", autoload=True).stdout


def test_entry_point_enabled_by_option(tmp_path):
    if not has_entry_point():
        pytest.skip("the installed greenpatch metadata has no pytest11 entry point (reinstall the package)")
    result = run_pytest(tmp_path, GREEN_TEST, "--greenpatch", autoload=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_leaking_test_fails_with_where_it_waits(tmp_path):
    source = """
        import threading, time
        import greenpatch

        forever = threading.Event()

        def park_here():
            forever.wait()

        def test_leaks_thread():
            threading.Thread(target=park_here, name="leaky-thread", daemon=True).start()

        def test_leaks_spawn():
            greenpatch.spawn(time.sleep, 30)

        def test_clean():
            t = threading.Thread(target=time.sleep, args=(0.01,))
            t.start()
            t.join()
    """
    result = run_pytest(tmp_path, source, "-p", PLUGIN)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "2 errors" in out and "3 passed" in out, out
    assert "test_inner.py::test_leaks_thread leaked 1 green thread(s) past its end" in out
    assert "leaky-thread" in out and "in park_here" in out and "forever.wait()" in out
    assert "test_inner.py::test_leaks_spawn leaked 1 green thread(s)" in out
    assert "waiting on sleep until" in out
    assert "test_clean leaked" not in out


def test_blocking_test_fails_with_its_stack(tmp_path):
    source = """
        import time
        import greenpatch.patcher

        real_sleep = greenpatch.patcher.original("time", "sleep")

        def culprit():
            real_sleep(0.4)

        def test_blocks():
            culprit()

        def test_green_sleep_is_fine():
            time.sleep(0.4)
    """
    result = run_pytest(tmp_path, source, "-p", PLUGIN, "--greenpatch-block-threshold", "0.1")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 1 passed" in out, out
    assert "test_inner.py::test_blocks blocked the hub" in out
    assert "in culprit" in out and "real_sleep(0.4)" in out
    assert "FAILED test_inner.py::test_blocks" in out


def test_threshold_alone_is_a_usage_error(tmp_path):
    if not has_entry_point():
        pytest.skip("the installed greenpatch metadata has no pytest11 entry point (reinstall the package)")
    result = run_pytest(tmp_path, "def test_x(): pass\n", "--greenpatch-block-threshold", "0.1", autoload=True)
    assert result.returncode == 4, result.stdout + result.stderr
    assert "needs --greenpatch" in result.stderr
