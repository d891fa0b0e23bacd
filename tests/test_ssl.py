"""The green ssl module: TLS over green sockets, waiting only the calling green thread.

The in-process tests use the green modules directly (``greenpatch.green.ssl``
and ``greenpatch.green.socket``, no monkey-patching) with partner green
threads from ``greenpatch.spawn``; the tests at the end run a script under
``monkey_patch()`` in a subprocess (contexts made before the patch,
http.client, urllib.request and requests against a local HTTPS server).  The
certificate is made for the test by ``openssl req``; only loopback is used.
"""

import errno
import os
import shutil
import socket as stdsocket
import ssl as stdssl
import subprocess
import sys
import textwrap
import time

import pytest

import greenpatch
from greenpatch.green import socket as gsocket
from greenpatch.green import ssl as gssl

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("no_leftover_waiters")]

TIMEOUT = 0.3      # the short timeout of the timeout tests
SLACK = 3.0        # generous upper bound on top of it: the machine is shared
MB = 1 << 20


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    """(certfile, keyfile): a self-signed EC certificate for localhost and 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make the test certificate")
    where = tmp_path_factory.mktemp("cert")
    certfile, keyfile = str(where / "cert.pem"), str(where / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", keyfile, "-out", certfile, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    return certfile, keyfile


@pytest.fixture
def server_ctx(cert):
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    return ctx


@pytest.fixture
def client_ctx(cert):
    return gssl.create_default_context(cafile=cert[0])


def listener(track):
    lst = gsocket.create_server(("127.0.0.1", 0))
    track.append(lst)
    return lst


def tls_pair(track, server_ctx, client_ctx, server_kw=None, client_kw=None):
    """A connected (client, server) pair of green SSLSockets; both handshakes run concurrently."""
    lst = listener(track)

    def serve():
        conn, _ = lst.accept()
        track.append(conn)
        return server_ctx.wrap_socket(conn, server_side=True, **(server_kw or {}))

    server_thread = greenpatch.spawn(serve)
    raw = gsocket.create_connection(lst.getsockname())
    track.append(raw)
    client = client_ctx.wrap_socket(raw, server_hostname="localhost", **(client_kw or {}))
    track.append(client)
    server = server_thread.wait()
    track.append(server)
    return client, server


def recv_exactly(sock, size):
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        assert n, f"EOF after {got} of {size} bytes"
        got += n
    return bytes(buf)


def wait_and_capture(func, *args):
    """Spawn func(*args) and return the green thread, its outcome in ``.outcome``."""
    def run():
        try:
            return ("ok", func(*args))
        except BaseException as exc:  # noqa: BLE001 - the outcome is what is tested
            return ("raised", exc)
    return greenpatch.spawn(run)


def heartbeat(lateness, stop):
    while not stop:
        start = time.monotonic()
        greenpatch.sleep(0.01)
        lateness.append(time.monotonic() - start - 0.01)


def assert_times_out(message, func, *args):
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        func(*args)
    elapsed = time.monotonic() - start
    assert type(info.value) is TimeoutError and isinstance(info.value, stdsocket.timeout)
    assert str(info.value) == message
    assert TIMEOUT * 0.95 <= elapsed < TIMEOUT + SLACK
    return info.value


# -- the module ----------------------------------------------------------------------------

def test_the_green_module_mirrors_the_stdlib():
    assert issubclass(gssl.SSLSocket, stdssl.SSLSocket)
    assert issubclass(gssl.SSLSocket, gsocket.socket)
    assert issubclass(gssl.SSLContext, stdssl.SSLContext)
    assert gssl.SSLContext.sslsocket_class is gssl.SSLSocket
    assert gssl.SSLObject is stdssl.SSLObject and gssl.MemoryBIO is stdssl.MemoryBIO
    assert gssl.SSLWantReadError is stdssl.SSLWantReadError and gssl.CERT_REQUIRED is stdssl.CERT_REQUIRED
    for name in ("create_default_context", "_create_unverified_context", "get_server_certificate"):
        assert getattr(gssl, name) is not getattr(stdssl, name), name
    assert gssl._create_stdlib_context is gssl._create_unverified_context
    assert gssl.__implements__ == ["SSLSocket", "get_server_certificate"]
    # Importing the green module changes nothing in the stdlib one.
    assert stdssl.SSLContext.sslsocket_class is stdssl.SSLSocket
    with pytest.raises(TypeError, match="does not have a public constructor"):
        gssl.SSLSocket()


def test_green_context_property_setters_do_not_recurse(cert):
    # gevent#1016/#1777: a context subclass whose setters reach themselves again.
    for ctx in (gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT), gssl.create_default_context(),
                gssl._create_unverified_context()):
        assert type(ctx) is gssl.SSLContext and isinstance(ctx, stdssl.SSLContext)
        ctx.options |= gssl.OP_NO_TICKET
        assert ctx.options & gssl.OP_NO_TICKET
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_OPTIONAL
        assert ctx.verify_mode is gssl.CERT_OPTIONAL
        ctx.verify_flags |= gssl.VERIFY_X509_STRICT
        ctx.minimum_version = gssl.TLSVersion.TLSv1_2
        ctx.maximum_version = gssl.TLSVersion.TLSv1_3
        assert ctx.minimum_version is gssl.TLSVersion.TLSv1_2


# -- handshake, data ------------------------------------------------------------------------

def test_handshake_makes_green_ssl_sockets_on_both_sides(track, server_ctx, client_ctx, cert):
    client, server = tls_pair(track, server_ctx, client_ctx)
    for sock in (client, server):
        assert type(sock) is gssl.SSLSocket and isinstance(sock, stdssl.SSLSocket)
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        assert sock.gettimeout() is None
    assert client.server_side is False and server.server_side is True
    assert client.server_hostname == "localhost" and server.server_hostname is None
    assert dict(x[0] for x in client.getpeercert()["subject"])["commonName"] == "localhost"
    assert server.getpeercert() is None  # no client certificate asked for
    assert client.cipher() == server.cipher()
    client.sendall(b"ping")
    assert server.recv(4) == b"ping"
    server.write(b"pong")
    assert client.read(4) == b"pong"


def test_multi_megabyte_sendall_both_ways_at_once(track, server_ctx, client_ctx):
    # Four green threads: each side sends 4 MB while reading the other's, so
    # every TLS socket has a reader and a writer waiting on it at once.
    client, server = tls_pair(track, server_ctx, client_ctx)
    up = os.urandom(4 * MB)
    down = os.urandom(4 * MB)
    server_reader = greenpatch.spawn(recv_exactly, server, len(up))
    client_reader = greenpatch.spawn(recv_exactly, client, len(down))
    server_writer = greenpatch.spawn(server.sendall, down)
    client.sendall(memoryview(up))
    server_writer.wait()
    assert client_reader.wait() == down
    assert server_reader.wait() == up


def test_send_returns_what_was_written_and_recv_into_fills_the_buffer(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    data = os.urandom(3 * MB)
    reader = greenpatch.spawn(recv_exactly, server, len(data))
    sent = 0
    with memoryview(data) as view:
        while sent < len(data):
            n = client.send(view[sent:sent + 256 * 1024])
            assert 0 < n <= 256 * 1024
            sent += n
    assert reader.wait() == data
    buf = bytearray(10)
    server.sendall(b"0123456789")
    assert client.recv_into(buf, 4) == 4 and buf[:4] == b"0123"
    assert client.read(6, memoryview(buf)) == 6 and buf[:6] == b"456789"


def test_pending_counts_decrypted_bytes_not_yet_read(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    assert client.pending() == 0
    server.sendall(b"x" * 100)  # one TLS record
    assert client.recv(10) == b"x" * 10
    assert client.pending() == 90
    assert client.recv(1000) == b"x" * 90
    assert client.pending() == 0


def test_do_handshake_on_connect_false_then_explicit_handshakes(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx,
                              server_kw={"do_handshake_on_connect": False},
                              client_kw={"do_handshake_on_connect": False})
    assert client.version() is None  # no handshake yet
    peer = greenpatch.spawn(server.do_handshake)
    client.do_handshake()
    peer.wait()
    assert client.version() == server.version() is not None
    client.sendall(b"after")
    assert server.recv(5) == b"after"


def test_connect_on_a_wrapped_unconnected_socket_handshakes(track, server_ctx, client_ctx):
    lst = listener(track)
    accepted = greenpatch.spawn(lambda: server_ctx.wrap_socket(lst.accept()[0], server_side=True))
    client = client_ctx.wrap_socket(gsocket.socket(), server_hostname="localhost")
    track.append(client)
    client.connect(lst.getsockname())
    server = accepted.wait()
    track.append(server)
    assert client.version() is not None
    server.sendall(b"hi")
    assert client.recv(2) == b"hi"
    # connect_ex takes the same path and returns 0.
    accepted = greenpatch.spawn(lambda: server_ctx.wrap_socket(lst.accept()[0], server_side=True))
    other = client_ctx.wrap_socket(gsocket.socket(), server_hostname="localhost")
    track.append(other)
    assert other.connect_ex(lst.getsockname()) == 0
    track.append(accepted.wait())
    assert other.version() is not None


def test_accept_on_a_wrapped_listener_returns_a_handshaken_server_socket(track, server_ctx, client_ctx):
    lst = server_ctx.wrap_socket(listener(track), server_side=True)
    track.append(lst)
    accepted = greenpatch.spawn(lst.accept)
    client = client_ctx.wrap_socket(gsocket.create_connection(lst.getsockname()), server_hostname="localhost")
    track.append(client)
    server, addr = accepted.wait()
    track.append(server)
    assert type(server) is gssl.SSLSocket and server.server_side
    assert addr == client.getsockname()
    server.sendall(b"welcome")
    assert client.recv(7) == b"welcome"


def test_sni_callback_is_called_with_the_server_name(track, server_ctx, client_ctx):
    seen = []

    def on_sni(sslsock, name, ctx):
        seen.append((type(sslsock), name, ctx is server_ctx))

    server_ctx.sni_callback = on_sni
    client, server = tls_pair(track, server_ctx, client_ctx)
    assert seen == [(gssl.SSLSocket, "localhost", True)]


def test_unwrap_on_both_sides_then_plain_data_on_the_same_sockets(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    client.settimeout(5)
    client.sendall(b"secret")
    assert server.recv(6) == b"secret"
    peer = greenpatch.spawn(server.unwrap)  # each side waits for the other's close_notify
    plain_client = client.unwrap()
    plain_server = peer.wait()
    # As in CPython, unwrap() returns the socket itself, now without TLS.
    assert plain_client is client and plain_server is server
    assert client.version() is None and client.gettimeout() == 5
    client.sendall(b"clear")
    assert server.recv(5) == b"clear"
    raw = gsocket.socket(fileno=os.dup(server.fileno()))  # what travels on the wire now is clear text
    track.append(raw)
    client.sendall(b"visible")
    assert raw.recv(7) == b"visible"
    with pytest.raises(ValueError, match="No SSL wrapper around"):
        client.unwrap()


def test_makefile_readline_and_write(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    lines = [b"line %d " % n + b"x" * (n * 97) + b"\n" for n in range(200)]

    def serve():
        with server.makefile("rwb") as f:
            for line in lines:
                f.write(line)
            f.flush()
            return f.readline()

    peer = greenpatch.spawn(serve)
    with client.makefile("rb") as rfile, client.makefile("wb", buffering=0) as wfile:
        assert [rfile.readline() for _ in lines] == lines
        wfile.write(b"thanks\n")
    assert peer.wait() == b"thanks\n"


def test_sendfile_over_tls_falls_back_to_send(track, server_ctx, client_ctx, tmp_path):
    client, server = tls_pair(track, server_ctx, client_ctx)
    data = os.urandom(2 * MB + 123)
    path = tmp_path / "payload"
    path.write_bytes(data)
    reader = greenpatch.spawn(recv_exactly, server, len(data) - 1000)
    with open(path, "rb") as f:
        assert client.sendfile(f, offset=1000) == len(data) - 1000
        assert f.tell() == len(data)
    assert reader.wait() == data[1000:]


def test_get_server_certificate_from_a_local_server(track, server_ctx, cert):
    lst = listener(track)

    def serve():
        conn, _ = lst.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)  # until the client goes away

    peer = greenpatch.spawn(serve)
    pem = gssl.get_server_certificate(lst.getsockname(), ca_certs=cert[0], timeout=10)
    peer.wait()
    with open(cert[0]) as f:
        assert gssl.PEM_cert_to_DER_cert(pem) == gssl.PEM_cert_to_DER_cert(f.read())


@pytest.mark.skipif(not hasattr(stdssl, "wrap_socket"), reason="ssl.wrap_socket() was removed in Python 3.12")
def test_module_wrap_socket_builds_a_green_socket(track, server_ctx):
    lst = listener(track)
    accepted = greenpatch.spawn(lambda: server_ctx.wrap_socket(lst.accept()[0], server_side=True))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = gssl.wrap_socket(gsocket.create_connection(lst.getsockname()))
    track += [client, accepted.wait()]
    assert type(client) is gssl.SSLSocket and client.version() is not None


def test_wrap_bio_is_the_stdlibs_and_works_without_sockets(server_ctx, client_ctx):
    c_in, c_out, s_in, s_out = (gssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    assert type(client) is stdssl.SSLObject
    done = set()
    for _ in range(10):
        for name, obj in (("client", client), ("server", server)):
            if name in done:
                continue
            try:
                obj.do_handshake()
                done.add(name)
            except gssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if len(done) == 2:
            break
    assert done == {"client", "server"}
    client.write(b"through memory")
    s_in.write(c_out.read())
    assert server.read(100) == b"through memory"


# -- timeouts, non-blocking mode, ragged EOFs ------------------------------------------------

def cpython_handshake_timeout_message():
    """What the stdlib says when a handshake times out (this build's _ssl.c line included)."""
    a, b = stdsocket.socketpair()
    with a, b:
        a.settimeout(0.01)
        ctx = stdssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = stdssl.CERT_NONE
        with pytest.raises(TimeoutError) as info:
            ctx.wrap_socket(a)
    return str(info.value)


def test_handshake_times_out_against_a_silent_peer(track, client_ctx):
    lst = listener(track)
    raw = gsocket.create_connection(lst.getsockname())
    track.append(raw)
    silent, _ = lst.accept()  # accepted, never speaks
    track.append(silent)
    raw.settimeout(TIMEOUT)
    exc = assert_times_out(cpython_handshake_timeout_message(),
                           lambda: client_ctx.wrap_socket(raw, server_hostname="localhost"))
    assert "The handshake operation timed out" in str(exc)
    assert raw.fileno() == -1  # detached into the SSLSocket, which wrap_socket closed


def test_recv_times_out_when_the_peer_never_speaks(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    client.settimeout(TIMEOUT)
    assert_times_out("The read operation timed out", client.recv, 10)
    assert_times_out("The read operation timed out", client.recv_into, bytearray(10))
    server.sendall(b"late")
    assert client.recv(4) == b"late"  # the socket is still usable


def test_send_times_out_when_the_peer_never_reads(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    client.settimeout(TIMEOUT)
    chunk = b"w" * (1 * MB)
    with pytest.raises(TimeoutError) as info:
        for _ in range(100):  # the kernel buffers hold a few MB at most
            client.sendall(chunk)
    assert str(info.value) == "The write operation timed out"


def test_nonblocking_mode_raises_want_read_as_cpython_does(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    client.setblocking(False)
    with pytest.raises(gssl.SSLWantReadError) as info:
        client.recv(10)
    assert info.value.args[0] == gssl.SSL_ERROR_WANT_READ
    assert "The operation did not complete (read)" in str(info.value)
    server.sendall(b"now")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert client.recv(3) == b"now"
            break
        except gssl.SSLWantReadError:
            greenpatch.sleep(0.01)
    else:
        raise AssertionError("the data never arrived")


def test_nonblocking_handshake(track, server_ctx, client_ctx):
    raw = gsocket.create_connection(listener(track).getsockname())  # never accepted: no handshake
    raw.setblocking(False)
    track.append(raw)
    with pytest.raises(ValueError, match="do_handshake_on_connect should not be specified for non-blocking"):
        client_ctx.wrap_socket(raw, server_hostname="localhost")
    lst = listener(track)
    accepted = greenpatch.spawn(lambda: server_ctx.wrap_socket(lst.accept()[0], server_side=True))
    raw = gsocket.create_connection(lst.getsockname())
    raw.setblocking(False)
    track.append(raw)
    client = client_ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    track.append(client)
    with pytest.raises(gssl.SSLWantReadError):
        client.do_handshake()
    client.do_handshake(block=True)  # waits (greenly) for this call only
    assert client.gettimeout() == 0.0 and client.version() is not None
    track.append(accepted.wait())


def test_suppress_ragged_eofs(track, server_ctx, client_ctx):
    for suppress in (True, False):
        client, server = tls_pair(track, server_ctx, client_ctx, client_kw={"suppress_ragged_eofs": suppress})
        gsocket.socket.shutdown(server, gsocket.SHUT_RDWR)  # TCP FIN without a TLS close_notify
        if suppress:
            assert client.recv(10) == b""
            assert client.recv_into(bytearray(10)) == 0
        else:
            with pytest.raises(gssl.SSLEOFError) as info:
                client.recv(10)
            assert info.value.args[0] == gssl.SSL_ERROR_EOF


# -- closing, concurrency, the hub ----------------------------------------------------------

def test_closing_wakes_a_green_thread_waiting_in_recv(track, server_ctx, client_ctx):
    client, server = tls_pair(track, server_ctx, client_ctx)
    waiter = wait_and_capture(client.recv, 10)
    greenpatch.sleep(0.05)
    assert not waiter.ready()
    client.close()
    with greenpatch.Timeout(5):
        outcome, exc = waiter.wait()
    assert outcome == "raised" and isinstance(exc, OSError) and exc.errno == errno.EBADF


def test_closing_wakes_a_green_thread_waiting_in_the_handshake(track, client_ctx):
    lst = listener(track)
    raw = gsocket.create_connection(lst.getsockname())
    silent, _ = lst.accept()
    track += [raw, silent]
    client = client_ctx.wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
    track.append(client)
    waiter = wait_and_capture(client.do_handshake)
    greenpatch.sleep(0.05)
    assert not waiter.ready()
    client.close()
    with greenpatch.Timeout(5):
        outcome, exc = waiter.wait()
    assert outcome == "raised" and isinstance(exc, OSError) and exc.errno == errno.EBADF


def slow_relay(src, dst, piece=64, delay=0.01):
    """Forward src to dst in ``piece``-byte slices, ``delay`` seconds apart, until EOF."""
    while True:
        try:
            data = src.recv(65536)
        except OSError:
            data = b""
        if not data:
            try:
                dst.shutdown(gsocket.SHUT_WR)
            except OSError:
                pass
            return
        for start in range(0, len(data), piece):
            greenpatch.sleep(delay)
            dst.sendall(data[start:start + piece])


def test_heartbeat_stays_on_time_during_slow_handshakes(track, server_ctx, client_ctx):
    # A relay dribbles every handshake byte through in 64-byte pieces 10 ms
    # apart, so each handshake waits on the hub many times; 10 of them run at
    # once while a 10 ms heartbeat measures how late the hub gets.
    lst = listener(track)
    relay_lst = listener(track)
    stop, lateness = [], []
    beat = greenpatch.spawn(heartbeat, lateness, stop)

    def server():
        conn, _ = lst.accept()
        track.append(conn)
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100).upper())

    def relay():
        near, _ = relay_lst.accept()
        far = gsocket.create_connection(lst.getsockname())
        track.extend([near, far])
        greenpatch.spawn(slow_relay, far, near)
        slow_relay(near, far)

    def client(n):
        with client_ctx.wrap_socket(gsocket.create_connection(relay_lst.getsockname()),
                                    server_hostname="localhost") as tls:
            tls.sendall(b"hello %d" % n)
            return tls.recv(100)

    helpers = [greenpatch.spawn(server) for _ in range(10)] + [greenpatch.spawn(relay) for _ in range(10)]
    clients = [greenpatch.spawn(client, n) for n in range(10)]
    assert [c.wait() for c in clients] == [b"HELLO %d" % n for n in range(10)]
    for helper in helpers:
        helper.wait()
    stop.append(True)
    beat.wait()
    assert len(lateness) > 10  # the heartbeat ran while the handshakes waited
    assert max(lateness) < 0.1, f"the hub was held {max(lateness) * 1000:.0f} ms"


def test_concurrent_handshakes_share_one_context(track, server_ctx, client_ctx):
    lst = listener(track)
    lst.listen(50)

    def serve_one():
        conn, _ = lst.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100)[::-1])

    def client(n):
        with client_ctx.wrap_socket(gsocket.create_connection(lst.getsockname()),
                                    server_hostname="localhost") as tls:
            tls.sendall(b"abc%03d" % n)
            return tls.recv(100)

    servers = [greenpatch.spawn(serve_one) for _ in range(30)]
    clients = [greenpatch.spawn(client, n) for n in range(30)]
    assert sorted(c.wait() for c in clients) == sorted((b"abc%03d" % n)[::-1] for n in range(30))
    for s in servers:
        s.wait()


