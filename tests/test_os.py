"""greenpatch.green.os: pipe reads/writes and child waits block only the calling green thread."""

import errno
import os as std_os
import subprocess
import sys
import time

import pytest

import greenpatch
from greenpatch.green import os as green_os

from children import heartbeat


def test_covers_every_public_name_and_lists_only_the_replaced():
    public = {name for name in dir(std_os) if not name.startswith("_")}
    assert public <= set(dir(green_os))
    assert sorted(green_os.__implements__) == ["read", "wait", "waitpid", "write"]
    assert green_os.fstat is std_os.fstat


def test_pipe_read_waits_greenly_and_leaves_the_fd_blocking():
    r, w = std_os.pipe()
    try:
        lateness, stop = [], []
        beat = greenpatch.spawn(heartbeat, lateness, stop)
        writer = greenpatch.spawn_after(0.2, green_os.write, w, b"hello")
        start = time.monotonic()
        assert green_os.read(r, 100) == b"hello"
        assert time.monotonic() - start >= 0.15
        assert writer.wait() == 5
        stop.append(True)
        beat.wait()
        assert len(lateness) >= 5 and max(lateness) < 0.150
        assert std_os.get_blocking(r) and std_os.get_blocking(w)
    finally:
        std_os.close(r)
        std_os.close(w)


def test_large_blocking_write_to_a_pipe_is_chunked_and_complete():
    r, w = std_os.pipe()
    payload = bytes(range(256)) * 4096  # 1 MiB, far more than the pipe holds
    received = bytearray()

    def reader():
        while len(received) < len(payload):
            received.extend(green_os.read(r, 65536))

    try:
        thread = greenpatch.spawn(reader)
        assert green_os.write(w, payload) == len(payload)
        thread.wait()
        assert bytes(received) == payload
    finally:
        std_os.close(r)
        std_os.close(w)


def test_eof_and_errors_are_the_real_ones():
    r, w = std_os.pipe()
    std_os.close(w)
    assert green_os.read(r, 10) == b""
    std_os.close(r)
    with pytest.raises(OSError) as info:
        green_os.read(r, 10)
    assert info.value.errno == 9
    r, w = std_os.pipe()
    std_os.close(r)
    with pytest.raises(BrokenPipeError):
        green_os.write(w, b"x")
    std_os.close(w)


def test_non_blocking_fd_raises_like_the_stdlib():
    r, w = std_os.pipe()
    std_os.set_blocking(r, False)
    try:
        with pytest.raises(BlockingIOError):
            green_os.read(r, 10)
    finally:
        std_os.close(r)
        std_os.close(w)


def test_regular_file_reads_and_writes(tmp_path):
    fd = std_os.open(tmp_path / "f", std_os.O_RDWR | std_os.O_CREAT)
    try:
        assert green_os.write(fd, b"abc" * 10000) == 30000
        std_os.lseek(fd, 0, 0)
        assert green_os.read(fd, 5) == b"abcab"
    finally:
        std_os.close(fd)


def test_fd_number_reused_after_close_does_not_hang():
    for _ in range(3):
        r, w = std_os.pipe()
        greenpatch.spawn_after(0.02, std_os.write, w, b"x")
        assert green_os.read(r, 1) == b"x"
        std_os.close(r)
        std_os.close(w)


def test_waitpid_waits_greenly():
    child = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(7)"])
    lateness, stop = [], []
    beat = greenpatch.spawn(heartbeat, lateness, stop)
    assert green_os.waitpid(child.pid, std_os.WNOHANG) == (0, 0)
    pid, status = green_os.waitpid(child.pid, 0)
    child.returncode = std_os.waitstatus_to_exitcode(status)
    stop.append(True)
    beat.wait()
    assert pid == child.pid and child.returncode == 7
    assert len(lateness) >= 10 and max(lateness) < 0.150
    with pytest.raises(ChildProcessError):
        green_os.waitpid(child.pid, 0)


def test_wait_and_the_polling_fallback(monkeypatch):
    monkeypatch.setattr(green_os, "_pidfd_open", None)
    child = subprocess.Popen(["sleep", "0.1"])
    ticks = []
    greenpatch.spawn(lambda: [ticks.append(greenpatch.sleep(0.01)) for _ in range(5)])
    pid, status = green_os.wait()
    child.returncode = std_os.waitstatus_to_exitcode(status)
    assert pid == child.pid and child.returncode == 0
    assert len(ticks) >= 3


def test_write_to_a_pipes_read_end_fails_at_once_as_the_real_call_does():
    r, w = std_os.pipe()
    try:
        with pytest.raises(OSError) as err:
            green_os.write(r, b"x")  # would never poll writable: must not wait for it
        assert err.value.errno == errno.EBADF
    finally:
        std_os.close(r)
        std_os.close(w)
