"""The green selectors module: the stdlib classes, waiting through the green select module."""

import os
import selectors as stdselectors
import subprocess
import sys
import textwrap
import time

import pytest

import greenpatch
from greenpatch.green import select as gselect
from greenpatch.green import selectors as gselectors
from greenpatch.green import socket as gsocket
from greenpatch.hub import get_hub

pytestmark = [pytest.mark.timeout(20), pytest.mark.usefixtures("no_leftover_waiters")]

TIMEOUT = 0.3
SLACK = 3.0
NOT_A_FILE = object()
NAMES = ["SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector"]


@pytest.fixture(params=NAMES)
def name(request):
    return request.param


def pair(track):
    a, b = gsocket.socketpair()
    track += [a, b]
    return a, b


def raised_by(func, *args):
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - returned for comparison
        return exc
    return None


def test_module_covers_every_public_name_of_the_stdlib_module():
    public = {name for name in dir(stdselectors) if not name.startswith("_")}
    assert public <= set(dir(gselectors))
    for attr in public - set(NAMES):
        assert getattr(gselectors, attr) is getattr(stdselectors, attr), attr
    assert gselectors.__implements__ == NAMES


def test_each_class_is_the_stdlib_class_with_green_waiting(name):
    green, real = getattr(gselectors, name), getattr(stdselectors, name)
    assert issubclass(green, real) and green is not real
    assert green.__doc__ == real.__doc__
    assert gselectors.DefaultSelector is gselectors.EpollSelector
    assert gselectors.SelectSelector._select is gselect.select
    assert gselectors.PollSelector._selector_cls is gselect.poll
    assert gselectors.EpollSelector._selector_cls is gselect.epoll


def test_select_waits_greenly_for_readiness(name, track):
    a, b = pair(track)
    with getattr(gselectors, name)() as selector:
        key = selector.register(b, gselectors.EVENT_READ, data="reader")
        greenpatch.spawn_after(0.05, a.send, b"x")
        start = time.monotonic()
        assert selector.select() == [(key, gselectors.EVENT_READ)]
        assert time.monotonic() - start >= 0.04
        assert key.data == "reader" and key.fileobj is b


def test_select_times_out_and_zero_timeout_does_not_wait(name, track):
    a, b = pair(track)
    with getattr(gselectors, name)() as selector:
        selector.register(b, gselectors.EVENT_READ)
        start = time.monotonic()
        assert selector.select(TIMEOUT) == []
        assert TIMEOUT * 0.95 <= time.monotonic() - start < TIMEOUT + SLACK
        start = time.monotonic()
        assert selector.select(0) == [] and selector.select(-1) == []
        assert time.monotonic() - start < 0.2


def test_select_reports_both_events_and_follows_modify(name, track):
    a, b = pair(track)
    with getattr(gselectors, name)() as selector:
        key = selector.register(b, gselectors.EVENT_READ | gselectors.EVENT_WRITE)
        assert selector.select(1) == [(key, gselectors.EVENT_WRITE)]
        a.send(b"x")
        assert selector.select(1) == [(key, gselectors.EVENT_READ | gselectors.EVENT_WRITE)]
        key = selector.modify(b, gselectors.EVENT_READ, data=2)
        assert selector.select(1) == [(key, gselectors.EVENT_READ)] and key.data == 2
        assert selector.get_key(b) is key and b in selector.get_map()
        assert selector.unregister(b) is key
        assert selector.select(0) == []


def test_several_green_threads_each_with_a_selector(name, track):
    pairs = [pair(track) for _ in range(5)]

    def wait_for(sock):
        with getattr(gselectors, name)() as selector:
            selector.register(sock, gselectors.EVENT_READ)
            return [key.fileobj for key, _ in selector.select(5)]

    waiters = [greenpatch.spawn(wait_for, b) for _, b in pairs]
    greenpatch.sleep(0.02)
    for a, _ in reversed(pairs):
        a.send(b"x")
    assert [w.wait() for w in waiters] == [[b] for _, b in pairs]


