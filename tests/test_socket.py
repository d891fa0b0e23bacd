"""The green socket module: stdlib behaviour in all three modes, waiting only the calling green thread.

Everything runs in-process on the green module directly (no monkey-patching),
with partner green threads from ``greenpatch.spawn``; the tests at the end run
a short script under ``monkey_patch()`` in a subprocess.  Only loopback is used.
"""

import array
import dis
import errno
import io
import os
import socket as stdsocket
import subprocess
import sys
import textwrap
import time
import types

import pytest

import greenpatch
from greenpatch.green import socket as gsocket
from greenpatch.hub import READ, get_hub

pytestmark = [pytest.mark.timeout(20), pytest.mark.usefixtures("no_leftover_waiters")]

TIMEOUT = 0.3      # the short timeout the timeout-mode tests use
SLACK = 3.0        # generous upper bound on top of it: the machine is shared


def pair(track, *args):
    a, b = gsocket.socketpair(*args)
    track += [a, b]
    return a, b


def tcp_pair(track):
    with gsocket.create_server(("127.0.0.1", 0)) as listener:
        client = gsocket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    track += [client, server]
    return client, server


def set_mode(sock, mode):
    sock.settimeout({"blocking": None, "timeout": TIMEOUT, "nonblocking": 0.0}[mode])


def assert_times_out(func, *args):
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        func(*args)
    elapsed = time.monotonic() - start
    assert type(info.value) is TimeoutError and info.value.args == ("timed out",)
    assert info.value is not None and isinstance(info.value, stdsocket.timeout)
    assert TIMEOUT * 0.95 <= elapsed < TIMEOUT + SLACK
    return info.value


def fill(sock):
    """Send until the socket's buffers are full; returns the bytes queued."""
    saved = sock.gettimeout()
    sock.settimeout(0.0)
    total = 0
    try:
        for _ in range(10_000):
            total += sock.send(b"f" * 65536)
    except BlockingIOError:
        return total
    finally:
        sock.settimeout(saved)
    raise AssertionError("the send buffer never filled")


def drain(sock, stop_after=0.3):
    """Read until nothing arrives for ``stop_after`` seconds; returns the byte count."""
    saved = sock.gettimeout()
    sock.settimeout(stop_after)
    total = 0
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return total
            total += len(data)
    except TimeoutError:
        return total
    finally:
        sock.settimeout(saved)


def finish(thread, timeout=5.0):
    """Wait for a green thread that must end soon; returns its result."""
    assert thread.join(timeout), "the green thread did not finish"
    return thread.wait()


def raised_by(func, *args):
    """The exception ``func(*args)`` raises, or None."""
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - returned for comparison
        return exc
    return None


# -- the module stands in for socket ----------------------------------------------------

DNS_FUNCTIONS = ["getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"]


def test_module_covers_every_public_name_of_the_stdlib_module():
    public = {name for name in dir(stdsocket) if not name.startswith("_")}
    assert public <= set(dir(gsocket))
    assert gsocket.__all__ == stdsocket.__all__
    for name in public - {"socket", "socketpair", "fromfd", "create_connection", "create_server",
                          "has_dualstack_ipv6", *DNS_FUNCTIONS}:
        assert getattr(gsocket, name) is getattr(stdsocket, name), name


def test_module_level_objects_are_the_stdlib_ones():
    assert gsocket.timeout is TimeoutError
    assert gsocket.error is OSError
    assert gsocket._GLOBAL_DEFAULT_TIMEOUT is stdsocket._GLOBAL_DEFAULT_TIMEOUT
    assert gsocket.SocketIO is stdsocket.SocketIO
    assert gsocket.__implements__ == ["socket", *DNS_FUNCTIONS]


def test_every_stdlib_helper_that_builds_a_socket_is_rebound_to_the_green_module():
    def loads_global_socket(code):
        if any(ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and ins.argval == "socket"
               for ins in dis.get_instructions(code)):
            return True
        return any(loads_global_socket(c) for c in code.co_consts if isinstance(c, types.CodeType))

    builders = [name for name, value in vars(stdsocket).items()
                if isinstance(value, types.FunctionType) and value.__module__ == "socket"
                and loads_global_socket(value.__code__)]
    assert {"create_connection", "create_server", "socketpair", "fromfd"} <= set(builders)
    for name in builders:
        green = getattr(gsocket, name)
        assert green is not getattr(stdsocket, name)
        assert green.__globals__ is vars(gsocket), name
        assert green.__code__ is getattr(stdsocket, name).__code__, name
        assert green.__module__ == gsocket.__name__
        assert green.__doc__ == getattr(stdsocket, name).__doc__


def test_stdlib_class_methods_that_use_the_global_socket_are_overridden():
    for name, value in vars(stdsocket.socket).items():
        if isinstance(value, types.FunctionType) and "socket" in value.__code__.co_names:
            assert name in vars(gsocket.socket), name


def test_helpers_build_green_sockets(track, tmp_path):
    listener = gsocket.create_server(("127.0.0.1", 0))
    client = gsocket.create_connection(listener.getsockname(), timeout=2.5)
    server, _ = listener.accept()
    a, b = gsocket.socketpair()
    copy = gsocket.fromfd(a.fileno(), a.family, a.type)
    track += [listener, client, server, a, b, copy]
    for sock in (listener, client, server, a, b, copy):
        assert type(sock) is gsocket.socket
        assert not os.get_blocking(sock.fileno())
    assert client.gettimeout() == 2.5
    assert server.gettimeout() is None and listener.gettimeout() is None
    copy.sendall(b"via fromfd")
    assert b.recv(100) == b"via fromfd"


