"""File objects on pipes, FIFOs, ttys and sockets wait greenly (issue 6, item 7).

The patched scenarios run in child interpreters (the pytest process stays
unpatched); the twin's own behaviour is also checked in-process through
``greenpatch.green.io`` used directly.  Every scenario keeps a heartbeat
green thread (10 ms sleeps) and asserts it was never more than 100 ms late.
"""

import errno
import io as std_io
import json
import os
import subprocess
import sys
import time

import pytest

import greenpatch
from greenpatch.green import io as green_io

from children import assert_kept_beating, heartbeat, program, run_child

pytestmark = pytest.mark.timeout(60)

PRELUDE = "import io, os, subprocess\n"


def child(code: str, env=None) -> dict:
    return run_child(code, prelude=PRELUDE, env=env)


READER_AND_WRITERS = """
    beat = Heartbeat()
    r, w = os.pipe()
    lines = []

    def reader():
        f = {opener}
        while True:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        f.close()

    def writer(i):
        for j in range(20):
            os.write(w, f"{{i}} {{j}}\\n".encode())
            time.sleep(0.005)

    threads = [threading.Thread(target=reader)] + [threading.Thread(target=writer, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join()
    os.close(w)
    threads[0].join()
    kinds = sorted({{type(x).__name__ for x in lines}})
    print(json.dumps(dict(beat.done(), count=len(lines), distinct=len(set(lines)), kinds=kinds)))
"""


@pytest.mark.parametrize("opener, kind", [
    ("os.fdopen(r)", "str"),
    ("os.fdopen(r, 'rb')", "bytes"),
    ("open(r, 'rb')", "bytes"),
    ("open(r, 'r', encoding='utf-8')", "str"),
    ("io.open(r, 'rb', buffering=0)", "bytes"),
])
def test_reader_thread_and_writer_threads_on_one_pipe(opener, kind):
    # Under gevent and eventlet (open(r, 'rb')) this program never ends: the
    # reader blocks the one OS thread in read(2), so no writer ever runs.
    out = child(READER_AND_WRITERS.format(opener=opener))
    assert (out["count"], out["distinct"], out["kinds"]) == (100, 100, [kind])
    assert_kept_beating(out, min_beats=5)


def test_text_mode_readline_read_n_readall_iteration_and_eof():
    out = child("""
        beat = Heartbeat()
        r, w = os.pipe()

        def feed():
            for chunk in (b"first line\\n", b"second", b" line\\nthird\\nfourth\\n", b"tail, no newline"):
                time.sleep(0.05)
                os.write(w, chunk)
            time.sleep(0.05)
            os.close(w)

        threading.Thread(target=feed).start()
        f = open(r, encoding="utf-8")
        res = {"type": type(f.buffer).__module__ + "." + type(f.buffer).__name__}
        res["readline"] = f.readline()
        res["read5"] = f.read(5)
        res["iter"] = [next(f), next(f)]
        res["rest"] = f.read()
        res["eof"] = [f.read(), f.readline(), f.read(3)]
        f.close()
        print(json.dumps(dict(beat.done(), **res)))
    """)
    assert out["type"] == "greenpatch.green.io.BufferedReader"
    assert out["readline"] == "first line\n"
    assert out["read5"] == "secon"
    assert out["iter"] == ["d line\n", "third\n"]
    assert out["rest"] == "fourth\ntail, no newline"
    assert out["eof"] == ["", "", ""]
    assert_kept_beating(out, min_beats=15)


def test_close_while_another_thread_reads_raises_instead_of_hanging():
    out = child("""
        beat = Heartbeat()
        res = {}
        for mode in ("r", "rb", "rb0"):
            r, w = os.pipe()
            f = open(r, mode[:2], buffering=0 if mode == "rb0" else -1)
            errors = []

            def reader():
                try:
                    f.readline()
                except Exception as exc:
                    errors.append([type(exc).__name__, getattr(exc, "errno", None)])

            t = threading.Thread(target=reader)
            t.start()
            time.sleep(0.1)
            f.close()
            t.join()
            os.close(w)
            res[mode] = errors
        print(json.dumps(dict(beat.done(), **res)))
    """)
    for mode in ("r", "rb", "rb0"):
        assert out[mode] == [["OSError", errno.EBADF]], out
    assert_kept_beating(out, min_beats=5)


