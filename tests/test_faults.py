"""The fault matrix: what a program sees when things go wrong under greenpatch.

One test per row of the matrix (issue 5).  Each asserts the exact error the
faulting call raises, and that the rest of the program kept running: the hub
still serves a fresh round trip (``assert_hub_alive``) and nothing leaked
(``no_leaks`` from tests/leakcheck.py: green threads, timers, fd registrations,
fd waiters).  In-process rows use the green modules directly; rows that need
the global patch or a signal run a script from tests/scripts/ under
``python -m greenpatch`` in a subprocess.  Loopback only.
"""

from __future__ import annotations

import errno
import os
import signal
import socket as stdsocket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import greenpatch
from greenpatch import Timeout
from greenpatch.green import socket as gsocket
from greenpatch.hub import get_hub

from leakcheck import leakcheck, no_leaks  # noqa: F401  (no_leaks is a fixture)

pytestmark = pytest.mark.timeout(20)

SCRIPTS = Path(__file__).parent / "scripts"
GREEN = [sys.executable, "-m", "greenpatch"]
PAYLOAD = bytes(range(256)) * (16 * 1024)   # 4 MiB, every byte's position recognisable


# -- helpers ----------------------------------------------------------------------


def assert_hub_alive() -> None:
    """A fresh green round trip works: the hub kept running after the fault."""
    a, b = gsocket.socketpair()
    with a, b:
        echo = greenpatch.spawn(lambda: b.sendall(b.recv(16).upper()))
        a.sendall(b"alive")
        assert a.recv(16) == b"ALIVE"
        echo.wait()


def tcp_pair():
    """A connected pair of green TCP sockets on loopback."""
    with gsocket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = gsocket.socket()
        client.connect(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def parked(thread, timeout: float = 2.0) -> None:
    """Let ``thread`` run until it waits on the hub (or ends)."""
    deadline = time.monotonic() + timeout
    greenpatch.sleep(0)
    while not thread and not thread.ready() and time.monotonic() < deadline:
        greenpatch.sleep(0.001)
    for _ in range(3):
        greenpatch.sleep(0)


def fill_send_buffer(sock) -> int:
    """Send until the kernel refuses more; return how much was queued."""
    sock.setblocking(False)
    total = 0
    try:
        while True:
            total += sock.send(b"x" * 65536)
    except BlockingIOError:
        pass
    sock.setblocking(True)
    return total


def spawn_catching(func, *args):
    """spawn(func, *args), the green thread returning what it raised (so nothing is reported)."""
    def run():
        try:
            return func(*args)
        except Exception as exc:
            return exc
    return greenpatch.spawn(run)


def raise_of(thread) -> BaseException:
    result = thread.wait()
    assert isinstance(result, BaseException), f"expected an exception, got {result!r}"
    return result


def full_backlog_listener():
    """A listener that never accepts, with its backlog full: the next connect stays in progress."""
    listener = stdsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(2):
        filler = stdsocket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.05)
    return listener, fillers


def drain(sock, until_eof: bool = True) -> bytes:
    """Everything readable from ``sock`` (until EOF, or until it would block)."""
    chunks = []
    sock.settimeout(None if until_eof else 0.0)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


# -- an fd closed while another green thread waits on it ---------------------------


def test_close_while_reading_raises_ebadf(no_leaks):
    a, b = gsocket.socketpair()
    reader = spawn_catching(a.recv, 10)
    parked(reader)
    a.close()
    exc = raise_of(reader)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    b.close()
    assert_hub_alive()


def test_close_while_writing_raises_ebadf(no_leaks):
    a, b = gsocket.socketpair()
    fill_send_buffer(a)
    writer = spawn_catching(a.sendall, PAYLOAD)
    parked(writer)
    a.close()
    exc = raise_of(writer)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    b.close()
    assert_hub_alive()


def test_close_while_accepting_raises_ebadf(no_leaks):
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    acceptor = spawn_catching(listener.accept)
    parked(acceptor)
    listener.close()
    exc = raise_of(acceptor)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    assert_hub_alive()


def test_close_while_connecting_raises_ebadf(no_leaks):
    listener, fillers = full_backlog_listener()
    client = gsocket.socket()
    connector = spawn_catching(client.connect, listener.getsockname())
    parked(connector)
    assert not connector.ready(), "the connect should still be in progress"
    client.close()
    exc = raise_of(connector)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    for sock in fillers + [listener]:
        sock.close()
    assert_hub_alive()


# -- an fd number reused right after close ------------------------------------------


def test_reused_fd_number_does_not_reach_the_old_waiter(no_leaks):
    a, b = gsocket.socketpair()
    old_fd = a.fileno()
    reader = spawn_catching(a.recv, 100)
    parked(reader)
    a.close()
    b.close()
    # The next sockets take the lowest free numbers: old_fd among them.
    c, d = gsocket.socketpair()
    assert old_fd in (c.fileno(), d.fileno())
    new, peer = (c, d) if c.fileno() == old_fd else (d, c)
    peer.sendall(b"for the new socket")
    exc = raise_of(reader)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    assert new.recv(100) == b"for the new socket"
    c.close()
    d.close()
    assert_hub_alive()