# -- the class ------------------------------------------------------------------------------

def test_class_subclasses_the_stdlib_class_and_reprs_like_it(track):
    client, server = tcp_pair(track)
    assert issubclass(gsocket.socket, stdsocket.socket)
    text = repr(client)
    assert text.startswith("<greenpatch.green.socket.socket fd=")
    assert f"laddr={client.getsockname()}" in text and f"raddr={client.getpeername()}" in text
    assert client.family is stdsocket.AF_INET
    assert client.type is stdsocket.SOCK_STREAM
    client.close()
    assert "[closed]" in repr(client)


def test_type_never_shows_sock_nonblock_and_the_fd_is_always_nonblocking(track):
    plain = gsocket.socket()
    flagged = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_STREAM | gsocket.SOCK_NONBLOCK)
    udp = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    track += [plain, flagged, udp]
    assert plain.type is flagged.type is stdsocket.SOCK_STREAM
    assert udp.type is stdsocket.SOCK_DGRAM
    assert plain.gettimeout() is None and plain.getblocking()
    assert flagged.gettimeout() == 0.0 and not flagged.getblocking()
    for sock in (plain, flagged, udp):
        assert not os.get_blocking(sock.fileno())
    plain.settimeout(None)
    assert not os.get_blocking(plain.fileno())


def test_socket_created_around_an_existing_fd(track):
    raw = stdsocket.socket()
    sock = gsocket.socket(fileno=raw.detach())
    track.append(sock)
    assert sock.family == stdsocket.AF_INET and sock.type == stdsocket.SOCK_STREAM
    assert sock.gettimeout() is None and not os.get_blocking(sock.fileno())


TIMEOUT_VALUES = [None, 0, 0.0, 1, 2.5, 1e-10, 0.1, 7, True, False, 3.000000001]
BAD_TIMEOUT_VALUES = ["x", -1, -0.5, float("nan"), float("inf"), 1e300, 2 ** 64, [], b"1"]
BLOCKING_FLAGS = [True, False, 0, 1, 2, -1, "x", "", None, 0.0, 1.5, [], [1], 2 ** 70]


@pytest.mark.parametrize("value", TIMEOUT_VALUES + BAD_TIMEOUT_VALUES, ids=repr)
def test_settimeout_matches_the_stdlib(value, track):
    green, real = gsocket.socket(), stdsocket.socket()
    track += [green, real]
    error = raised_by(green.settimeout, value)
    expected = raised_by(real.settimeout, value)
    assert type(error) is type(expected)
    assert str(error) == str(expected)
    assert green.gettimeout() == real.gettimeout()
    assert type(green.gettimeout()) is type(real.gettimeout())
    assert green.timeout == real.timeout
    assert green.getblocking() == real.getblocking()
    assert not os.get_blocking(green.fileno())


@pytest.mark.parametrize("flag", BLOCKING_FLAGS, ids=repr)
def test_setblocking_matches_the_stdlib(flag, track):
    green, real = gsocket.socket(), stdsocket.socket()
    green.settimeout(5)
    real.settimeout(5)
    track += [green, real]
    error = raised_by(green.setblocking, flag)
    expected = raised_by(real.setblocking, flag)
    assert type(error) is type(expected)
    assert str(error) == str(expected)
    assert green.gettimeout() == real.gettimeout()
    assert green.getblocking() == real.getblocking()
    assert not os.get_blocking(green.fileno())


@pytest.mark.parametrize("call", ["settimeout(1)", "settimeout(None)", "setblocking(False)",
                                  "setblocking(True)", "settimeout('x')"])
def test_timeout_setters_on_a_closed_socket_match_the_stdlib(call):
    green, real = gsocket.socket(), stdsocket.socket()
    green.close()
    real.close()
    error = raised_by(eval, "sock." + call, {"sock": green})
    expected = raised_by(eval, "sock." + call, {"sock": real})
    assert type(error) is type(expected) and str(error) == str(expected)
    assert green.gettimeout() == real.gettimeout()


def test_default_timeout_is_honoured_at_creation_and_in_accept(track):
    saved = gsocket.getdefaulttimeout()
    gsocket.setdefaulttimeout(2.5)
    try:
        listener = gsocket.create_server(("127.0.0.1", 0))
        client = gsocket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        track += [listener, client, server]
        for sock in (listener, client, server, gsocket.socket()):
            track.append(sock)
            assert sock.gettimeout() == 2.5
            assert not os.get_blocking(sock.fileno())
    finally:
        gsocket.setdefaulttimeout(saved)


@pytest.mark.parametrize("listener_timeout", [None, 0.0, 2.0])
@pytest.mark.parametrize("default", [None, 0.0, 3.0])
def test_accepted_socket_timeout_follows_the_stdlib_rule(listener_timeout, default, track):
    saved = gsocket.getdefaulttimeout()
    results = []
    try:
        for module in (stdsocket, gsocket):
            gsocket.setdefaulttimeout(default)
            listener = module.create_server(("127.0.0.1", 0))
            listener.settimeout(listener_timeout)
            client = stdsocket.create_connection(listener.getsockname(), timeout=5)
            if listener_timeout == 0.0:
                time.sleep(0.01)  # let the kernel finish the handshake for the non-blocking accept
            server, _ = listener.accept()
            track += [listener, client, server]
            results.append((server.gettimeout(), server.getblocking()))
    finally:
        gsocket.setdefaulttimeout(saved)
    assert results[0] == results[1]


# -- receiving, in all three modes ------------------------------------------------------------

def _recv(sock):
    return sock.recv(64)