# -- under monkey_patch() ------------------------------------------------------------------------

def run_script(script, *args, timeout=90):
    env = dict(os.environ, NO_PROXY="*", no_proxy="*")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True,
                            text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr
    return result.stdout


PRE_PATCH_CONTEXT = """
    import socket, ssl, sys
    certfile, keyfile = sys.argv[1:3]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)      # both made before the patch
    server_ctx.load_cert_chain(certfile, keyfile)
    client_ctx = ssl.create_default_context(cafile=certfile)

    import greenpatch
    assert "ssl" in greenpatch.monkey_patch()
    import threading
    from greenpatch.green import ssl as green_ssl

    # The property setters of a context made before the patch (gevent#1016/#1777).
    client_ctx.options |= ssl.OP_NO_TICKET
    client_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    assert ssl.SSLContext.sslsocket_class is green_ssl.SSLSocket
    new_ctx = ssl.create_default_context(cafile=certfile)
    assert type(new_ctx) is ssl.SSLContext and isinstance(client_ctx, ssl.SSLContext)
    new_ctx.options |= ssl.OP_NO_COMPRESSION

    listener = socket.create_server(("127.0.0.1", 0))
    both_connected = threading.Barrier(3, timeout=10)

    def serve():
        conns = [listener.accept()[0] for _ in range(2)]
        # Both clients are mid-handshake now: had the first one blocked the OS
        # thread, the second could not have connected.
        both_connected.wait()
        handlers = [threading.Thread(target=handle, args=(conn,)) for conn in conns]
        for t in handlers:
            t.start()
        for t in handlers:
            t.join()

    def handle(conn):
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100).upper())

    results = {}

    def client(n, ctx):
        raw = socket.create_connection(listener.getsockname())
        if n == 0:
            both_connected.wait()
        else:
            threading.Thread(target=both_connected.wait).start()
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert type(tls) is green_ssl.SSLSocket and isinstance(tls, ssl.SSLSocket), type(tls)
            tls.sendall(b"hello %d" % n)
            results[n] = tls.recv(100)

    threads = [threading.Thread(target=serve)]
    threads += [threading.Thread(target=client, args=(n, ctx)) for n, ctx in ((0, client_ctx), (1, new_ctx))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: b"HELLO 0", 1: b"HELLO 1"}, results
    print("OK")
"""


