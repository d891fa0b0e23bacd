"""Throw N concurrent clients at a line echo server and check every byte.

Usage: echo_clients.py N [--host H] [--port P] [--lines L] [--server-pid PID]

All N clients connect first, and each completes one round trip while all N
are still connected: a server that does not serve them concurrently cannot
get past that point.  Then each client echoes the rest of its L lines (random
text of varying length, a new line sent once the previous came back), closes
its sending side, and expects the server to close too without extra bytes.

The clients run in this one OS thread on a selector, so the clients are not
what limits N.  The report says how many clients were connected at once, how
many bytes were echoed and verified, and how many OS threads the server
process had (from /proc/<pid>/task; the pid comes from --server-pid or from
the process holding the listening socket).  Exits 1 on any mismatch, error
or timeout.
"""

import argparse
import errno
import os
import random
import selectors
import socket
import string
import sys
import time

ALPHABET = string.ascii_letters + string.digits + string.punctuation + " "


class Client:
    """One connection: the lines it will send and where it is in the conversation."""

    def __init__(self, index, lines):
        self.index = index
        self.lines = lines          # encoded lines, each ending in b"\n"
        self.sent = 0               # lines sent so far
        self.outbuf = b""           # the part of the current line not sent yet
        self.inbuf = bytearray()    # echo received for the current line
        self.sock = None
        self.state = "connecting"   # -> waiting (barrier) -> echoing -> closing -> done

    def start_line(self):
        self.outbuf = self.lines[self.sent]
        self.sent += 1


def make_lines(index, count, max_length, seed):
    rng = random.Random(seed * 1_000_003 + index)
    lines = []
    for number in range(count):
        text = f"client {index} line {number} " + "".join(
            rng.choice(ALPHABET) for _ in range(rng.randint(0, max_length)))
        lines.append((text + "\n").encode("ascii"))
    return lines


def raise_fd_limit(needed):
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < needed:
            sys.exit(f"echo_clients: need {needed} file descriptors but the hard limit is {hard}; "
                     "raise it (ulimit -Hn) or use fewer clients")