def _recv_into(sock):
    buf = bytearray(64)
    return bytes(buf[:sock.recv_into(buf)])


def _recvfrom(sock):
    return sock.recvfrom(64)[0]


def _recvfrom_into(sock):
    buf = bytearray(64)
    return bytes(buf[:sock.recvfrom_into(buf)[0]])


def _recvmsg(sock):
    return sock.recvmsg(64)[0]


def _recvmsg_into(sock):
    buf = bytearray(64)
    return bytes(buf[:sock.recvmsg_into([buf])[0]])


RECEIVERS = [_recv, _recv_into, _recvfrom, _recvfrom_into, _recvmsg, _recvmsg_into]
RECEIVER_IDS = [f.__name__.lstrip("_") for f in RECEIVERS]


@pytest.mark.parametrize("receive", RECEIVERS, ids=RECEIVER_IDS)
@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_receive_waits_greenly_for_data(receive, mode, track):
    client, server = tcp_pair(track)
    set_mode(server, mode)
    greenpatch.spawn_after(0.05, client.sendall, b"hello")
    start = time.monotonic()
    assert receive(server) == b"hello"
    assert time.monotonic() - start >= 0.04  # it did wait, and the sender ran meanwhile


@pytest.mark.parametrize("receive", RECEIVERS, ids=RECEIVER_IDS)
def test_receive_times_out(receive, track):
    client, server = tcp_pair(track)
    set_mode(server, "timeout")
    assert_times_out(receive, server)


@pytest.mark.parametrize("receive", RECEIVERS, ids=RECEIVER_IDS)
def test_receive_nonblocking_raises_blocking_io_error_then_reads(receive, track):
    client, server = tcp_pair(track)
    set_mode(server, "nonblocking")
    with pytest.raises(BlockingIOError) as info:
        receive(server)
    assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
    client.sendall(b"ready")
    for _ in range(100):  # loopback delivery is immediate, but allow the kernel a moment
        try:
            assert receive(server) == b"ready"
            break
        except BlockingIOError:
            time.sleep(0.001)
    else:
        raise AssertionError("data never arrived")


@pytest.mark.parametrize("mode", ["blocking", "timeout", "nonblocking"])
def test_ready_data_is_returned_without_waiting(mode, track):
    a, b = pair(track)
    set_mode(b, mode)
    a.sendall(b"abc")
    assert b.recv(1) == b"a"
    assert b.recv(10) == b"bc"


def test_a_timeout_wait_that_succeeds_leaves_no_timer_behind(track):
    a, b = pair(track)
    b.settimeout(30)
    before = get_hub().counts()["timers"]
    greenpatch.spawn_after(0.02, a.send, b"x")
    assert b.recv(1) == b"x"
    assert get_hub().counts()["timers"] == before


def test_eof_after_the_peer_closes(track):
    client, server = tcp_pair(track)
    greenpatch.spawn_after(0.05, client.close)
    assert server.recv(10) == b""
    assert server.recv(10) == b""


def test_half_close_with_shutdown_wr(track):
    client, server = tcp_pair(track)

    def echo_until_eof():
        received = b""
        while True:
            data = server.recv(100)
            if not data:
                break
            received += data
        server.sendall(received.upper())
        server.shutdown(gsocket.SHUT_WR)

    thread = greenpatch.spawn(echo_until_eof)
    client.sendall(b"half ")
    client.sendall(b"closed")
    client.shutdown(gsocket.SHUT_WR)
    reply = b""
    while True:
        data = client.recv(100)
        if not data:
            break
        reply += data
    finish(thread)
    assert reply == b"HALF CLOSED"


def test_recv_on_a_closed_socket_matches_the_stdlib():
    green, real = gsocket.socket(), stdsocket.socket()
    green.close()
    real.close()
    for call in (lambda s: s.recv(1), lambda s: s.send(b"x"), lambda s: s.accept(), lambda s: s.sendall(b"x")):
        error, expected = raised_by(call, green), raised_by(call, real)
        assert type(error) is type(expected) is OSError
        assert error.errno == expected.errno == errno.EBADF


def test_connection_reset_and_broken_pipe_are_the_kernels_errors(track):
    client, server = tcp_pair(track)
    client.setsockopt(gsocket.SOL_SOCKET, gsocket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    greenpatch.spawn_after(0.05, client.close)  # linger 0: the close sends a RST
    with pytest.raises(ConnectionResetError):
        server.recv(10)
    a, b = pair(track)
    b.close()
    with pytest.raises(BrokenPipeError):
        a.sendall(b"x" * 100)


# -- sending, in all three modes ------------------------------------------------------------------

def _send(sock):
    return sock.send(b"payload")


def _sendall(sock):
    sock.sendall(b"payload")


def _sendmsg(sock):
    return sock.sendmsg([b"pay", b"load"])


SENDERS = [_send, _sendall, _sendmsg]
SENDER_IDS = ["send", "sendall", "sendmsg"]


@pytest.mark.parametrize("send", SENDERS, ids=SENDER_IDS)
@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_send_waits_greenly_for_buffer_space(send, mode, track):
    a, b = pair(track)
    queued = fill(a)
    set_mode(a, mode)
    reader = greenpatch.spawn_after(0.05, drain, b)
    start = time.monotonic()
    send(a)
    assert time.monotonic() - start >= 0.04
    a.shutdown(gsocket.SHUT_WR)
    assert finish(reader) == queued + 7


@pytest.mark.parametrize("send", SENDERS, ids=SENDER_IDS)
def test_send_times_out_when_the_buffer_stays_full(send, track):
    a, b = pair(track)
    fill(a)
    set_mode(a, "timeout")
    assert_times_out(send, a)


@pytest.mark.parametrize("send", SENDERS, ids=SENDER_IDS)
def test_send_nonblocking_raises_blocking_io_error(send, track):
    a, b = pair(track)
    fill(a)
    set_mode(a, "nonblocking")
    with pytest.raises(BlockingIOError) as info:
        send(a)
    assert info.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK)


