"""Soak: the seed's echo server under ``python -m greenpatch``, a mixed load, nothing lost or leaked.

    python -m tests.soak --minutes N [--connections C] [--max-connections M] [--seed S]

Starts ``python -m greenpatch samples/echo_server.py 0`` (ECHO_QUIET=1, a free
port) and drives it from C client OS threads of this process (plain blocking
sockets, no greenpatch here) with a mix of

* good clients: lines of random length, each echo read and checked;
* slow readers: a burst of lines, the echo read back in small pieces with pauses;
* half-closes: lines, then ``shutdown(SHUT_WR)``, then the rest read to EOF;
* vanishing clients: part of a line, then gone (a plain close or an RST);
* churn: connect and close at once;

for N minutes (or M connections, whichever comes first).  A warm-up phase (a
fifth of the time, at most 15 s) comes first; then the load stops, the server
is left to settle, and the fd count and RSS are taken; the main phase runs;
then the same is taken again.  Checks at the end (exit status 1 if any fails):

* every byte a good, slow or half-closing client sent came back, unchanged;
* the server's open fds (/proc/PID/fd) are back to their count at start
  (at rest, after echoing one line);
* RSS grew by less than 5 % from after the warm-up to the end;
* the server still has one OS thread and no green thread left behind (its
  fd count at rest: one per green client thread);
* the server still answers, and stops on Ctrl-C.

Clients send one line at a time and wait for its echo: the sample server
reads and writes through one text-mode ``makefile("rw")``, and
``TextIOWrapper.write`` throws away what ``readline`` had read ahead, so it
drops pipelined lines (with real threads too; reported on issue 5).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "samples" / "echo_server.py"
KINDS = ("good", "slow", "halfclose", "vanish", "churn")
WEIGHTS = (40, 10, 15, 15, 20)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections = {kind: 0 for kind in KINDS}
        self.sent = 0          # by clients that expect everything back
        self.received = 0      # echoed back to them, verified
        self.vanished_bytes = 0
        self.errors: list[str] = []

    def add(self, kind: str, sent: int = 0, received: int = 0, vanished: int = 0) -> None:
        with self.lock:
            self.connections[kind] += 1
            self.sent += sent
            self.received += received
            self.vanished_bytes += vanished

    def error(self, message: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(message)

    @property
    def total(self) -> int:
        return sum(self.connections.values())


def make_line(rng: random.Random, longest: int = 2000) -> bytes:
    return bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, longest))) + b"\n"


def read_exactly(sock: socket.socket, count: int, piece: int = 65536, pause: float = 0.0) -> bytes:
    chunks, got = [], 0
    while got < count:
        chunk = sock.recv(min(piece, count - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
        if pause:
            time.sleep(pause)
    return b"".join(chunks)


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def client(kind: str, address: tuple, rng: random.Random, stats: Stats) -> None:
    sock = socket.create_connection(address, timeout=30)
    try:
        if kind == "churn":
            stats.add(kind)
        elif kind == "good":
            sent = received = 0
            for _ in range(rng.randint(1, 8)):
                line = make_line(rng)
                sock.sendall(line)
                echo = read_exactly(sock, len(line))
                if echo != line:
                    raise AssertionError(f"good client: echo differs ({len(echo)} of {len(line)} bytes)")
                sent += len(line)
                received += len(echo)
            stats.add(kind, sent, received)
        elif kind == "slow":
            # One long line (at most 32 KiB: it fits in the loopback buffers), its echo
            # read back in small pieces with pauses.  One line at a time: the sample
            # server loses pipelined lines (see the note at the top).
            line = make_line(rng, 32767)
            sock.sendall(line)
            echo = read_exactly(sock, len(line), piece=rng.choice((64, 512, 1500)), pause=0.001)
            if echo != line:
                raise AssertionError(f"slow reader: echo differs ({len(echo)} of {len(line)} bytes)")
            stats.add(kind, len(line), len(echo))
        elif kind == "halfclose":
            sent = received = 0
            for _ in range(rng.randint(0, 4)):
                line = make_line(rng)
                sock.sendall(line)
                echo = read_exactly(sock, len(line))
                if echo != line:
                    raise AssertionError("half-close: echo differs before the shutdown")
                sent += len(line)
                received += len(echo)
            last = make_line(rng)
            sock.sendall(last)
            sock.shutdown(socket.SHUT_WR)
            echo = read_to_eof(sock)
            if echo != last:
                raise AssertionError(f"half-close: echo differs ({len(echo)} of {len(last)} bytes)")
            stats.add(kind, sent + len(last), received + len(echo))
        elif kind == "vanish":
            data = make_line(rng)[:-1] + b"partial"
            cut = data[:rng.randint(1, len(data))]
            sock.sendall(cut)
            if rng.random() < 0.5:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stats.add(kind, vanished=len(cut))
    finally:
        sock.close()


def worker(address: tuple, seed: int, deadline: float, budget: list, stats: Stats) -> None:
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        with stats.lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        kind = rng.choices(KINDS, WEIGHTS)[0]
        try:
            client(kind, address, rng, stats)
        except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
            stats.error(f"{kind}: {exc!r}")


def run_phase(address: tuple, seconds: float, connections: int, budget: list, stats: Stats, seed: int) -> None:
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=worker, args=(address, seed * 10_000 + i, deadline, budget, stats))
               for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def os_threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid: int, target: int, timeout: float = 15.0) -> int:
    """Wait until the server's fd count drops to ``target`` (or timeout); return the count."""
    deadline = time.monotonic() + timeout
    count = fd_count(pid)
    while count > target and time.monotonic() < deadline:
        time.sleep(0.1)
        count = fd_count(pid)
    return count