def test_patched_context_made_before_the_patch_wraps_green(cert):
    run_script(PRE_PATCH_CONTEXT, *cert)


def test_patched_sslsocket_subclass_waits_greenly(cert):
    # A program's own subclass of ssl.SSLSocket (ssl imported after the patch,
    # so its base is the green socket) gets the green TLS methods too.
    run_script("""
        import greenpatch
        greenpatch.monkey_patch()
        import socket, ssl, sys, threading, time
        certfile, keyfile = sys.argv[1:3]

        class MySSLSocket(ssl.SSLSocket):
            pass

        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(certfile, keyfile)
        client_ctx = ssl.create_default_context(cafile=certfile)
        client_ctx.sslsocket_class = MySSLSocket
        listener = socket.create_server(("127.0.0.1", 0))
        ticks = []

        def ticker():
            for _ in range(20):
                time.sleep(0.01)
                ticks.append(1)

        def serve():
            conn, _ = listener.accept()
            time.sleep(0.3)  # a slow server: the client's handshake waits meanwhile
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"done")

        threads = [threading.Thread(target=f) for f in (serve, ticker)]
        for t in threads:
            t.start()
        with client_ctx.wrap_socket(socket.create_connection(listener.getsockname()),
                                    server_hostname="localhost") as tls:
            assert type(tls) is MySSLSocket
            assert tls.recv(4) == b"done"
        assert len(ticks) == 20, ticks  # the ticker ran while the handshake waited
        for t in threads:
            t.join()
        print("OK")
    """, *cert)