BIG = bytes(range(256)) * (12 * 4096)  # 12 MiB


def slow_reader(sock, expected):
    """Read everything, pausing now and then, so the sender must wait many times."""
    chunks = []
    got = 0
    reads = 0
    while got < expected:
        data = sock.recv(256 * 1024)
        if not data:
            break
        chunks.append(data)
        got += len(data)
        reads += 1
        if reads % 8 == 0:
            greenpatch.sleep(0.001)
    return b"".join(chunks)


@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_sendall_of_a_multi_megabyte_buffer_with_a_slow_reader(mode, track):
    client, server = tcp_pair(track)
    client.settimeout(None if mode == "blocking" else 10.0)
    reader = greenpatch.spawn(slow_reader, server, len(BIG))
    assert client.sendall(BIG) is None
    assert finish(reader, 10) == BIG


def test_sendall_of_a_non_byte_buffer_sends_its_bytes(track):
    client, server = tcp_pair(track)
    data = array.array("i", range(600_000))  # 2.4 MB of 4-byte items
    reader = greenpatch.spawn(slow_reader, server, len(data) * data.itemsize)
    client.sendall(data)
    assert finish(reader, 10) == data.tobytes()
    payload = bytearray(b"y" * 3_000_000)
    reader = greenpatch.spawn(slow_reader, server, len(payload))
    client.sendall(memoryview(payload))
    assert finish(reader, 10) == payload
    payload.extend(b"z")  # the buffer is not left exported


def test_sendall_timeout_covers_the_whole_buffer(track):
    a, b = pair(track)

    def trickle():  # every individual wait succeeds, but the whole send takes far too long
        try:
            while True:
                greenpatch.sleep(0.02)
                if not b.recv(32 * 1024):
                    return
        except OSError:
            return

    reader = greenpatch.spawn(trickle)
    a.settimeout(TIMEOUT)
    assert_times_out(a.sendall, BIG)
    a.close()
    b.close()
    finish(reader)


def test_sendall_nonblocking_raises_blocking_io_error_when_full(track):
    a, b = pair(track)
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        a.sendall(BIG)


def test_sendall_rejects_what_the_stdlib_rejects(track):
    a, b = pair(track)
    real_a, real_b = stdsocket.socketpair()
    track += [real_a, real_b]
    for bad in ("text", 5, None):
        error, expected = raised_by(a.sendall, bad), raised_by(real_a.sendall, bad)
        assert type(error) is type(expected) and str(error) == str(expected)


# -- accept and connect ---------------------------------------------------------------------------

def test_accept_waits_greenly(track):
    listener = gsocket.create_server(("127.0.0.1", 0))
    track.append(listener)
    connector = greenpatch.spawn_after(0.05, gsocket.create_connection, listener.getsockname())
    server, addr = listener.accept()
    client = finish(connector)
    track += [server, client]
    assert type(server) is gsocket.socket
    assert addr == client.getsockname()


def test_accept_times_out_and_nonblocking_accept_raises(track):
    listener = gsocket.create_server(("127.0.0.1", 0))
    track.append(listener)
    listener.settimeout(TIMEOUT)
    assert_times_out(listener.accept)
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()


def free_port():
    with stdsocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()


@pytest.mark.parametrize("mode", ["blocking", "timeout", "nonblocking"])
def test_connect_refused_matches_the_stdlib(mode, track):
    address = free_port()
    green, real = gsocket.socket(), stdsocket.socket()
    track += [green, real]
    set_mode(green, mode)
    set_mode(real, mode)
    error, expected = raised_by(green.connect, address), raised_by(real.connect, address)
    assert type(error) is type(expected)
    assert error.errno == expected.errno and str(error) == str(expected)
    if mode != "nonblocking":
        assert isinstance(error, ConnectionRefusedError)


@pytest.mark.parametrize("mode", ["blocking", "timeout", "nonblocking"])
def test_connect_ex_returns_the_errno_like_the_stdlib(mode, track):
    address = free_port()
    green, real = gsocket.socket(), stdsocket.socket()
    track += [green, real]
    set_mode(green, mode)
    set_mode(real, mode)
    assert green.connect_ex(address) == real.connect_ex(address)
    with pytest.raises(OSError) as green_error:
        green.connect_ex(("no such host.invalid", 80))
    with pytest.raises(OSError) as real_error:
        real.connect_ex(("no such host.invalid", 80))
    assert type(green_error.value) is type(real_error.value)
    for bad in ("not an address", ("127.0.0.1",)):
        error, expected = raised_by(green.connect_ex, bad), raised_by(real.connect_ex, bad)
        assert type(error) is type(expected) and str(error) == str(expected)


def full_listener(track):
    """A TCP listener whose backlog is full: further connects stay pending."""
    listener = gsocket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = stdsocket.create_connection(listener.getsockname())
    track += [listener, filler]
    return listener


