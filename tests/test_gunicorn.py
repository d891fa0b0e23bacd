"""The gunicorn worker, run by the real gunicorn: 4 workers, 500 concurrent clients, SIGTERM.

The WSGI app sleeps 0.5 s per request with time.sleep (patched in the
workers): 2,000 requests would take 1,000 s served one at a time.
"""

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

gunicorn = pytest.importorskip("gunicorn", reason="gunicorn is not installed (pip install '.[test]')")

WORKER = "greenpatch.contrib.gunicorn.GreenWorker"

APP = textwrap.dedent('''
    import os, time

    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/file":
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(os.path.getsize(__file__)))])
            return environ["wsgi.file_wrapper"](open(__file__, "rb"))
        time.sleep(0.5)
        body = ("%s %d" % (path, os.getpid())).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
''')

# Run under python -m greenpatch: 500 green threads, each making 4 requests on its own connection.
CLIENT = textwrap.dedent('''
    import http.client, json, sys, threading, time
    port, clients, per_client = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    bad, pids, done = [], set(), [0]

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for j in range(per_client):
            path = "/c%d/r%d" % (i, j)
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read().decode()
            want, _, pid = body.rpartition(" ")
            if response.status != 200 or want != path:
                bad.append((path, response.status, body))
            pids.add(pid)
            done[0] += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps({"elapsed": time.monotonic() - started, "done": done[0], "bad": bad[:5],
                      "nbad": len(bad), "pids": len(pids)}))
''')


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port, proc, deadline=15):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited early: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start listening")


@pytest.fixture
def server(tmp_path):
    (tmp_path / "gapp.py").write_text(APP)
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-w", "4", "-k", WORKER, "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "10", "--chdir", str(tmp_path)]
    from gunicorn.config import KNOWN_SETTINGS
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        argv.append("--no-control-socket")
    proc = subprocess.Popen(argv + ["gapp:app"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_listening(port, proc)
        yield proc, port, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.timeout(60)
def test_four_workers_500_concurrent_clients_then_sigterm(server):
    proc, port, tmp_path = server
    # sendfile on a green socket: the file arrives whole.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(APP.encode())

    (tmp_path / "client.py").write_text(CLIENT)
    result = subprocess.run([sys.executable, "-m", "greenpatch", str(tmp_path / "client.py"),
                             str(port), "500", "4"], capture_output=True, text=True, timeout=50)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"gunicorn 4 workers: {out['done']} requests from 500 concurrent clients "
          f"in {out['elapsed']:.2f} s ({out['pids']} workers answered)")
    assert out["done"] == 2000 and out["nbad"] == 0, out
    assert out["elapsed"] < 20, out  # serial: 1,000 s; ideal: 4 x 0.5 s
    assert out["pids"] >= 2, out  # the load was shared between workers

    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "Shutting down: Master" in output
    assert "Traceback" not in output, output


@pytest.mark.timeout(40)
def test_sigterm_lets_in_flight_request_finish(server):
    proc, port, _ = server
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.2)  # the request is being handled (it sleeps 0.5 s)
    proc.send_signal(signal.SIGTERM)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 200") and b"/slow " in data, data
    output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
