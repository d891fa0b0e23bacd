"""Scenarios for tests/test_servers.py, run in a subprocess: ``servers_scenarios.py NAME [patch|nopatch]``.

Each prints one JSON line with its measurements.  With ``patch`` the
stdlib is patched first; the servers are stock serial stdlib servers whose
handlers sleep with ``time.sleep``.
"""
import sys

if sys.argv[2:] == ["patch"]:
    import greenpatch
    greenpatch.monkey_patch()

import http.client  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import socketserver  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import xmlrpc.client  # noqa: E402
import xmlrpc.server  # noqa: E402
from http.server import BaseHTTPRequestHandler, HTTPServer  # noqa: E402
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer  # noqa: E402

from greenpatch.servers import concurrent, make_concurrent  # noqa: E402

DELAY = 0.3
live = {"now": 0, "max": 0}


def track(func):
    def wrapper(*args, **kwargs):
        live["now"] += 1
        live["max"] = max(live["max"], live["now"])
        try:
            return func(*args, **kwargs)
        finally:
            live["now"] -= 1
    return wrapper


class SleepyTCP(socketserver.StreamRequestHandler):
    @track
    def handle(self):
        line = self.rfile.readline()
        time.sleep(DELAY)
        self.wfile.write(line.upper())


class SleepyHTTP(BaseHTTPRequestHandler):
    @track
    def do_GET(self):
        time.sleep(DELAY)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class QuietWSGI(WSGIRequestHandler):
    def log_message(self, *args):
        pass


@track
def wsgi_app(environ, start_response):
    time.sleep(DELAY)
    body = environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class SleepyUDP(socketserver.DatagramRequestHandler):
    @track
    def handle(self):
        data = self.rfile.read()
        time.sleep(DELAY)
        self.wfile.write(data.upper())


def serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    return thread


def in_threads(count, func):
    results = [None] * count

    def run(i):
        results[i] = func(i)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def tcp_client(port):
    def call(i):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"hello %d\n" % i)
            return sock.makefile("rb").readline() == b"HELLO %d\n" % i
    return call


def scenario_tcp(count=50, pool_size=None):
    server = make_concurrent(socketserver.TCPServer(("127.0.0.1", 0), SleepyTCP), pool_size=pool_size)
    thread = serve(server)
    started = time.monotonic()
    ok = in_threads(count, tcp_client(server.server_address[1]))
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    thread.join()
    return {"ok": all(ok), "n": count, "elapsed": elapsed, "max_live": live["max"]}


def scenario_pool():
    return scenario_tcp(count=12, pool_size=3)


def scenario_http():
    @concurrent
    class Server(HTTPServer):
        pass
    server = Server(("127.0.0.1", 0), SleepyHTTP)
    thread = serve(server)
    port = server.server_address[1]

    def call(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/item/{i}")
        response = conn.getresponse()
        ok = response.status == 200 and response.read() == f"/item/{i}".encode()
        conn.close()
        return ok
    started = time.monotonic()
    ok = in_threads(30, call)
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    thread.join()
    return {"ok": all(ok), "n": 30, "elapsed": elapsed, "max_live": live["max"]}


def scenario_wsgi():
    server = WSGIServer(("127.0.0.1", 0), QuietWSGI)
    server.set_app(wsgi_app)
    make_concurrent(server)
    thread = serve(server)
    port = server.server_address[1]

    def call(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/w/{i}")
        response = conn.getresponse()
        ok = response.status == 200 and response.read() == f"/w/{i}".encode()
        conn.close()
        return ok
    started = time.monotonic()
    ok = in_threads(30, call)
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    thread.join()
    return {"ok": all(ok), "n": 30, "elapsed": elapsed, "max_live": live["max"]}


def scenario_xmlrpc():
    server = xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False)

    @track
    def slow_add(a, b):
        time.sleep(DELAY)
        return a + b
    server.register_function(slow_add, "slow_add")
    make_concurrent(server)
    thread = serve(server)
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    started = time.monotonic()
    ok = in_threads(30, lambda i: xmlrpc.client.ServerProxy(url).slow_add(i, 1000) == i + 1000)
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    thread.join()
    return {"ok": all(ok), "n": 30, "elapsed": elapsed, "max_live": live["max"]}


def scenario_udp():
    server = make_concurrent(socketserver.UDPServer(("127.0.0.1", 0), SleepyUDP))
    thread = serve(server)
    address = server.server_address

    def call(i):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(20)
            sock.sendto(b"dgram %d" % i, address)
            return sock.recvfrom(100)[0] == b"DGRAM %d" % i
    started = time.monotonic()
    ok = in_threads(30, call)
    elapsed = time.monotonic() - started
    server.shutdown()
    server.server_close()
    thread.join()
    return {"ok": all(ok), "n": 30, "elapsed": elapsed, "max_live": live["max"]}


def scenario_graceful():
    """shutdown() while a request sleeps: the client still gets its whole answer."""
    server = make_concurrent(socketserver.TCPServer(("127.0.0.1", 0), SleepyTCP))
    thread = serve(server)
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]))
    sock.sendall(b"late\n")
    while server.active_requests() == 0:
        time.sleep(0.01)
    started = time.monotonic()
    server.shutdown()
    waited = time.monotonic() - started
    answer = sock.makefile("rb").readline()
    server.server_close()
    thread.join()
    refused = False
    try:
        socket.create_connection(server.server_address, timeout=5).close()
    except OSError:
        refused = True
    return {"ok": answer == b"LATE\n" and refused, "waited": waited, "answer": answer.decode()}


def scenario_shutdown_timeout():
    """A request that outlives shutdown_timeout is killed; its connection is closed."""
    global DELAY
    DELAY = 30
    server = make_concurrent(socketserver.TCPServer(("127.0.0.1", 0), SleepyTCP), shutdown_timeout=0.2)
    thread = serve(server)
    sock = socket.create_connection(("127.0.0.1", server.server_address[1]))
    sock.sendall(b"never\n")
    while server.active_requests() == 0:
        time.sleep(0.01)
    started = time.monotonic()
    server.shutdown()
    waited = time.monotonic() - started
    sock.settimeout(5)
    answer = sock.recv(100)
    server.server_close()
    thread.join()
    return {"ok": answer == b"" and server.active_requests() == 0, "waited": waited}


if __name__ == "__main__":
    print(json.dumps(globals()["scenario_" + sys.argv[1]]()), flush=True)