def test_connect_times_out_and_connect_ex_reports_it_like_the_stdlib(track):
    listener = full_listener(track)
    green = gsocket.socket()
    green.settimeout(TIMEOUT)
    track.append(green)
    assert_times_out(green.connect, listener.getsockname())
    green2, real = gsocket.socket(), stdsocket.socket()
    track += [green2, real]
    green2.settimeout(TIMEOUT)
    real.settimeout(TIMEOUT)
    assert green2.connect_ex(listener.getsockname()) == real.connect_ex(listener.getsockname()) == errno.EWOULDBLOCK


def test_nonblocking_connect_then_wait_for_writability(track):
    listener = gsocket.create_server(("127.0.0.1", 0))
    sock = gsocket.socket()
    track += [listener, sock]
    sock.setblocking(False)
    try:
        sock.connect(listener.getsockname())
    except BlockingIOError as exc:
        assert exc.errno == errno.EINPROGRESS
    from greenpatch.green import select as gselect
    assert gselect.select([], [sock], [], 2)[1] == [sock]
    assert sock.getsockopt(gsocket.SOL_SOCKET, gsocket.SO_ERROR) == 0
    assert sock.getpeername() == listener.getsockname()


def test_unix_connect_waits_while_the_listener_backlog_is_full(track, tmp_path):
    path = str(tmp_path / "backlog.sock")
    listener = gsocket.socket(gsocket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)
    track.append(listener)
    first = gsocket.socket(gsocket.AF_UNIX)
    first.connect(path)
    track.append(first)
    accepted = []
    greenpatch.spawn_after(0.05, lambda: accepted.append(listener.accept()[0]))
    second = gsocket.socket(gsocket.AF_UNIX)
    track.append(second)
    second.connect(path)  # EAGAIN until the accept above makes room
    assert accepted
    track += accepted
    third = gsocket.socket(gsocket.AF_UNIX)
    track.append(third)
    third.settimeout(TIMEOUT)
    assert_times_out(third.connect, path)


# -- spurious wakeups (the hub may resume a waiter early: every wait re-checks) -------------------

def wake_spuriously(thread):
    """Resume a green thread parked in a wait, as the hub does on a stale edge."""
    if thread and not thread.dead:
        thread.switch()


def test_recv_survives_spurious_wakeups(track):
    a, b = pair(track)
    waiter = greenpatch.spawn(b.recv, 10)
    for delay in (0.01, 0.02, 0.03):
        get_hub().call_later(delay, wake_spuriously, waiter)
    greenpatch.spawn_after(0.06, a.send, b"real")
    assert finish(waiter) == b"real"


def test_spurious_wakeups_do_not_extend_the_timeout(track):
    a, b = pair(track)
    b.settimeout(TIMEOUT)
    waiter = greenpatch.spawn(raised_by, b.recv, 10)
    for delay in (0.2, 0.4, 0.6, 0.8):  # were each retry to restart the timeout: 1.1 s
        get_hub().call_later(delay, wake_spuriously, waiter)
    start = time.monotonic()
    error = finish(waiter)
    assert type(error) is TimeoutError and time.monotonic() - start < 1.0


def test_connect_in_progress_survives_spurious_wakeups(track):
    listener = full_listener(track)
    sock = gsocket.socket()
    track.append(sock)
    sock.settimeout(TIMEOUT)
    waiter = greenpatch.spawn(raised_by, sock.connect, listener.getsockname())
    for delay in (0.02, 0.05):
        get_hub().call_later(delay, wake_spuriously, waiter)
    error = finish(waiter)
    assert type(error) is TimeoutError  # not a premature "connected"
    with pytest.raises(OSError):
        sock.getpeername()


# -- closing and detaching wake waiters with EBADF; reused fds start clean ------------------------

def wait_and_capture(func, *args):
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc
    return None


def assert_woken_with_ebadf(thread):
    exc = finish(thread, 5)
    assert type(exc) is OSError and exc.errno == errno.EBADF


def test_closing_wakes_a_green_thread_waiting_in_recv(track):
    a, b = pair(track)
    waiter = greenpatch.spawn(wait_and_capture, b.recv, 10)
    greenpatch.sleep(0.02)
    b.close()
    assert_woken_with_ebadf(waiter)


def test_closing_wakes_a_green_thread_waiting_in_send(track):
    a, b = pair(track)
    fill(a)
    waiter = greenpatch.spawn(wait_and_capture, a.sendall, b"x" * 100_000)
    greenpatch.sleep(0.02)
    a.close()
    assert_woken_with_ebadf(waiter)


def test_closing_wakes_a_green_thread_waiting_in_accept(track):
    listener = gsocket.create_server(("127.0.0.1", 0))
    track.append(listener)
    waiter = greenpatch.spawn(wait_and_capture, listener.accept)
    greenpatch.sleep(0.02)
    listener.close()
    assert_woken_with_ebadf(waiter)


def test_closing_wakes_a_green_thread_waiting_in_connect(track):
    listener = full_listener(track)
    sock = gsocket.socket()
    track.append(sock)
    waiter = greenpatch.spawn(wait_and_capture, sock.connect, listener.getsockname())
    greenpatch.sleep(0.05)
    sock.close()
    assert_woken_with_ebadf(waiter)
    sock2 = gsocket.socket()
    track.append(sock2)
    result = []
    greenpatch.spawn_after(0.05, sock2.close)
    result.append(sock2.connect_ex(listener.getsockname()))
    assert result == [errno.EBADF]


def test_closing_wakes_a_green_thread_waiting_with_a_timeout(track):
    a, b = pair(track)
    b.settimeout(30)
    waiter = greenpatch.spawn(wait_and_capture, b.recv, 10)
    greenpatch.sleep(0.02)
    b.close()
    assert_woken_with_ebadf(waiter)


