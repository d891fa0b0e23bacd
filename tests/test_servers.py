"""greenpatch.servers: serial stdlib servers made concurrent, with and without monkey_patch().

The patched scenarios run in a subprocess (tests/scripts/servers_scenarios.py):
stock serial servers whose handlers call time.sleep(0.3), hit by many
concurrent clients.  The unpatched tests run here: the handlers only do
socket I/O, which make_concurrent makes green by itself.
"""

import json
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from greenpatch.servers import ConcurrentMixIn, concurrent, make_concurrent

SCRIPTS = Path(__file__).parent / "scripts"


def scenario(name, patch=True):
    argv = [sys.executable, str(SCRIPTS / "servers_scenarios.py"), name] + (["patch"] if patch else [])
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(30)
def test_tcp_server_50_clients_sleeping_handlers():
    # Serial, 50 requests of 0.3 s take 15 s; concurrent, about 0.3 s.
    out = scenario("tcp")
    assert out["ok"], out
    assert out["max_live"] == 50
    assert out["elapsed"] < 5, out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["http", "wsgi", "xmlrpc", "udp"])
def test_stdlib_server_kinds(name):
    out = scenario(name)
    assert out["ok"], out
    assert out["max_live"] > 1, out  # requests overlapped
    assert out["elapsed"] < 5, out  # 30 x 0.3 s serial would be 9 s


@pytest.mark.timeout(30)
def test_pool_size_limits_concurrency():
    out = scenario("pool")
    assert out["ok"], out
    assert out["max_live"] == 3, out
    assert out["elapsed"] >= 4 * 0.3 * 0.9, out  # 12 requests, 3 at a time


@pytest.mark.timeout(30)
def test_graceful_shutdown_waits_for_in_flight_request():
    out = scenario("graceful")
    assert out["ok"], out
    assert out["answer"] == "LATE\n"


@pytest.mark.timeout(30)
def test_shutdown_timeout_kills_leftover_requests():
    out = scenario("shutdown_timeout")
    assert out["ok"], out
    assert out["waited"] < 10, out


# -- without monkey_patch(): in this process ---------------------------------------

class Upper(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline().upper())


def _reverse_order_clients(connect, count=20):
    """Open every connection first, then send in reverse order: a serial server would wait forever."""
    socks = [connect() for _ in range(count)]
    try:
        for sock in socks:
            sock.settimeout(10)
        for i, sock in reversed(list(enumerate(socks))):
            sock.sendall(b"line %d\n" % i)
        return [sock.makefile("rb").readline() for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _serve_in_thread(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


@pytest.mark.timeout(20)
def test_without_monkey_patch_tcp():
    server = make_concurrent(socketserver.TCPServer(("127.0.0.1", 0), Upper))
    thread = _serve_in_thread(server)
    try:
        lines = _reverse_order_clients(lambda: socket.create_connection(server.server_address))
        assert lines == [b"LINE %d\n" % i for i in range(20)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.timeout(20)
def test_without_monkey_patch_unix_stream_mixin(tmp_path):
    class Server(ConcurrentMixIn, socketserver.UnixStreamServer):
        pool_size = 50
    path = str(tmp_path / "sock")
    server = Server(path, Upper)

    def connect():
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        return sock
    thread = _serve_in_thread(server)
    try:
        lines = _reverse_order_clients(connect)
        assert lines == [b"LINE %d\n" % i for i in range(20)]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.timeout(20)
def test_decorator_and_make_concurrent_keep_the_class_shape():
    @concurrent(pool_size=7)
    class Server(socketserver.TCPServer):
        pass
    assert issubclass(Server, socketserver.TCPServer) and Server.pool_size == 7
    server = make_concurrent(socketserver.TCPServer(("127.0.0.1", 0), Upper), pool_size=2)
    try:
        assert isinstance(server, socketserver.TCPServer) and isinstance(server, ConcurrentMixIn)
        assert server.pool_size == 2 and type(server).__name__ == "TCPServer"
        assert make_concurrent(server) is server
    finally:
        server.server_close()
    with pytest.raises(TypeError):
        make_concurrent(object())


@pytest.mark.timeout(20)
def test_handle_error_and_shutdown_request_run_in_the_green_thread():
    seen = []

    class Boom(socketserver.BaseRequestHandler):
        def handle(self):
            raise ValueError("boom")

    class Server(socketserver.TCPServer):
        def handle_error(self, request, client_address):
            seen.append(sys.exc_info()[0])

        def shutdown_request(self, request):
            seen.append("closed")
            super().shutdown_request(request)
    server = make_concurrent(Server(("127.0.0.1", 0), Boom))
    thread = _serve_in_thread(server)
    try:
        with socket.create_connection(server.server_address) as sock:
            sock.settimeout(10)
            assert sock.recv(10) == b""
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert seen == [ValueError, "closed"]


SERIAL_SCRIPT = """
import socket, socketserver, threading, time, sys

class Sleepy(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        time.sleep(0.3)
        self.wfile.write(line.upper())

server = socketserver.TCPServer(("127.0.0.1", 0), Sleepy)
thread = threading.Thread(target=server.serve_forever)
thread.start()

def client(i, results):
    with socket.create_connection(server.server_address) as sock:
        sock.sendall(b"x%d\\n" % i)
        results[i] = sock.makefile("rb").readline() == b"X%d\\n" % i

results = [False] * 20
started = time.monotonic()
clients = [threading.Thread(target=client, args=(i, results)) for i in range(20)]
for c in clients: c.start()
for c in clients: c.join()
print(all(results), round(time.monotonic() - started, 2), type(server).__mro__[1].__name__)
server.shutdown()
server.server_close()
"""


@pytest.mark.timeout(30)
def test_cli_concurrent_servers_on_unmodified_script(tmp_path):
    script = tmp_path / "serial.py"
    script.write_text(SERIAL_SCRIPT)
    result = subprocess.run([sys.executable, "-m", "greenpatch", "--concurrent-servers", str(script)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    ok, elapsed, base = result.stdout.split()
    assert ok == "True" and base == "ConcurrentMixIn", result.stdout
    assert float(elapsed) < 3  # 20 x 0.3 s = 6 s serial