def test_fd_closed_behind_the_hubs_back_then_reused(no_leaks):
    """os.close() on a socket's fd skips the hub; the next socket on that number must start clean."""
    a, b = gsocket.socketpair()
    x, y = gsocket.socketpair()
    old_fd = a.fileno()
    reader = spawn_catching(a.recv, 100)
    parked(reader)
    os.close(old_fd)  # behind the hub's back: the socket object still names the number
    c = gsocket.socket(fileno=os.dup(x.fileno()))  # takes the lowest free number: old_fd
    assert c.fileno() == old_fd
    new_reader = greenpatch.spawn(c.recv, 100)
    parked(new_reader)
    y.sendall(b"for the new socket")
    assert new_reader.wait() == b"for the new socket"
    exc = raise_of(reader)
    assert type(exc) is OSError and exc.errno == errno.EBADF
    c.close()
    a.detach()  # its number is free again: nothing of c's is forgotten
    for sock in (b, x, y):
        sock.close()
    assert_hub_alive()


# -- a green thread killed in the middle of sendall ---------------------------------


def test_kill_during_sendall_leaves_a_clean_prefix_and_a_usable_socket(no_leaks):
    a, b = tcp_pair()
    sender = spawn_catching(a.sendall, PAYLOAD)
    parked(sender)
    assert not sender.ready(), "the payload should not fit in the socket buffers"
    sender.kill()
    assert sender.ready() and isinstance(sender.wait(), greenpatch.GreenletExit)
    reader = greenpatch.spawn(drain, b)  # the buffers are full: read while sending the rest
    a.sendall(b"<after kill>")
    a.shutdown(gsocket.SHUT_WR)
    received = reader.wait()
    assert received.endswith(b"<after kill>")
    prefix = received[:-len(b"<after kill>")]
    assert 0 < len(prefix) < len(PAYLOAD)
    assert prefix == PAYLOAD[:len(prefix)], "the peer must see a clean prefix"
    a.close()
    b.close()
    assert_hub_alive()


def test_timeout_during_sendall_leaves_a_clean_prefix_then_eof(no_leaks):
    a, b = tcp_pair()

    def send_with_timeout():
        try:
            with Timeout(0.2):
                a.sendall(PAYLOAD)
        except Timeout:
            a.close()
            return "timed out"
        return "sent"

    sender = greenpatch.spawn(send_with_timeout)
    assert sender.wait() == "timed out"
    assert a.fileno() == -1
    received = drain(b)
    assert 0 < len(received) < len(PAYLOAD)
    assert received == PAYLOAD[:len(received)], "the peer must see a clean prefix"
    b.close()
    assert_hub_alive()


# -- Timeout during connect and accept ----------------------------------------------


def test_timeout_during_connect_to_a_full_backlog(no_leaks):
    listener, fillers = full_backlog_listener()
    client = gsocket.socket()
    started = time.monotonic()
    with pytest.raises(Timeout):
        with Timeout(0.2):
            client.connect(listener.getsockname())
    assert time.monotonic() - started < 5
    client.close()
    for sock in fillers + [listener]:
        sock.close()
    assert_hub_alive()


def test_socket_timeout_during_connect_to_a_full_backlog(no_leaks):
    listener, fillers = full_backlog_listener()
    client = gsocket.socket()
    client.settimeout(0.2)
    with pytest.raises(TimeoutError, match="timed out"):
        client.connect(listener.getsockname())
    client.close()
    for sock in fillers + [listener]:
        sock.close()
    assert_hub_alive()


def test_timeout_during_accept_then_the_listener_still_accepts(no_leaks):
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with pytest.raises(Timeout):
        with Timeout(0.1):
            listener.accept()
    client = gsocket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    conn.sendall(b"still accepting")
    assert client.recv(100) == b"still accepting"
    for sock in (conn, client, listener):
        sock.close()
    assert_hub_alive()


# -- the peer resets the connection ---------------------------------------------------


def reset(sock) -> None:
    """Close with SO_LINGER 0: the peer gets RST."""
    sock.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_peer_reset_during_recv_raises_connection_reset(no_leaks):
    a, b = tcp_pair()
    reader = spawn_catching(a.recv, 100)
    parked(reader)
    reset(b)
    exc = raise_of(reader)
    assert type(exc) is ConnectionResetError and exc.errno == errno.ECONNRESET
    a.close()
    assert_hub_alive()


def test_peer_reset_during_sendall_raises_reset_or_broken_pipe(no_leaks):
    a, b = tcp_pair()
    sender = spawn_catching(a.sendall, PAYLOAD)
    parked(sender)
    assert not sender.ready()
    reset(b)
    exc = raise_of(sender)
    assert type(exc) in (ConnectionResetError, BrokenPipeError)
    assert exc.errno in (errno.ECONNRESET, errno.EPIPE)
    a.close()
    assert_hub_alive()