def test_close_with_a_makefile_open_keeps_the_fd_until_the_file_closes(track):
    a, b = pair(track)
    reader = b.makefile("rb")
    b.close()
    assert b.fileno() != -1  # the stdlib's _io_refs keep it open
    waiter = greenpatch.spawn(wait_and_capture, reader.read, 3)
    a.sendall(b"abc")
    assert finish(waiter) is None
    reader.close()
    assert b.fileno() == -1


def test_detach_wakes_waiters_and_hands_over_a_working_fd(track):
    a, b = pair(track)
    waiter = greenpatch.spawn(wait_and_capture, b.recv, 10)
    greenpatch.sleep(0.02)
    fd = b.detach()
    track.append(fd)
    assert_woken_with_ebadf(waiter)
    assert b.fileno() == -1
    os.fstat(fd)  # still open
    again = gsocket.socket(fileno=fd)
    track.remove(fd)
    track.append(again)
    greenpatch.spawn_after(0.02, a.sendall, b"after detach")
    assert again.recv(100) == b"after detach"


def test_a_reused_fd_number_never_receives_another_sockets_events(track):
    a, b = pair(track)
    old_fd = b.fileno()
    waiter = greenpatch.spawn(wait_and_capture, b.recv, 10)
    greenpatch.sleep(0.02)
    b.close()
    assert_woken_with_ebadf(waiter)
    c, d = pair(track)
    assert old_fd in (c.fileno(), d.fileno())  # the lowest free fd is reused at once
    reused, other = (c, d) if c.fileno() == old_fd else (d, c)
    greenpatch.spawn_after(0.02, other.sendall, b"new owner")
    assert reused.recv(100) == b"new owner"


def test_an_fd_closed_behind_the_sockets_back_is_clean_when_reused(track):
    a, b = pair(track)
    b.settimeout(0.05)
    with pytest.raises(TimeoutError):
        b.recv(1)  # the hub now watches b's fd
    old_fd = b.fileno()
    os.close(old_fd)  # the epoll registration vanishes; the hub does not know
    stdsocket.socket.detach(b)  # (the C detach: the object lets go without telling the hub)
    c, d = pair(track)
    reused = c if c.fileno() == old_fd else d
    assert reused.fileno() == old_fd
    other = d if reused is c else c
    reused.settimeout(5)
    greenpatch.spawn_after(0.02, other.sendall, b"seen")
    assert reused.recv(100) == b"seen"


def test_dup_is_green_independent_and_keeps_the_timeout(track):
    a, b = pair(track)
    b.settimeout(4.0)
    copy = b.dup()
    track.append(copy)
    assert type(copy) is gsocket.socket
    assert copy.fileno() != b.fileno()
    assert copy.gettimeout() == 4.0
    b.close()
    greenpatch.spawn_after(0.02, a.sendall, b"dup")
    assert copy.recv(10) == b"dup"


# -- makefile -----------------------------------------------------------------------------------

def test_makefile_rw_readline_write_flush(track):
    client, server = tcp_pair(track)

    def echo_lines():
        with server.makefile("rw", encoding="utf-8", newline="\n") as stream:
            for line in stream:
                stream.write(line.upper())
                stream.flush()

    thread = greenpatch.spawn(echo_lines)
    with client.makefile("rwb") as stream:
        for word in (b"first", b"second", b"x" * 100_000):
            stream.write(word + b"\n")
            stream.flush()
            assert stream.readline() == word.upper() + b"\n"
    client.shutdown(gsocket.SHUT_WR)
    finish(thread)


def test_makefile_read_times_out(track):
    a, b = pair(track)
    b.settimeout(TIMEOUT)
    stream = b.makefile("rb")
    assert_times_out(stream.readline)
    stream.close()


def test_makefile_nonblocking_read_returns_none(track):
    a, b = pair(track)
    b.setblocking(False)
    with b.makefile("rb", buffering=0) as raw:
        assert raw.read(10) is None


# -- UDP and AF_UNIX ------------------------------------------------------------------------------

def udp_pair(track):
    receiver = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    sender = gsocket.socket(gsocket.AF_INET, gsocket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    track += [receiver, sender]
    return sender, receiver


@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_udp_recvfrom_and_recvfrom_into_wait_for_a_datagram(mode, track):
    sender, receiver = udp_pair(track)
    set_mode(receiver, mode)
    greenpatch.spawn_after(0.03, sender.sendto, b"datagram", receiver.getsockname())
    data, addr = receiver.recvfrom(100)
    assert (data, addr) == (b"datagram", sender.getsockname())
    greenpatch.spawn_after(0.03, sender.sendto, b"into", 0, receiver.getsockname())
    buf = bytearray(10)
    assert receiver.recvfrom_into(buf, 4) == (4, sender.getsockname())
    assert buf[:4] == b"into"


def test_udp_timeout_and_nonblocking(track):
    sender, receiver = udp_pair(track)
    receiver.settimeout(TIMEOUT)
    assert_times_out(receiver.recvfrom, 100)
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recvfrom_into(bytearray(10))


def test_unix_stream_listener(track, tmp_path):
    path = str(tmp_path / "stream.sock")
    listener = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_STREAM)
    listener.bind(path)
    listener.listen()
    track.append(listener)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(conn.recv(100)[::-1])

    thread = greenpatch.spawn(serve)
    client = gsocket.socket(gsocket.AF_UNIX)
    track.append(client)
    client.connect(path)
    client.sendall(b"unix")
    assert client.recv(100) == b"xinu"
    finish(thread)