@pytest.mark.parametrize("call", [
    lambda s, f: (s.register(f, stdselectors.EVENT_READ), s.register(f, stdselectors.EVENT_READ)),
    lambda s, f: s.unregister(f),
    lambda s, f: s.modify(f, stdselectors.EVENT_READ),
    lambda s, f: s.get_key(f),
    lambda s, f: s.register(f, 0),
    lambda s, f: s.register(f, 8),
    lambda s, f: s.register(-1, stdselectors.EVENT_READ),
    lambda s, f: s.register("x", stdselectors.EVENT_READ),
    lambda s, f: s.register(NOT_A_FILE, stdselectors.EVENT_READ),
    lambda s, f: (s.register(f, stdselectors.EVENT_READ), s.modify(f, 0)),
    lambda s, f: s.select("x"),
    lambda s, f: (s.close(), s.get_map()["x"]),
    lambda s, f: (s.close(), s.register(f, stdselectors.EVENT_READ)),
], ids=["register-twice", "unregister-unknown", "modify-unknown", "get_key-unknown", "no-events",
        "bad-events", "negative-fd", "str-fileobj", "object-fileobj", "modify-no-events", "bad-timeout",
        "closed-map", "closed-register"])
def test_errors_and_edge_cases_match_the_stdlib(name, call, track):
    a, b = pair(track)
    green, real = getattr(gselectors, name)(), getattr(stdselectors, name)()
    track += [green, real]
    error, expected = raised_by(call, green, b), raised_by(call, real, b)
    assert (type(error), str(error)) == (type(expected), str(expected))


def test_a_registered_socket_closed_while_selecting_gives_the_stdlib_outcome(name, track):
    def outcome(module, green):
        a, b = pair(track)
        c, d = pair(track)
        names = {id(b): "closed", id(d): "ready"}
        with getattr(module, name)() as selector:
            selector.register(b, gselectors.EVENT_READ)
            selector.register(d, gselectors.EVENT_READ)
            if green:  # close and make the other ready while select() waits
                greenpatch.spawn_after(0.05, lambda: (b.close(), c.send(b"x")))
            else:
                b.close()
                c.send(b"x")
            try:
                return sorted((names[id(key.fileobj)], events) for key, events in selector.select(5))
            except OSError as exc:
                return type(exc), exc.errno

    expected = outcome(stdselectors, green=False)
    assert outcome(gselectors, green=True) == expected


def run_patched(script):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr


def test_patched_selectors_select_and_asyncio_are_green():
    run_patched("""
        import greenpatch
        greenpatch.monkey_patch(socket=True, select=True)
        import asyncio, select, selectors, socket, subprocess, sys, time
        from greenpatch.green import select as gselect, selectors as gselectors

        assert selectors.DefaultSelector is gselectors.EpollSelector
        assert selectors.PollSelector is gselectors.PollSelector
        assert select.select is gselect.select and select.epoll is gselect.epoll
        assert select.poll is gselect.poll

        ticks = []
        def ticker():
            for _ in range(30):
                ticks.append(time.monotonic())
                greenpatch.sleep(0.01)
        greenpatch.spawn(ticker)

        # a stdlib selector waits only its green thread
        a, b = socket.socketpair()
        with selectors.DefaultSelector() as selector:
            selector.register(b, selectors.EVENT_READ)
            greenpatch.spawn_after(0.1, a.send, b"x")
            assert len(selector.select(5)) == 1
        assert len(ticks) >= 3, ticks

        # asyncio runs on the green epoll (gevent and eventlet delete select.epoll)
        async def main():
            reader, writer = await asyncio.open_connection(sock=a)
            b.send(b"line\\n")
            line = await reader.readline()
            writer.close()
            return line
        assert asyncio.run(main()) == b"line\\n"

        # subprocess.communicate() waits through the green PollSelector
        before = len(ticks)
        out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.2); print('child')"],
                             capture_output=True, text=True, timeout=10).stdout
        assert out == "child\\n", out
        assert len(ticks) > before, "the ticker ran while communicate() waited"
        print("OK")
    """)