def find_server_pid(port):
    """The pid of the process holding a socket that listens on ``port``, or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as file:
                next(file)
                for row in file:
                    fields = row.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        except OSError:
            continue
    if not inodes:
        return None
    for pid in sorted((name for name in os.listdir("/proc") if name.isdigit()), key=int):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    return int(pid)
            except OSError:
                continue
    return None


def os_threads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


class Run:
    """The selector loop that drives every client through its conversation."""

    def __init__(self, args):
        self.args = args
        self.address = (args.host, args.port)
        self.selector = selectors.DefaultSelector()
        self.clients = [Client(i, make_lines(i, args.lines, args.max_length, args.seed))
                        for i in range(args.clients)]
        self.to_connect = list(reversed(self.clients))
        self.connecting = 0
        self.open = 0
        self.most_open = 0
        self.waiting = 0            # clients that finished their first round trip
        self.barrier_open = None    # connections open when every client had done a round trip
        self.closed_before_barrier = 0
        self.finished = 0
        self.verified = 0
        self.expected_total = sum(len(line) for c in self.clients for line in c.lines)
        self.errors = []
        self.thread_samples = []

    # -- the conversation ------------------------------------------------------

    def connect_more(self):
        while self.to_connect and self.connecting < self.args.connect_batch:
            client = self.to_connect.pop()
            sock = socket.socket(socket.AF_INET6 if ":" in self.args.host else socket.AF_INET)
            sock.setblocking(False)
            client.sock = sock
            self.connecting += 1
            self.selector.register(sock, selectors.EVENT_WRITE, client)
            code = sock.connect_ex(self.address)
            if code not in (0, errno.EINPROGRESS):
                self.fail(client, f"connect: {os.strerror(code)}")

    def connected(self, client):
        code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(client, f"connect: {os.strerror(code)}")
            return
        self.connecting -= 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        client.state = "echoing"
        client.start_line()
        self.send(client)

    def send(self, client):
        try:
            sent = client.sock.send(client.outbuf)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.fail(client, f"send: {exc}")
            return
        client.outbuf = client.outbuf[sent:]
        events = selectors.EVENT_WRITE if client.outbuf else selectors.EVENT_READ
        self.selector.modify(client.sock, events, client)

    def receive(self, client):
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(client, f"recv: {exc}")
            return
        if client.state == "closing":
            if data:
                self.fail(client, f"{len(data)} unexpected bytes after the last echo")
            else:
                self.close(client)
                self.finished += 1
            return
        if not data:
            self.fail(client, f"server closed the connection after {client.sent - 1} of "
                              f"{len(client.lines)} lines")
            return
        client.inbuf += data
        expected = client.lines[client.sent - 1]
        if len(client.inbuf) < len(expected):
            if not expected.startswith(client.inbuf):
                self.fail(client, f"line {client.sent - 1}: echo differs from what was sent")
            return
        if client.inbuf != expected:
            self.fail(client, f"line {client.sent - 1}: sent {bytes(expected)[:60]!r}..., "
                              f"got back {bytes(client.inbuf)[:60]!r}...")
            return
        self.verified += len(expected)
        client.inbuf.clear()
        if client.sent == 1:
            client.state = "waiting"
            self.selector.unregister(client.sock)
            self.waiting += 1
            if self.waiting == len(self.clients) - len(self.errors):
                self.everyone_made_a_round_trip()
            return
        self.next_line(client)

    def everyone_made_a_round_trip(self):
        self.barrier_open = self.open
        self.sample_server_threads()
        for client in self.clients:
            if client.state == "waiting":
                client.state = "echoing"
                self.selector.register(client.sock, selectors.EVENT_READ, client)
                self.next_line(client)

    def next_line(self, client):
        if client.sent < len(client.lines):
            client.start_line()
            self.send(client)
        else:
            client.state = "closing"
            client.sock.shutdown(socket.SHUT_WR)
            self.selector.modify(client.sock, selectors.EVENT_READ, client)

    def fail(self, client, message):
        self.errors.append(f"client {client.index}: {message}")
        self.close(client)

    def close(self, client):
        if client.sock is None:
            return
        if client.state == "connecting":
            self.connecting -= 1
        else:
            self.open -= 1
            if self.barrier_open is None:
                self.closed_before_barrier += 1
        try:
            self.selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        client.sock = None
        client.state = "done"

    # -- the loop ---------------------------------------------------------------

    def sample_server_threads(self):
        if self.args.server_pid:
            count = os_threads(self.args.server_pid)
            if count is not None:
                self.thread_samples.append(count)

    def run(self):
        deadline = time.monotonic() + self.args.timeout
        total = len(self.clients)
        self.connect_more()
        while self.finished + len(self.errors) < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stuck = total - self.finished - len(self.errors)
                self.errors.append(f"timed out after {self.args.timeout} s with {stuck} clients "
                                   f"unfinished ({self.waiting} had made a round trip)")
                break
            for key, events in self.selector.select(min(remaining, 1.0)):
                client = key.data
                if client.sock is None:
                    continue
                if client.state == "connecting":
                    self.connected(client)
                    self.connect_more()
                elif events & selectors.EVENT_WRITE:
                    self.send(client)
                else:
                    self.receive(client)
            if self.errors and self.barrier_open is None and self.waiting == total - len(self.errors):
                self.everyone_made_a_round_trip()  # the last failure released the others
        self.sample_server_threads()
        for client in self.clients:
            self.close(client)
        self.selector.close()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Open N concurrent clients to a line echo server and verify every echoed byte.")
    parser.add_argument("clients", type=int, metavar="N", help="number of concurrent clients")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "6000")),
                        help="server port (default 6000, or the PORT environment variable)")
    parser.add_argument("--lines", type=int, default=10, metavar="L",
                        help="lines each client echoes (default 10)")
    parser.add_argument("--max-length", type=int, default=200,
                        help="the longest random text in a line (default 200)")
    parser.add_argument("--server-pid", type=int, metavar="PID",
                        help="the server's pid, to count its OS threads (default: the process "
                             "listening on --port, found in /proc)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the random lines (default 1)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="give up after this many seconds (default 60)")
    parser.add_argument("--connect-batch", type=int, default=128,
                        help="connects in flight at once (default 128)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.lines < 1:
        parser.error("N and --lines must be at least 1")

    raise_fd_limit(args.clients + 64)
    if not args.server_pid:
        args.server_pid = find_server_pid(args.port)

    started = time.monotonic()
    run = Run(args)
    run.run()
    elapsed = time.monotonic() - started

    total = len(run.clients)
    at_once = run.barrier_open if run.barrier_open is not None else 0
    print(f"clients: {total} x {args.lines} lines against {args.host}:{args.port}")
    print(f"connected at once: {at_once} of {total} (each had made a round trip; "
          f"disconnects before that: {run.closed_before_barrier})")
    print(f"bytes echoed and verified: {run.verified} of {run.expected_total}")
    if run.thread_samples:
        print(f"server pid: {args.server_pid}")
        print(f"server OS threads: {max(run.thread_samples)}")
    else:
        print("server pid: unknown" if not args.server_pid else f"server pid: {args.server_pid}")
        print("server OS threads: unknown")
    print(f"time: {elapsed:.2f} s")
    for error in run.errors[:20]:
        print(f"error: {error}", file=sys.stderr)
    if len(run.errors) > 20:
        print(f"error: ... and {len(run.errors) - 20} more", file=sys.stderr)
    ok = not run.errors and at_once == total and run.verified == run.expected_total
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