@pytest.mark.parametrize("mode", ["blocking", "timeout", "nonblocking"])
def test_unix_datagram_sendto_waits_for_queue_space(mode, track, tmp_path):
    path = str(tmp_path / "dgram.sock")
    receiver = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_DGRAM)
    receiver.bind(path)
    sender = gsocket.socket(gsocket.AF_UNIX, gsocket.SOCK_DGRAM)
    track += [receiver, sender]
    sender.setblocking(False)
    queued = 0
    with pytest.raises(BlockingIOError):
        for _ in range(100_000):
            sender.sendto(b"d" * 100, path)
            queued += 1
    set_mode(sender, mode)
    if mode == "nonblocking":
        with pytest.raises(BlockingIOError):
            sender.sendto(b"last", path)
        with pytest.raises(BlockingIOError):
            sender.sendmsg([b"last"], [], 0, path)
        return
    if mode == "timeout":
        assert_times_out(sender.sendto, b"last", path)

    def read_all():
        got = [receiver.recvfrom(200)[0] for _ in range(queued + 2)]
        return got[-2:]

    reader = greenpatch.spawn_after(0.05, read_all)
    sender.sendto(b"last", path)
    sender.sendmsg([b"by ", b"msg"], [], 0, path)
    assert finish(reader) == [b"last", b"by msg"]


def test_unix_datagram_socketpair_recv(track):
    a, b = pair(track, gsocket.AF_UNIX, gsocket.SOCK_DGRAM)
    greenpatch.spawn_after(0.02, a.send, b"one")
    assert b.recvfrom(10) == (b"one", None)  # an unnamed peer, as the stdlib reports it


def test_scm_rights_with_recvmsg_and_sendmsg(track):
    a, b = pair(track)
    r, w = os.pipe()
    track += [r, w]

    def send_fd():
        a.sendmsg([b"fd"], [(gsocket.SOL_SOCKET, gsocket.SCM_RIGHTS, array.array("i", [r]))])

    greenpatch.spawn_after(0.03, send_fd)
    msg, ancdata, flags, addr = b.recvmsg(10, gsocket.CMSG_SPACE(array.array("i").itemsize))
    assert msg == b"fd"
    level, kind, data = ancdata[0]
    assert (level, kind) == (gsocket.SOL_SOCKET, gsocket.SCM_RIGHTS)
    received = array.array("i", data[:array.array("i").itemsize])[0]
    track.append(received)
    os.write(w, b"through the passed fd")
    assert os.read(received, 100) == b"through the passed fd"

    greenpatch.spawn_after(0.03, gsocket.send_fds, a, [b"helper"], [w])
    msg, fds, flags, addr = gsocket.recv_fds(b, 10, 1)
    track += fds
    assert msg == b"helper" and len(fds) == 1
    os.write(fds[0], b"!")
    assert os.read(r, 10) == b"!"


# -- sendfile -------------------------------------------------------------------------------------

@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "payload.bin"
    path.write_bytes(BIG)
    return path


@pytest.mark.parametrize("mode", ["blocking", "timeout"])
def test_sendfile_with_a_slow_reader(mode, track, big_file):
    client, server = tcp_pair(track)
    client.settimeout(None if mode == "blocking" else 10.0)
    reader = greenpatch.spawn(slow_reader, server, len(BIG))
    with open(big_file, "rb") as f:
        assert client.sendfile(f) == len(BIG)
        assert f.tell() == len(BIG)
    assert finish(reader, 10) == BIG


def test_sendfile_offset_and_count(track, big_file):
    client, server = tcp_pair(track)
    reader = greenpatch.spawn(slow_reader, server, 3_000_000)
    with open(big_file, "rb") as f:
        assert client.sendfile(f, 1000, 3_000_000) == 3_000_000
        assert f.tell() == 3_001_000
    assert finish(reader, 10) == BIG[1000:3_001_000]


def test_sendfile_falls_back_to_send_for_non_regular_files(track):
    client, server = tcp_pair(track)
    reader = greenpatch.spawn(slow_reader, server, 2_000_000)
    source = io.BytesIO(BIG[:2_000_000])
    assert client.sendfile(source) == 2_000_000
    assert finish(reader, 10) == BIG[:2_000_000]


def test_sendfile_times_out_and_rejects_nonblocking_sockets(track, big_file):
    client, server = tcp_pair(track)
    with open(big_file, "rb") as f:
        client.settimeout(TIMEOUT)
        assert_times_out(client.sendfile, f)
        client.setblocking(False)
        with pytest.raises(ValueError, match="non-blocking sockets are not supported"):
            client.sendfile(f)


# -- many green threads on one listener ------------------------------------------------------------

def test_many_green_threads_echo_concurrently_over_one_listener(track):
    listener = gsocket.create_server(("127.0.0.1", 0), backlog=128)
    track.append(listener)
    clients_n, rounds = 60, 20
    active = [0, 0]  # now, most at once

    def handle(conn):
        active[0] += 1
        active[1] = max(active[1], active[0])
        with conn:
            while True:
                data = conn.recv(1024)
                if not data:
                    break
                conn.sendall(data)
        active[0] -= 1

    def serve():
        handlers = []
        for _ in range(clients_n):
            conn, _ = listener.accept()
            handlers.append(greenpatch.spawn(handle, conn))
        for handler in handlers:
            finish(handler)

    def client(n):
        with gsocket.create_connection(listener.getsockname()) as sock:
            for i in range(rounds):
                message = f"client {n} round {i}|".encode()
                sock.sendall(message)
                received = b""
                while len(received) < len(message):
                    received += sock.recv(1024)
                assert received == message
        return n

    server = greenpatch.spawn(serve)
    clients = [greenpatch.spawn(client, n) for n in range(clients_n)]
    assert [finish(c, 15) for c in clients] == list(range(clients_n))
    finish(server, 15)
    assert active[1] > 1  # the connections were served at the same time, not one by one