def test_fifo_opened_by_path_from_two_threads():
    # gevent and eventlet hang here: open(2) of a FIFO blocks until the other end opens.
    out = child("""
        import tempfile
        beat = Heartbeat()
        path = os.path.join(tempfile.mkdtemp(), "fifo")
        os.mkfifo(path)
        got = []

        def reader():
            with open(path) as f:
                got.append([f.name, f.mode, type(f.buffer.raw).__module__])
                got.extend(f)

        def writer():
            time.sleep(0.1)
            with io.open(path, "w") as f:
                for i in range(3):
                    f.write(f"line {i}\\n")
                    f.flush()
                    time.sleep(0.05)

        threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps(dict(beat.done(), got=got, path=path)))
    """)
    assert out["got"] == [[out["path"], "r", "greenpatch.green.io"], "line 0\n", "line 1\n", "line 2\n"]
    assert_kept_beating(out, min_beats=5)


def test_writer_of_a_full_pipe_waits_greenly_for_a_slow_reader():
    out = child("""
        beat = Heartbeat()
        r, w = os.pipe()
        payload = bytes(range(256)) * 2048  # 512 KiB, eight times what the pipe holds
        received = bytearray()

        def slow_reader():
            while True:
                time.sleep(0.01)
                data = os.read(r, 65536)
                if not data:
                    break
                received.extend(data)

        t = threading.Thread(target=slow_reader)
        t.start()
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        t.join()
        print(json.dumps(dict(beat.done(), ok=bytes(received) == payload)))
    """)
    assert out["ok"]
    assert_kept_beating(out, min_beats=5)


def test_two_threads_reading_one_file_object_take_turns():
    # The C buffered objects lock per OS thread: without the green lock the
    # second green thread would get "RuntimeError: reentrant call".
    out = child("""
        beat = Heartbeat()
        r, w = os.pipe()
        f = open(r, "rb")
        got, errors = [], []

        def reader():
            try:
                while True:
                    line = f.readline()
                    if not line:
                        return
                    got.append(line)
            except Exception as exc:
                errors.append(repr(exc))

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for i in range(30):
            os.write(w, b"%d\\n" % i)
            time.sleep(0.005)
        os.close(w)
        for t in threads:
            t.join()
        print(json.dumps(dict(beat.done(), got=sorted(int(x) for x in got), errors=errors)))
    """)
    assert out["errors"] == []
    assert out["got"] == list(range(30))
    assert_kept_beating(out, min_beats=5)


def test_popen_stdout_readline_is_green():
    out = child("""
        beat = Heartbeat()
        p = subprocess.Popen(["sh", "-c", "sleep 0.3; echo hello; sleep 0.3; echo world"], stdout=subprocess.PIPE)
        lines = [p.stdout.readline(), p.stdout.readline(), p.stdout.readline()]
        raw = type(p.stdout.raw).__module__
        p.wait()
        p.stdout.close()
        print(json.dumps(dict(beat.done(), lines=[x.decode() for x in lines], raw=raw)))
    """)
    assert out["lines"] == ["hello\n", "world\n", ""]
    assert out["raw"] == "greenpatch.green.io"
    assert_kept_beating(out, min_beats=30)


