"""The samples: the unmodified echo server under python -m greenpatch, checked by echo_clients.

The headline: many concurrent clients, every byte echoed, one OS thread in the
server.  A plain run of the same server shows the client's thread count is
real (one OS thread per client), and a server that garbles one byte shows
the client really checks.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
SERVER = str(SAMPLES / "echo_server.py")
CLIENTS = str(SAMPLES / "echo_clients.py")
FD_LIMIT = 4096  # what `ulimit -n 4096` gives the server in the README


def _server_limits():
    """In the child before exec: room for thousands of sockets, and Ctrl-C as in a terminal."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < FD_LIMIT:
        wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """An echo server child; its output lines are collected by a reader thread."""

    def __init__(self, argv, quiet=True):
        env = dict(os.environ, ECHO_QUIET="1" if quiet else "0")
        env.pop("PORT", None)
        self.proc = subprocess.Popen([*argv, "0"], env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=_server_limits)
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        first = self.wait_for(lambda lines: lines, timeout=20)
        match = re.fullmatch(r"echo server listening on 127\.0\.0\.1:(\d+)", first[0]) if first else None
        assert match, f"server did not start: {first} {self.stop()}"
        self.port = int(match.group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, condition, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self.lines):
                return self.lines
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.01)
        return self.lines if condition(self.lines) else None

    def stop(self):
        """Ctrl-C the server; return its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        return self.proc.stderr.read()


@pytest.fixture
def green_server():
    server = Server([sys.executable, "-m", "greenpatch", SERVER])
    yield server
    server.stop()


def run_clients(port, count, *options, timeout=120):
    result = subprocess.run([sys.executable, CLIENTS, str(count), "--port", str(port), *options],
                            capture_output=True, text=True, timeout=timeout)
    report = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return result, report


def check_headline(server, count, lines):
    result, report = run_clients(server.port, count, "--lines", str(lines),
                                 "--server-pid", str(server.proc.pid))
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["connected at once"].startswith(f"{count} of {count} ")
    verified, expected = map(int, report["bytes echoed and verified"].split(" of "))
    assert verified == expected > count * lines * 10
    assert report["server OS threads"] == "1"
    assert result.stdout.splitlines()[-1] == "OK"


def test_green_echo_server_serves_200_clients_on_one_os_thread(green_server):
    check_headline(green_server, 200, 5)


# The README's headline run: 1,000 clients at once.  It takes several seconds
# on a 2-core machine, so pyproject's addopts leave it out (-m "not slow");
# run it with `python -m pytest -m slow`.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_green_echo_server_serves_1000_clients_on_one_os_thread(green_server):
    check_headline(green_server, 1000, 10)


def test_plain_echo_server_needs_a_thread_per_client():
    server = Server([sys.executable, SERVER])
    try:
        result, report = run_clients(server.port, 20, "--lines", "3", "--server-pid", str(server.proc.pid))
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["server OS threads"] == "21"


def test_clients_find_the_server_pid_from_the_listening_socket(green_server):
    result, report = run_clients(green_server.port, 3, "--lines", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["server pid"] == str(green_server.proc.pid)
    assert report["server OS threads"] == "1"


def test_green_server_logs_and_stops_on_ctrl_c():
    server = Server([sys.executable, "-m", "greenpatch", SERVER], quiet=False)
    try:
        result, _ = run_clients(server.port, 2, "--lines", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        lines = server.wait_for(lambda lines: sum("client disconnected" in line for line in lines) == 2)
        assert lines, server.lines
    finally:
        stderr = server.stop()
    assert stderr == ""
    assert server.proc.returncode == 0
    assert sum(line.startswith("client connected 127.0.0.1:") for line in server.lines) == 2
    assert sum(line.startswith("echoed client ") for line in server.lines) == 4
    assert "echoed client 1 line 1 " in "\n".join(server.lines)
    assert server.lines[-1] == "echo server stopped"


GARBLING_SERVER = """
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
print("echo server listening on 127.0.0.1:%d" % server.getsockname()[1], flush=True)
conn, _ = server.accept()
with conn:
    data = conn.recv(65536)
    conn.sendall(data[:5] + bytes([data[5] ^ 1]) + data[6:])
    conn.recv(65536)
"""


def test_clients_catch_a_single_wrong_byte():
    server = Server([sys.executable, "-c", GARBLING_SERVER])
    try:
        result, report = run_clients(server.port, 1, "--lines", "3", "--timeout", "10")
    finally:
        server.stop()
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "FAILED"
    assert "client 0: line 0: sent" in result.stderr


README = SAMPLES.parent / "README.md"


def readme_examples():
    text = README.read_text()
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)
    return [pytest.param(block, id=f"example{n}") for n, block in enumerate(blocks, 1)]


@pytest.mark.parametrize("code", readme_examples())
def test_readme_examples_run(code, tmp_path):
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_readme_documents_every_patch_flag():
    from greenpatch.patcher import PATCHES

    text = README.read_text()
    for patch in PATCHES:
        assert f"`--no-{patch.flag}`" in text
        assert f"| `{patch.flag}` | {', '.join(f'`{t}`' for t in patch.targets)} |" in text
