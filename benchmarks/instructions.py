"""Instructions per operation under valgrind: a deterministic A/B measure for a shared machine.

    python benchmarks/instructions.py [--systems greenpatch,gevent] [--benches echo64,socketpair,queue,event,sleep0,timers]

Wall-clock microbenchmarks swing by tens of percent when other work shares
the cores; user-space instruction counts do not.  Each (system, bench) cell
runs this file as a child under ``valgrind --tool=callgrind`` at two
operation counts and reports (Ir(6000) - Ir(2000)) / 4000, so start-up and
imports cancel out.  Native APIs only, both ends in one process.  Kernel
work (syscalls) is not counted: compare with run.py's CPU per round trip.
Needs ``valgrind`` (Debian package).

``--systems floor`` (echo64 and socketpair only) is the lower bound of any
greenlet hub on this machine: the same socket calls on raw non-blocking
sockets, edge-triggered epoll registered once, the short-read hint (a read
that came back short waits for the next edge instead of failing), and bare
greenlet switches between a 10-line hub and the two ends; no socket class,
timeouts or bookkeeping.  What a system counts above it is its own Python (or Cython).
"""

import argparse
import re
import subprocess
import sys

BENCHES = ("echo64", "socketpair", "queue", "event", "sleep0", "timers")
FLOOR_BENCHES = ("echo64", "socketpair")


def floor(bench: str, n: int) -> None:
    """echo64 or socketpair with nothing but the syscalls, one epoll and greenlet switches."""
    import select
    import socket

    from greenlet import getcurrent, greenlet

    x, y = socket.socketpair()
    x.setblocking(False)
    y.setblocking(False)
    size, message = (65536, b"x" * 64) if bench == "echo64" else (1, b"x")
    epoll = select.epoll()
    waiting = {}
    drained = set()  # fds a short read emptied: wait for the next edge before reading
    for sock in (x, y):
        epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)

    def recv(sock):
        fd = sock.fileno()
        while True:
            if fd not in drained:
                try:
                    data = sock.recv(size)
                except BlockingIOError:
                    pass
                else:
                    if len(data) < size:
                        drained.add(fd)
                    return data
            waiting[fd] = getcurrent()
            hub.switch()

    def responder():
        for _ in range(n):
            y.send(recv(y))

    def loop():
        greenlet(responder).switch()  # runs until it waits for its first message
        while True:
            for fd, _ in epoll.poll():
                drained.discard(fd)
                waiter = waiting.pop(fd, None)
                if waiter is not None:
                    waiter.switch()

    hub = greenlet(loop)
    for _ in range(n):
        x.send(message)
        recv(x)


def child(system: str, bench: str, n: int) -> None:
    """Run ``bench`` ``n`` times with ``system``'s native API (the part valgrind measures)."""
    def noop():
        pass

    if system == "floor":
        floor(bench, n)
        return

    if system == "greenpatch":
        import greenpatch
        from greenpatch.event import Event
        from greenpatch.green.socket import socketpair
        from greenpatch.hub import get_hub
        from greenpatch.queue import Queue
        spawn, sleep = greenpatch.spawn, greenpatch.sleep

        def timer():
            get_hub().call_later(100.0, noop).cancel()
    else:
        import gevent
        import gevent.event
        import gevent.queue
        import gevent.socket
        Event, Queue, socketpair = gevent.event.Event, gevent.queue.Queue, gevent.socket.socketpair
        spawn, sleep = gevent.spawn, gevent.sleep
        loop = gevent.get_hub().loop

        def timer():
            t = loop.timer(100.0)
            t.start(noop)
            t.stop()

    if bench == "timers":
        for _ in range(n):
            timer()
        return
    if bench in ("echo64", "socketpair"):
        x, y = socketpair()
        size, message = (65536, b"x" * 64) if bench == "echo64" else (1, b"x")

        def responder():
            for _ in range(n):
                y.sendall(y.recv(size))

        def driver():
            x.sendall(message)
            x.recv(size)
    elif bench == "queue":
        q1, q2 = Queue(), Queue()

        def responder():
            for _ in range(n):
                q2.put(q1.get())

        def driver():
            q1.put(1)
            q2.get()
    elif bench == "event":
        a, b = Event(), Event()

        def responder():
            for _ in range(n):
                a.wait()
                a.clear()
                b.set()

        def driver():
            a.set()
            b.wait()
            b.clear()
    else:  # sleep0
        def responder():
            for _ in range(n):
                sleep(0)

        def driver():
            sleep(0)
    other = spawn(responder)
    for _ in range(n):
        driver()
    other.join()


def instructions(system: str, bench: str, n: int) -> int:
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, __file__, "--child", system, bench, str(n)],
                         capture_output=True, text=True, check=True).stderr
    return int(re.search(r"refs:\s+([\d,]+)", out).group(1).replace(",", ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="greenpatch,gevent")
    parser.add_argument("--benches", default=",".join(BENCHES))
    parser.add_argument("--child", nargs=3, metavar=("SYSTEM", "BENCH", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    systems = args.systems.split(",")
    print("| bench | " + " | ".join(f"{s} instr/op" for s in systems) + " |")
    print("|---|" + "---:|" * len(systems))
    for bench in args.benches.split(","):
        cells = [f"{(instructions(s, bench, 6000) - instructions(s, bench, 2000)) // 4000:,}"
                 if s != "floor" or bench in FLOOR_BENCHES else "n/a" for s in systems]
        print(f"| {bench} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