def fds_at_rest(pid: int, address: tuple) -> int:
    """The server's fd count at rest after echoing one line.

    Not the count at "listening on": the hub (an epoll fd and a wakeup pipe)
    is made on the server's first wait, which may come a little after it.
    """
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"first\n")
        read_exactly(sock, 6)
    count = fd_count(pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.1)
        latest = fd_count(pid)
        if latest == count:
            break
        count = latest
    return count


def start_server() -> tuple[subprocess.Popen, tuple]:
    env = dict(os.environ, ECHO_QUIET="1")
    proc = subprocess.Popen([sys.executable, "-m", "greenpatch", str(SERVER), "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r} {proc.stderr.read()}")
    host, port = line.split()[-1].rsplit(":", 1)
    return proc, (host, int(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to run (default 1)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--max-connections", type=int, default=1_000_000,
                        help="stop after this many connections (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    total_seconds = args.minutes * 60
    warmup = min(15.0, total_seconds / 5)
    stats = Stats()
    budget = [args.max_connections]
    started = time.monotonic()
    proc, address = start_server()
    pid = proc.pid
    peak_threads = [os_threads(pid)]
    stop_monitor = threading.Event()

    def monitor():
        while not stop_monitor.wait(0.5):
            try:
                peak_threads[0] = max(peak_threads[0], os_threads(pid))
            except FileNotFoundError:
                return

    threading.Thread(target=monitor, daemon=True).start()
    failures = []
    try:
        fds_start = fds_at_rest(pid, address)
        rss_first = rss_kib(pid)
        run_phase(address, warmup, args.connections, budget, stats, args.seed)
        fds_after_warmup = settle(pid, fds_start)
        rss_start = rss_kib(pid)
        run_phase(address, total_seconds - warmup, args.connections, budget, stats, args.seed + 1)
        fds_end = settle(pid, fds_start)
        time.sleep(0.5)
        rss_end = rss_kib(pid)
        threads_end = os_threads(pid)
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"still there?\n")
            alive = read_exactly(sock, 13) == b"still there?\n"
        settle(pid, fds_start, 5)
    finally:
        stop_monitor.set()
        duration = time.monotonic() - started
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            failures.append("the server did not stop on SIGINT")

    growth = (rss_end - rss_start) / rss_start * 100
    print(f"command:       {sys.executable} -m tests.soak " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"server:        {sys.executable} -m greenpatch samples/echo_server.py 0  (pid {pid}, {address[0]}:{address[1]})")
    print(f"duration:      {duration:.1f} s (warm-up {warmup:.1f} s), {args.connections} concurrent clients")
    print(f"connections:   {stats.total:,}  " + ", ".join(f"{k} {v:,}" for k, v in stats.connections.items()))
    print(f"bytes:         sent {stats.sent:,}, echoed back {stats.received:,}, "
          f"dropped by vanishing clients {stats.vanished_bytes:,}")
    print(f"fds:           start {fds_start}, after warm-up {fds_after_warmup}, end {fds_end}")
    print(f"RSS (KiB):     at start {rss_first:,}, after warm-up {rss_start:,}, end {rss_end:,} ({growth:+.2f} %)")
    print(f"OS threads:    end {threads_end}, peak {peak_threads[0]}")
    print(f"client errors: {len(stats.errors)}")
    for message in stats.errors:
        print(f"  {message}")

    if stats.errors:
        failures.append(f"{len(stats.errors)} client errors")
    if stats.sent != stats.received:
        failures.append(f"bytes lost: sent {stats.sent}, echoed {stats.received}")
    if fds_end != fds_start:
        failures.append(f"fds not back to start: {fds_start} -> {fds_end}")
    if growth >= 5:
        failures.append(f"RSS grew {growth:.2f} %")
    if threads_end != 1 or peak_threads[0] != 1:
        failures.append(f"server OS threads: end {threads_end}, peak {peak_threads[0]}")
    if not alive:
        failures.append("the server no longer echoes")
    if "echo server stopped" not in out:
        failures.append(f"the server did not stop cleanly: {out!r} {err[-2000:]!r}")
    if err.strip():
        print("server stderr:\n" + err[-3000:])
    print("result:        " + ("OK" if not failures else "FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