# -- under monkey_patch(), in a subprocess -----------------------------------------------------------

def run_patched(script):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def test_patched_stdlib_socket_is_green():
    run_patched("""
        import greenpatch
        greenpatch.monkey_patch(socket=True)
        import socket
        from greenpatch.green import socket as gsocket
        assert socket.socket is gsocket.socket
        listener = socket.create_server(("127.0.0.1", 0))
        assert type(listener) is gsocket.socket

        def serve():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(conn.recv(100).upper())

        server = greenpatch.spawn(serve)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        assert type(client) is gsocket.socket and client.gettimeout() == 5
        client.sendall(b"patched")
        assert client.recv(100) == b"PATCHED"
        server.wait()
        a, b = socket.socketpair()
        assert type(a) is type(b) is gsocket.socket
        assert type(socket.fromfd(a.fileno(), a.family, a.type)) is gsocket.socket
        greenpatch.spawn_after(0.05, a.sendall, b"later")
        assert b.recv(10) == b"later"  # the main greenlet waited; the green thread ran
        print("OK")
    """)


def test_patched_blocking_clients_run_concurrently():
    run_patched("""
        import greenpatch
        greenpatch.monkey_patch(socket=True, select=True)
        import socket, time

        listener = socket.create_server(("127.0.0.1", 0))

        def slow_echo(conn):
            with conn:
                data = conn.recv(100)
                greenpatch.sleep(0.3)
                conn.sendall(data)

        def serve():
            for _ in range(5):
                greenpatch.spawn(slow_echo, listener.accept()[0])

        def client(n):
            with socket.create_connection(listener.getsockname()) as sock:
                sock.sendall(b"%d" % n)
                return sock.recv(100)

        greenpatch.spawn(serve)
        start = time.monotonic()
        clients = [greenpatch.spawn(client, n) for n in range(5)]
        assert [c.wait() for c in clients] == [b"0", b"1", b"2", b"3", b"4"]
        assert time.monotonic() - start < 1.2, "five 0.3 s exchanges should overlap"
        print("OK")
    """)


def test_short_read_then_pending_eof_returns_at_once(track):
    """A short read marks the fd drained; a hang-up reported with the data must still end the next read."""
    client, server = tcp_pair(track)
    client.sendall(b"abc")
    client.shutdown(gsocket.SHUT_WR)
    greenpatch.sleep(0.05)  # data and FIN are both queued before the first read
    get_hub().wait_fd(server.fileno(), READ, 1)  # registers the fd: the edge carries the hang-up
    assert server.recv(100) == b"abc"
    with greenpatch.Timeout(2):
        assert server.recv(100) == b""


def test_short_read_then_more_data_later_is_received(track):
    client, server = tcp_pair(track)
    replies = []

    def reader():
        for _ in range(3):
            replies.append(server.recv(100))

    thread = greenpatch.spawn(reader)
    for chunk in (b"one", b"two", b"three"):
        client.sendall(chunk)
        greenpatch.sleep(0.02)
    with greenpatch.Timeout(2):
        thread.wait()
    assert replies == [b"one", b"two", b"three"]


@pytest.mark.parametrize("mode", [None, 5.0])
def test_msg_dontwait_tries_once_whatever_the_timeout(mode, track):
    a, b = pair(track)
    a.settimeout(mode)
    b.settimeout(mode)
    with pytest.raises(BlockingIOError):
        b.recv(10, stdsocket.MSG_DONTWAIT)
    with pytest.raises(BlockingIOError):
        b.recv_into(bytearray(10), 0, stdsocket.MSG_DONTWAIT)
    with pytest.raises(BlockingIOError):
        b.recvmsg(10, 0, stdsocket.MSG_DONTWAIT)
    with pytest.raises(OSError) as caught:
        while True:  # as CPython's testSendmsgDontWait: fill the buffer, then EAGAIN instead of a wait
            a.sendmsg([b"a" * 512], [], stdsocket.MSG_DONTWAIT)
    assert caught.value.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOMEM)
    with pytest.raises(BlockingIOError):
        a.send(b"a" * 512, stdsocket.MSG_DONTWAIT)
    assert b.recv(512, stdsocket.MSG_DONTWAIT) == b"a" * 512


def test_setblocking_and_settimeout_raise_for_an_fd_closed_behind_the_socket(track):
    owner = gsocket.socket()
    borrower = gsocket.socket(fileno=owner.fileno())
    owner.close()
    try:
        for call, arg in ((borrower.setblocking, False), (borrower.setblocking, True),
                          (borrower.settimeout, 1.0), (borrower.settimeout, None)):
            with pytest.raises(OSError) as caught:
                call(arg)
            assert caught.value.errno == errno.EBADF
        assert borrower.gettimeout() is None  # the new timeout is kept, as CPython does
    finally:
        borrower.detach()


def test_getnameinfo_rejects_a_non_tuple_like_the_stdlib_and_keeps_no_reference():
    name = "not-an-address-" + str(os.getpid())
    before = sys.getrefcount(name)
    with pytest.raises(TypeError, match="^getnameinfo\\(\\) argument 1 must be a tuple$"):
        gsocket.getnameinfo(name, 0)
    with pytest.raises(TypeError):
        try:
            gsocket.getnameinfo(name, 0)
        except TypeError:
            assert sys.getrefcount(name) == before  # while the traceback is alive
            raise