def test_piped_stdin_is_green_under_the_command_line(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(program("""
        beat = Heartbeat()
        print("ready", flush=True)
        got = [sys.stdin.readline(), input(), sys.stdin.read()]
        print(json.dumps(dict(beat.done(), got=got, name=sys.stdin.name, mode=sys.stdin.mode,
                              raw=type(sys.stdin.buffer.raw).__module__)))
    """, prelude=PRELUDE, patch=False))
    proc = subprocess.Popen([sys.executable, "-m", "greenpatch", str(script)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        for chunk in (b"one\n", b"two\nthree\n"):
            time.sleep(0.3)
            proc.stdin.write(chunk)
            proc.stdin.flush()
        proc.stdin.close()
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr.decode()
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    assert out["got"] == ["one\n", "two", "three\n"]
    assert (out["name"], out["mode"], out["raw"]) == ("<stdin>", "r", "greenpatch.green.io")
    assert_kept_beating(out, min_beats=15)


def test_regular_files_get_the_real_objects_and_builtins_open_is_patched(tmp_path):
    path = tmp_path / "data.txt"
    out = child(f"""
        import builtins, greenpatch.patcher as patcher
        from greenpatch.green import io as green_io
        path = {str(path)!r}
        with open(path, "w") as f:
            f.write("a\\nb\\n")
        types = []
        for mode in ("r", "rb", "r+b", "a"):
            with open(path, mode) as f:
                types.append(type(getattr(f, "buffer", f)).__module__ + "." + type(getattr(f, "buffer", f)).__name__)
        with open(path) as f:
            content = f.read()
        print(json.dumps(dict(types=types, content=content, builtins=builtins.open is green_io.open,
                              io=io.open is green_io.open,
                              original=patcher.original("builtins", "open") is patcher.original("io", "open"),
                              patched=patcher.report()["patched"].get("io"))))
    """)
    assert out["types"] == ["_io.BufferedReader", "_io.BufferedReader", "_io.BufferedRandom", "_io.BufferedWriter"]
    assert out["content"] == "a\nb\n"
    assert out["builtins"] and out["io"] and out["original"]
    assert out["patched"] == ["open"]


def test_tpool_regular_files_option(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 100000 + b"\nend\n")
    out = child(f"""
        beat = Heartbeat()
        path = {str(path)!r}
        with open(path, "rb") as f:
            first = f.readline()
            rest = f.read()
            raw = type(f.raw).__module__
        with open(path, "r+b") as f:
            f.seek(0, 2)
            f.write(b"more\\n")
        with open(path, encoding="ascii") as f:
            lines = f.readlines()
        print(json.dumps(dict(beat.done(), first=len(first), rest=rest.decode(), raw=raw, last=lines[-1])))
    """, env=dict(os.environ, GREENPATCH_TPOOL_FILES="1"))
    assert (out["first"], out["rest"], out["raw"], out["last"]) == (100001, "end\n", "greenpatch.green.io", "more\n")
    assert out["late"] < 0.100


# -- the twin used directly (no patch), in-process ---------------------------------


def _outcome(call):
    try:
        return ("ok", call())
    except BaseException as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("args, kwargs", [
    ((), {"mode": "rt", "buffering": 0}),
    ((), {"mode": "rbt"}),
    ((), {"mode": "q"}),
    ((), {"mode": "rb", "encoding": "utf-8"}),
    ((), {"mode": "rb", "newline": "\n"}),
    ((), {"mode": "r", "encoding": "no-such-codec"}),
    ((), {"mode": "r", "newline": "x"}),
    ((), {"mode": 3}),
    ((), {"mode": "r+"}),
    ((), {"mode": "rb", "buffering": "big"}),
])
def test_errors_and_fd_closing_match_io_open(args, kwargs):
    results = []
    for opener in (std_io.open, green_io.open):
        r, w = os.pipe()
        try:
            results.append(_outcome(lambda: opener(r, *args, **kwargs).close()))
            try:
                os.fstat(r)
                results.append("fd open")
            except OSError:
                results.append("fd closed")
        finally:
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError:
                    pass
    assert results[:2] == results[2:]
    assert results[0][0] is not "ok"  # noqa: F632  (every case is an error)


def test_bad_fds_and_paths_raise_what_io_open_raises(tmp_path):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    for file in (r, -1, 10 ** 30, str(tmp_path / "missing"), str(tmp_path), 3.5):
        assert _outcome(lambda: green_io.open(file, "rb")) == _outcome(lambda: std_io.open(file, "rb")), file


def test_attributes_match_io_open():
    r, w = os.pipe()
    try:
        for mode, buffering in (("rb", -1), ("rb", 0), ("r", -1), ("rb", 100), ("r", 1)):
            real = std_io.open(r, mode, buffering, closefd=False)
            green = green_io.open(r, mode, buffering, closefd=False)
            for name in ("name", "mode", "closed", "line_buffering", "encoding", "errors", "newlines"):
                assert getattr(green, name, None) == getattr(real, name, None), (mode, name)
            inner_real, inner_green = getattr(real, "buffer", real), getattr(green, "buffer", green)
            assert isinstance(inner_green, type(inner_real))
            assert inner_green.__sizeof__() == inner_real.__sizeof__()  # the same buffer size
            assert getattr(inner_green, "raw", inner_green).closefd is False
            real.close()
            green.close()
        os.fstat(r)  # closefd=False left it open
    finally:
        os.close(r)
        os.close(w)


def test_a_tty_is_line_buffered_and_green():
    master, slave = os.openpty()
    try:
        f = green_io.open(slave, "w", closefd=False)
        real = std_io.open(slave, "w", closefd=False)
        assert f.line_buffering is real.line_buffering is True
        reader = green_io.open(slave, "rb", closefd=False)
        assert type(reader.raw) is green_io.FileIO
        lateness, stop = [], []
        beat = greenpatch.spawn(heartbeat, lateness, stop)
        greenpatch.spawn_after(0.2, os.write, master, b"typed\n")
        assert reader.readline() == b"typed\n"
        stop.append(True)
        beat.wait()
        assert len(lateness) >= 10 and max(lateness) < 0.100
        for obj in (f, real, reader):
            obj.close()
    finally:
        os.close(master)
        os.close(slave)


def test_socket_fd_through_open():
    import socket

    a, b = socket.socketpair()
    try:
        f = green_io.open(a.fileno(), "rb", closefd=False)
        greenpatch.spawn_after(0.1, b.sendall, b"over a socket\n")
        assert f.readline() == b"over a socket\n"
        f.close()
    finally:
        a.close()
        b.close()


def test_non_blocking_fd_returns_none_like_io_open():
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        green = green_io.open(r, "rb", buffering=0, closefd=False)
        real = std_io.open(r, "rb", buffering=0, closefd=False)
        assert green.read(10) is real.read(10) is None
        assert green.readall() is real.readall() is None
        buffered = [std_io.open(r, "rb", closefd=False), green_io.open(r, "rb", closefd=False)]
        assert _outcome(buffered[0].read) == _outcome(buffered[1].read)
        assert _outcome(lambda: buffered[0].read(1)) == _outcome(lambda: buffered[1].read(1))
    finally:
        os.close(r)
        os.close(w)


def test_write_only_file_refuses_to_read_at_once():
    r, w = os.pipe()
    try:
        f = green_io.open(w, "wb", buffering=0, closefd=False)
        with pytest.raises(std_io.UnsupportedOperation):
            f.read(1)
        f.close()
        with pytest.raises(ValueError, match="closed file"):
            f.read(1)
    finally:
        os.close(r)
        os.close(w)


def test_open_on_a_green_sockets_fd_blocks_like_the_real_socket():
    # Under the patch a socket's fd is non-blocking (green sockets wait
    # themselves); a file object on it must still wait for data, as on a
    # real blocking socket.
    out = child("""
        import socket
        beat = Heartbeat()
        a, b = socket.socketpair()
        blocking_fd = os.get_blocking(a.fileno())
        f = open(a.fileno(), "rb", closefd=False)
        w = open(b.fileno(), "wb", buffering=0, closefd=False)

        def send():
            for part in (b"hel", b"lo\\n", b"x" * 300000 + b"\\n"):
                time.sleep(0.1)
                w.write(part)

        t = threading.Thread(target=send)
        t.start()
        lines = [f.readline(), len(f.readline())]
        t.join()
        print(json.dumps(dict(beat.done(), blocking_fd=blocking_fd, lines=[lines[0].decode(), lines[1]])))
    """)
    assert out["blocking_fd"] is False
    assert out["lines"] == ["hello\n", 300001]
    assert_kept_beating(out, min_beats=5)