# -- an exception inside a hub callback or timer ---------------------------------------


def test_exception_in_a_callback_or_timer_is_reported_and_the_loop_goes_on(no_leaks, capsys):
    hub = get_hub()
    ran = []

    def boom(kind):
        raise ZeroDivisionError(f"boom in a {kind}")

    hub.schedule(boom, "callback")
    hub.schedule(ran.append, "after callback")
    hub.call_later(0.01, boom, "timer")
    hub.call_later(0.02, ran.append, "after timer")
    greenpatch.sleep(0.1)
    assert ran == ["after callback", "after timer"]
    err = capsys.readouterr().err
    assert "exception in the hub (the loop goes on)" in err
    assert "boom in a callback" in err and "boom in a timer" in err
    assert_hub_alive()


# -- subprocess rows: the global patch and signals -------------------------------------


def start(script: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(GREEN + [str(SCRIPTS / script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def wait_line(proc: subprocess.Popen, prefix: str) -> str:
    """Read proc's stdout up to the first line starting with ``prefix``."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"no {prefix!r} line; stderr:\n{proc.stderr.read()}")
        if line.startswith(prefix):
            return line.strip()


def finish(proc: subprocess.Popen, timeout: float = 10) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"hung; stdout:\n{out}\nstderr:\n{err}")
    return out, err


def test_keyboard_interrupt_reaches_main_while_hundreds_of_green_threads_wait():
    proc = start("fault_sigint.py", "300")
    wait_line(proc, "waiting")
    os.kill(proc.pid, signal.SIGINT)
    out, err = finish(proc)
    assert "main got KeyboardInterrupt" in out, err
    assert "still waiting: 300" in out
    assert proc.returncode == 0, err


def test_sigterm_user_handler_runs_while_the_hub_waits():
    proc = start("fault_sigterm.py")
    wait_line(proc, "waiting")
    os.kill(proc.pid, signal.SIGTERM)
    out, err = finish(proc)
    assert "handler ran for signal 15" in out, err
    assert "main woke: served 3 requests after the handler" in out, err
    assert proc.returncode == 0, err


def test_sys_exit_in_a_green_thread_ends_only_that_thread():
    plain = subprocess.run([sys.executable, str(SCRIPTS / "fault_sys_exit.py")],
                           capture_output=True, text=True, timeout=20)
    green = subprocess.run(GREEN + [str(SCRIPTS / "fault_sys_exit.py")],
                           capture_output=True, text=True, timeout=20)
    assert plain.returncode == green.returncode == 0, (plain.stderr, green.stderr)
    assert green.stdout == plain.stdout
    assert "main continues; worker alive: False" in green.stdout
    assert green.stderr == plain.stderr == ""


def test_emfile_on_accept_then_the_server_serves_again():
    proc = start("fault_emfile.py", "40")
    port = int(wait_line(proc, "listening").split()[-1])
    clients = []
    try:
        for index in range(60):
            client = stdsocket.create_connection(("127.0.0.1", port), timeout=10)
            client.sendall(b"hello %d\n" % index)
            clients.append(client)
        wait_line(proc, "accept failed: EMFILE")
        # Free the first half: the server must now get to the rest of the queue.
        for client in clients[:30]:
            client.close()
        for index, client in enumerate(clients[30:], 30):
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = client.recv(100)
                assert chunk, f"client {index}: connection closed without an answer"
                reply += chunk
            assert reply == b"HELLO %d\n" % index
        # And a brand-new connection is served too.
        with stdsocket.create_connection(("127.0.0.1", port), timeout=10) as late:
            late.sendall(b"late\n")
            assert late.recv(100) == b"LATE\n"
    finally:
        for client in clients:
            client.close()
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
    assert "server stopped" in out, err


def test_every_green_thread_blocked_forever_raises_deadlock_error_naming_the_waits():
    proc = start("fault_deadlock.py")
    out, err = finish(proc, timeout=15)
    assert proc.returncode == 1
    assert "greenpatch.hub.DeadlockError" in err or "DeadlockError" in err, err
    assert "every green thread is waiting and nothing can wake them" in err
    # Each waiter is named with the line of the program where it waits.
    assert "fault_deadlock.py" in err and "lock_b.acquire()" in err and "lock_a.acquire()" in err, err


def test_exception_from_a_signal_handler_interrupts_the_main_threads_wait():
    plain = subprocess.run([sys.executable, str(SCRIPTS / "fault_signal_raises.py")],
                           capture_output=True, text=True, timeout=20)
    assert plain.stdout == "main got Boom: from the handler\n", plain.stderr
    proc = start("fault_signal_raises.py")
    out, err = finish(proc)
    assert out == plain.stdout, err
    assert proc.returncode == 0