def test_patch_flags_socket_without_ssl_and_ssl_patched_on_first_import():
    run_script("""
        import sys
        import greenpatch
        from greenpatch import patcher
        assert greenpatch.monkey_patch(socket=True) == ["socket"]
        assert "ssl" not in sys.modules, "patching socket imported ssl"
        assert not greenpatch.is_patched("ssl")
        # ssl costs an import (OpenSSL): monkey_patch() leaves it to the first import.
        greenpatch.monkey_patch(ssl=True)
        assert "ssl" not in sys.modules, "monkey_patch(ssl=True) imported ssl"
        assert patcher.report()["patched_on_import"] == ["ssl"]
        import ssl
        from greenpatch.green import ssl as green_ssl
        assert greenpatch.is_patched("ssl")
        assert ssl.SSLContext.sslsocket_class is green_ssl.SSLSocket
        assert ssl.get_server_certificate is green_ssl.get_server_certificate
        assert ssl.SSLSocket is green_ssl.SSLSocket
        assert greenpatch.original("ssl", "SSLSocket") in green_ssl.SSLSocket.__bases__
        assert patcher.report()["patched"]["ssl"] == ["SSLSocket", "get_server_certificate"]
        assert greenpatch.monkey_patch(ssl=True) == []
        print("OK")
    """)


HTTPS_CLIENTS = """
    import sys
    certfile, keyfile, client_kind = sys.argv[1:4]
    if client_kind == "requests":
        import requests                   # imports ssl and urllib3 before the patch, as programs do
    import greenpatch
    greenpatch.monkey_patch()
    import http.client, http.server, ssl, threading, urllib.request

    N = 20
    in_flight = threading.Barrier(N, timeout=30)

    def body(n):
        return b"%d:" % n * (30000 + n)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            n = int(self.path.strip("/"))
            in_flight.wait()              # all N requests are being served at once, or this breaks
            data = body(n)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile, keyfile)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Handshakes happen in the handler threads, on their first read.
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()

    client_ctx = ssl.create_default_context(cafile=certfile)
    results = {}

    def fetch(n):
        url = f"https://localhost:{port}/{n}"
        if client_kind == "http.client":
            conn = http.client.HTTPSConnection("localhost", port, context=client_ctx, timeout=60)
            conn.request("GET", f"/{n}")
            response = conn.getresponse()
            results[n] = (response.status, response.read())
            assert isinstance(conn.sock, ssl.SSLSocket)
            conn.close()
        elif client_kind == "urllib":
            with urllib.request.urlopen(url, context=client_ctx, timeout=60) as response:
                results[n] = (response.status, response.read())
        else:
            response = requests.get(url, verify=certfile, timeout=60)
            results[n] = (response.status_code, response.content)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    httpd.shutdown()
    bad = [n for n in range(N) if results.get(n) != (200, body(n))]
    assert not bad, f"wrong or missing bodies for {bad}"
    print(f"{client_kind}: {N} concurrent HTTPS requests, all bodies correct")
    print("OK")
"""


@pytest.mark.parametrize("client_kind", ["http.client", "urllib", "requests"])
def test_patched_https_clients_run_concurrently(cert, client_kind):
    if client_kind == "requests":
        pytest.importorskip("requests", reason="requests is not installed in this Python")
    run_script(HTTPS_CLIENTS, *cert, client_kind)
