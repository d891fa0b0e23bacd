"""The green select module: select(), poll() and epoll() with the stdlib's results and errors.

Each wait is shown to be green by a partner green thread that makes the fd
ready while the call waits.  Errors are compared with the real calls.
"""

import errno
import os
import select as stdselect
import socket as stdsocket
import time

import pytest

import greenpatch
from greenpatch.green import select as gselect
from greenpatch.green import socket as gsocket
from greenpatch.hub import BlockingInHubError, get_hub

pytestmark = [pytest.mark.timeout(20), pytest.mark.usefixtures("no_leftover_waiters")]

TIMEOUT = 0.3
SLACK = 3.0


def pair(track):
    a, b = gsocket.socketpair()
    track += [a, b]
    return a, b


def pipe(track):
    r, w = os.pipe()
    track += [r, w]
    return r, w


def raised_by(func, *args):
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - returned for comparison
        return exc
    return None


def assert_same_error(green_call, real_call, *args):
    error, expected = raised_by(green_call, *args), raised_by(real_call, *args)
    assert expected is not None, "the stdlib call did not fail"
    assert type(error) is type(expected)
    assert str(error) == str(expected)


def drain(sock):
    """Read until nothing more arrives for a moment."""
    sock.settimeout(0.2)
    try:
        while sock.recv(1 << 20):
            pass
    except TimeoutError:
        pass


def timed(func, *args):
    start = time.monotonic()
    result = func(*args)
    return result, time.monotonic() - start


def finish(thread, timeout=5.0):
    assert thread.join(timeout), "the green thread did not finish"
    return thread.wait()


def in_hub(func, *args):
    """Run func(*args) as a hub callback; return ("ok", result) or ("error", exception)."""
    outcome = []

    def callback():
        try:
            outcome.append(("ok", func(*args)))
        except BaseException as exc:  # noqa: BLE001
            outcome.append(("error", exc))

    get_hub().schedule(callback)
    for _ in range(200):
        if outcome:
            return outcome[0]
        greenpatch.sleep(0.01)
    raise AssertionError("the hub callback never ran")


# -- the module ---------------------------------------------------------------------------------

def test_module_covers_every_public_name_of_the_stdlib_module():
    public = {name for name in dir(stdselect) if not name.startswith("_")}
    assert public <= set(dir(gselect))
    for name in public - {"select", "poll", "epoll"}:
        assert getattr(gselect, name) is getattr(stdselect, name), name
    assert gselect.__implements__ == ["select", "poll", "epoll"]
    assert gselect.poll is not stdselect.poll and gselect.epoll is not stdselect.epoll


# -- select() ---------------------------------------------------------------------------------------

def test_select_returns_ready_objects_at_once(track):
    a, b = pair(track)
    a.send(b"x")
    assert gselect.select([b], [a], [], None) == ([b], [a], [])
    assert gselect.select([b.fileno()], [], [], 0) == ([b.fileno()], [], [])


@pytest.mark.parametrize("timeout", [None, 5.0, 5])
def test_select_waits_greenly_until_readable(timeout, track):
    a, b = pair(track)
    greenpatch.spawn_after(0.05, a.send, b"x")
    (ready, elapsed) = timed(gselect.select, [b], [], [], timeout)
    assert ready == ([b], [], [])
    assert elapsed >= 0.04


def test_select_times_out_with_empty_lists(track):
    a, b = pair(track)
    result, elapsed = timed(gselect.select, [b], [], [b], TIMEOUT)
    assert result == ([], [], [])
    assert TIMEOUT * 0.95 <= elapsed < TIMEOUT + SLACK


def test_select_with_zero_timeout_does_not_wait(track):
    a, b = pair(track)
    result, elapsed = timed(gselect.select, [b], [], [], 0)
    assert result == ([], [], []) and elapsed < 0.2


def test_select_with_no_fds_sleeps_greenly():
    ticks = []
    greenpatch.spawn_after(0.02, ticks.append, 1)
    result, elapsed = timed(gselect.select, [], [], [], 0.1)
    assert result == ([], [], []) and elapsed >= 0.095 and ticks == [1]


def test_select_accepts_any_iterable_and_objects_with_fileno(track):
    a, b = pair(track)
    r, w = pipe(track)
    os.write(w, b"x")
    a.send(b"y")
    assert gselect.select({b}, (), iter([]), 1) == ([b], [], [])
    assert gselect.select((x for x in [r, b]), [], [], 1) == ([r, b], [], [])


def test_select_waits_for_writability(track):
    a, b = pair(track)
    a.setblocking(False)
    try:
        for _ in range(10_000):
            a.send(b"f" * 65536)
    except BlockingIOError:
        pass
    assert gselect.select([], [a], [], 0) == ([], [], [])
    drainer = greenpatch.spawn_after(0.05, drain, b)
    assert gselect.select([], [a], [], 5) == ([], [a], [])
    a.close()
    finish(drainer)


def test_select_reports_exceptional_conditions_that_are_ready(track):
    with gsocket.create_server(("127.0.0.1", 0)) as listener:
        client = gsocket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    track += [client, server]
    client.send(b"!", gsocket.MSG_OOB)
    greenpatch.sleep(0.05)
    assert gselect.select([], [], [server], 1) == ([], [], [server])


def test_select_wakes_for_out_of_band_data_arriving_later(track):
    with gsocket.create_server(("127.0.0.1", 0)) as listener:
        client = gsocket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    track += [client, server]
    greenpatch.spawn_after(0.05, client.send, b"!", gsocket.MSG_OOB)
    assert gselect.select([], [], [server], 1) == ([], [], [server])


def test_two_green_threads_select_on_different_fds(track):
    a, b = pair(track)
    c, d = pair(track)
    first = greenpatch.spawn(gselect.select, [b], [], [], 5)
    second = greenpatch.spawn(gselect.select, [d], [], [], 5)
    greenpatch.sleep(0.02)
    c.send(b"2")
    assert finish(second) == ([d], [], [])
    assert not first.ready()
    a.send(b"1")
    assert finish(first) == ([b], [], [])


BAD_SELECT_TIMEOUTS = ["x", [], -1, -0.5, -1e-10, float("nan"), float("inf"), 1e300, 1e10, 2 ** 64,
                       -(2 ** 64)]


@pytest.mark.parametrize("timeout", BAD_SELECT_TIMEOUTS, ids=repr)
def test_select_rejects_bad_timeouts_like_the_stdlib(timeout):
    assert_same_error(gselect.select, stdselect.select, [], [], [], timeout)


class Bad:
    def fileno(self):
        return "x"


@pytest.mark.parametrize("lists", [
    (1, [], []), ([], None, []), ([], [], "ab"), (["x"], [], []), ([-1], [], []), ([Bad()], [], []),
    ([object()], [], []), ([2 ** 40], [], []),
], ids=repr)
def test_select_rejects_bad_lists_like_the_stdlib(lists):
    assert_same_error(gselect.select, stdselect.select, *lists, 0)
    assert_same_error(gselect.select, stdselect.select, *lists, None)


def test_select_on_a_closed_fd_raises_ebadf_like_the_stdlib(track):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    assert_same_error(gselect.select, stdselect.select, [r], [], [], 0)


def test_closing_a_socket_while_select_waits_raises_the_stdlib_error(track):
    a, b = pair(track)
    by_object = greenpatch.spawn(raised_by, gselect.select, [b], [], [], None)
    by_number = greenpatch.spawn(raised_by, gselect.select, [b.fileno()], [], [], None)
    greenpatch.sleep(0.02)
    fd = b.fileno()
    b.close()
    error = finish(by_object)  # what select() says about a closed socket object
    expected = raised_by(stdselect.select, [b], [], [], 0)
    assert type(error) is type(expected) is ValueError and str(error) == str(expected)
    error = finish(by_number)  # and about a closed fd
    assert type(error) is OSError and error.errno == errno.EBADF
    assert fd not in get_hub()._watches


def test_a_pipe_closed_and_reused_behind_the_hubs_back_is_watched_again(track):
    r, w = os.pipe()
    assert gselect.select([r], [], [], 0.02) == ([], [], [])  # the hub now watches r
    os.close(r)
    os.close(w)  # the epoll registration vanishes; the hub does not know
    r2, w2 = pipe(track)
    assert r2 == r  # same number, new pipe
    greenpatch.spawn_after(0.05, os.write, w2, b"x")
    assert gselect.select([r2], [], [], 5) == ([r2], [], [])


def test_select_in_the_hub_polls_but_never_waits(track):
    a, b = pair(track)
    assert in_hub(gselect.select, [b], [], [], 0) == ("ok", ([], [], []))
    outcome, error = in_hub(gselect.select, [b], [], [], 0.05)
    assert outcome == "error" and type(error) is BlockingInHubError
    a.send(b"x")
    assert in_hub(gselect.select, [b], [], [], None) == ("ok", ([b], [], []))


# -- poll() ---------------------------------------------------------------------------------------------

def test_poll_register_modify_unregister_and_results(track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    p.register(a.fileno())
    assert p.poll(0) == [(a.fileno(), gselect.POLLOUT)]
    p.modify(a, gselect.POLLIN)
    assert p.poll(0) == []
    a.send(b"x")
    assert p.poll(0) == [(b.fileno(), gselect.POLLIN)]
    p.unregister(b)
    assert p.poll(0) == []


@pytest.mark.parametrize("timeout", [None, -1, -0.5, 5000, 5000.5])
def test_poll_waits_greenly(timeout, track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    greenpatch.spawn_after(0.05, a.send, b"x")
    result, elapsed = timed(p.poll, timeout)
    assert result == [(b.fileno(), gselect.POLLIN)] and elapsed >= 0.04


def test_poll_timeout_is_in_milliseconds(track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    result, elapsed = timed(p.poll, TIMEOUT * 1000)
    assert result == [] and TIMEOUT * 0.95 <= elapsed < TIMEOUT + SLACK
    result, elapsed = timed(p.poll, 0)
    assert result == [] and elapsed < 0.2


def test_poll_reports_a_hang_up(track):
    r, w = os.pipe()
    track.append(r)
    p = gselect.poll()
    p.register(r, gselect.POLLIN)
    greenpatch.spawn_after(0.05, os.close, w)
    assert p.poll(5000) == [(r, gselect.POLLHUP)]


def test_poll_waits_for_writability(track):
    a, b = pair(track)
    a.setblocking(False)
    try:
        for _ in range(10_000):
            a.send(b"f" * 65536)
    except BlockingIOError:
        pass
    p = gselect.poll()
    p.register(a, gselect.POLLOUT)
    drainer = greenpatch.spawn_after(0.05, drain, b)
    assert p.poll(5000) == [(a.fileno(), gselect.POLLOUT)]
    a.close()
    finish(drainer)


def test_poll_reports_pollnval_when_an_fd_is_closed_while_it_waits(track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    fd = b.fileno()
    greenpatch.spawn_after(0.05, b.close)
    assert p.poll(5000) == [(fd, gselect.POLLNVAL)]


def test_concurrent_poll_calls_raise_like_the_stdlib(track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    waiter = greenpatch.spawn(p.poll, 5000)
    greenpatch.sleep(0.02)
    with pytest.raises(RuntimeError, match=r"^concurrent poll\(\) invocation$"):
        p.poll(0)
    a.send(b"x")
    assert finish(waiter) == [(b.fileno(), gselect.POLLIN)]
    assert p.poll(0) == [(b.fileno(), gselect.POLLIN)]  # usable again


def test_poll_sees_registrations_made_while_it_waits(track):
    a, b = pair(track)
    c, d = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    waiter = greenpatch.spawn(p.poll, 5000)
    greenpatch.sleep(0.02)
    p.register(d, gselect.POLLIN)
    c.send(b"x")
    greenpatch.sleep(0.02)
    a.send(b"y")  # wakes the wait; the re-check reports both
    assert sorted(finish(waiter)) == sorted([(b.fileno(), gselect.POLLIN), (d.fileno(), gselect.POLLIN)])


BAD_POLL_TIMEOUTS = ["x", [], float("nan"), float("inf"), 1e300, 2 ** 64, 2 ** 31, -(2 ** 31) - 1, 3e9]


@pytest.mark.parametrize("timeout", BAD_POLL_TIMEOUTS, ids=repr)
def test_poll_rejects_bad_timeouts_like_the_stdlib(timeout):
    assert_same_error(gselect.poll().poll, stdselect.poll().poll, timeout)


@pytest.mark.parametrize("call", [
    lambda p, fd: p.register(),
    lambda p, fd: p.poll(1, 2),
    lambda p, fd: p.register(fd=fd),
    lambda p, fd: p.modify(fd),
], ids=["register-no-args", "poll-two-args", "register-keyword", "modify-one-arg"])
def test_poll_signature_errors_are_type_errors_like_the_stdlib(call, track):
    r, w = pipe(track)
    assert type(raised_by(call, gselect.poll(), r)) is type(raised_by(call, stdselect.poll(), r)) is TypeError


@pytest.mark.parametrize("call", [
    lambda p, fd: p.unregister(fd),
    lambda p, fd: p.modify(fd, stdselect.POLLIN),
    lambda p, fd: p.register(-1),
    lambda p, fd: p.register("x"),
    lambda p, fd: p.register(fd, 1 << 20),
    lambda p, fd: p.register(fd, -1),
    lambda p, fd: p.register(fd, "x"),
], ids=["unregister-unknown", "modify-unknown", "register-negative", "register-str", "mask-overflow",
        "mask-negative", "mask-str"])
def test_poll_errors_match_the_stdlib(call, track):
    r, w = pipe(track)
    assert_same_error(lambda: call(gselect.poll(), r), lambda: call(stdselect.poll(), r))


def test_poll_in_the_hub_polls_but_never_waits(track):
    a, b = pair(track)
    p = gselect.poll()
    p.register(b, gselect.POLLIN)
    assert in_hub(p.poll, 0) == ("ok", [])
    outcome, error = in_hub(p.poll, 50)
    assert outcome == "error" and type(error) is BlockingInHubError
    a.send(b"x")
    assert in_hub(p.poll) == ("ok", [(b.fileno(), gselect.POLLIN)])


# -- epoll() ----------------------------------------------------------------------------------------------

def test_epoll_has_the_stdlib_methods():
    with stdselect.epoll() as real:
        public = {name for name in dir(real) if not name.startswith("_")} | {"__enter__", "__exit__"}
    assert public <= set(dir(gselect.epoll))


def test_epoll_register_modify_unregister_and_results(track):
    a, b = pair(track)
    ep = gselect.epoll()
    track.append(ep)
    ep.register(b, gselect.EPOLLIN)
    ep.register(a.fileno(), gselect.EPOLLOUT)
    assert ep.poll(0) == [(a.fileno(), gselect.EPOLLOUT)]
    ep.modify(a, gselect.EPOLLIN)
    assert ep.poll(0) == []
    a.send(b"x")
    assert ep.poll(0) == [(b.fileno(), gselect.EPOLLIN)]
    assert ep.poll(0) == [(b.fileno(), gselect.EPOLLIN)]  # level-triggered: still ready
    ep.unregister(b)
    assert ep.poll(0) == []


@pytest.mark.parametrize("timeout", [None, -1, -0.5, 5, 5.5])
def test_epoll_waits_greenly(timeout, track):
    a, b = pair(track)
    ep = gselect.epoll()
    track.append(ep)
    ep.register(b, gselect.EPOLLIN)
    greenpatch.spawn_after(0.05, a.send, b"x")
    result, elapsed = timed(ep.poll, timeout)
    assert result == [(b.fileno(), gselect.EPOLLIN)] and elapsed >= 0.04


def test_epoll_edge_triggered_registration_wakes_again_on_new_data(track):
    a, b = pair(track)
    ep = gselect.epoll()
    track.append(ep)
    ep.register(b, gselect.EPOLLIN | gselect.EPOLLET)
    a.send(b"1")
    assert ep.poll(0) == [(b.fileno(), gselect.EPOLLIN)]
    assert ep.poll(0) == []  # the edge was consumed
    greenpatch.spawn_after(0.05, a.send, b"2")
    assert ep.poll(5) == [(b.fileno(), gselect.EPOLLIN)]


def test_epoll_poll_keeps_edge_triggered_events_while_it_lets_other_green_threads_run(track):
    # poll() found the event at once, gives pending green threads a turn, then returns
    # it: polling again would lose it, as an edge-triggered registration reports it once.
    a, b = pair(track)
    ep = gselect.epoll()
    track.append(ep)
    ep.register(b, gselect.EPOLLIN | gselect.EPOLLET)
    greenpatch.sleep(0)  # the hub turns: the next poll() goes on without a switch
    ran = []
    greenpatch.spawn(ran.append, "first")
    assert ep.poll(0) == []
    greenpatch.spawn(ran.append, "second")
    a.send(b"1")
    # A second poll() with no switch since is a tight loop's: it lets both run first.
    assert ep.poll(0) == [(b.fileno(), gselect.EPOLLIN)]
    assert ran == ["first", "second"]


def test_epoll_timeout_and_maxevents(track):
    ep = gselect.epoll()
    track.append(ep)
    result, elapsed = timed(ep.poll, TIMEOUT)
    assert result == [] and TIMEOUT * 0.95 <= elapsed < TIMEOUT + SLACK
    socks = [pair(track) for _ in range(3)]
    for a, b in socks:
        ep.register(b, gselect.EPOLLIN)
        a.send(b"x")
    assert len(ep.poll(1, 2)) == 2
    assert len(ep.poll(maxevents=1, timeout=1)) == 1
    assert len(ep.poll()) == 3


def test_epoll_close_closed_fileno_context_manager_fromfd(track):
    with gselect.epoll() as ep:
        assert not ep.closed
        fd = ep.fileno()
        assert not os.get_inheritable(fd)
        copy = gselect.epoll.fromfd(os.dup(fd))
        track.append(copy)
        assert type(copy) is gselect.epoll and copy.fileno() != fd
    assert ep.closed
    ep.close()  # closing twice is fine, as in the stdlib
    a, b = pair(track)
    copy.register(b, gselect.EPOLLIN)
    greenpatch.spawn_after(0.02, a.send, b"x")
    assert copy.poll(5) == [(b.fileno(), gselect.EPOLLIN)]


def test_closing_an_epoll_while_a_green_thread_polls_it(track):
    ep = gselect.epoll()
    waiter = greenpatch.spawn(raised_by, ep.poll, None)
    greenpatch.sleep(0.02)
    ep.close()
    error = finish(waiter)
    expected = raised_by(stdselect.epoll().__class__.poll, _closed_real_epoll())
    assert type(error) is type(expected) and str(error) == str(expected)


def _closed_real_epoll():
    real = stdselect.epoll()
    real.close()
    return real


def test_a_reused_epoll_fd_number_is_watched_again(track):
    old = gselect.epoll()
    assert old.poll(0.02) == []  # the hub now watches old's fd
    fd = old.fileno()
    os.close(fd)  # behind everyone's back
    new = gselect.epoll()
    assert new.fileno() == fd
    a, b = pair(track)
    new.register(b, gselect.EPOLLIN)
    greenpatch.spawn_after(0.05, a.send, b"x")
    assert new.poll(5) == [(b.fileno(), gselect.EPOLLIN)]
    new.close()
    old.close()  # its fd number is free again
    assert old.closed


BAD_EPOLL_TIMEOUTS = ["x", [], float("nan"), float("inf"), 1e300, 2 ** 64, 2.2e6, 2 ** 31, -3e6]


@pytest.mark.parametrize("timeout", BAD_EPOLL_TIMEOUTS, ids=repr)
def test_epoll_rejects_bad_timeouts_like_the_stdlib(timeout):
    with gselect.epoll() as green, stdselect.epoll() as real:
        assert_same_error(green.poll, real.poll, timeout)
        assert_same_error(green.poll, real.poll, timeout, 0)


@pytest.mark.parametrize("call", [
    lambda ep, fd: ep.register(fd) or ep.register(fd),
    lambda ep, fd: ep.modify(fd, stdselect.EPOLLIN),
    lambda ep, fd: ep.unregister(fd),
    lambda ep, fd: ep.register(-1),
    lambda ep, fd: ep.register("x"),
    lambda ep, fd: ep.poll(1, 0),
    lambda ep, fd: ep.poll(1, -2),
    lambda ep, fd: ep.poll(maxevents="x"),
    lambda ep, fd: (ep.close(), ep.poll(0)),
    lambda ep, fd: (ep.close(), ep.poll("x")),
    lambda ep, fd: (ep.close(), ep.register(fd)),
    lambda ep, fd: (ep.close(), ep.fileno()),
    lambda ep, fd: (ep.close(), ep.__enter__()),
], ids=["register-twice", "modify-unknown", "unregister-unknown", "register-negative", "register-str",
        "maxevents-0", "maxevents-negative", "maxevents-str", "closed-poll", "closed-poll-bad-timeout",
        "closed-register", "closed-fileno", "closed-enter"])
def test_epoll_errors_match_the_stdlib(call, track):
    r, w = pipe(track)
    green, real = gselect.epoll(), stdselect.epoll()
    track += [green, real]
    assert_same_error(lambda: call(green, r), lambda: call(real, r))


@pytest.mark.parametrize("args", [(-2,), (-1, 5), ("x",)], ids=repr)
def test_epoll_constructor_errors_match_the_stdlib(args):
    assert_same_error(gselect.epoll, stdselect.epoll, *args)


def test_epoll_in_the_hub_polls_but_never_waits(track):
    a, b = pair(track)
    ep = gselect.epoll()
    track.append(ep)
    ep.register(b, gselect.EPOLLIN)
    assert in_hub(ep.poll, 0) == ("ok", [])
    outcome, error = in_hub(ep.poll, 0.05)
    assert outcome == "error" and type(error) is BlockingInHubError
    a.send(b"x")
    assert in_hub(ep.poll) == ("ok", [(b.fileno(), gselect.EPOLLIN)])


@pytest.mark.skipif(not hasattr(stdselect, "poll"), reason="no select.poll on this platform")
def test_poll_type_cannot_be_instantiated_like_the_stdlib_one():
    obj = gselect.poll()
    with pytest.raises(TypeError, match=r"^cannot create 'select\.poll' instances$"):
        type(obj)()
    assert repr(type(obj)) == repr(type(stdselect.poll()))
    assert gselect.poll.__doc__


def test_a_select_that_follows_a_hub_turn_returns_ready_fds_at_once(track):
    # A server loop that accepted and started a thread (which switched) goes on
    # accepting without a round of every other green thread; only a select with
    # no switch since the last one (a tight loop) yields first.
    busy, _ = pair(track)
    greenpatch.sleep(0)
    ran = []
    greenpatch.spawn(ran.append, "other")
    assert gselect.select([], [busy], [], 5.0)[1] == [busy]
    assert ran == []
    assert gselect.select([], [busy], [], 5.0)[1] == [busy]
    assert ran == ["other"]


@pytest.mark.parametrize("kind", ["select", "poll", "epoll"])
def test_a_loop_over_always_ready_fds_lets_other_green_threads_run(kind, track):
    """As a real select() releases the GIL: a server loop whose socket is always writable
    (asyncore's) must not starve a green thread waiting for an fd or a timer."""
    if not hasattr(gselect, kind):
        pytest.skip(f"no select.{kind} here")
    busy, _ = pair(track)
    reader, writer = pair(track)
    done = []

    def waits_for_data():
        done.append(reader.recv(1))

    def sleeps():
        time.sleep(0.01)
        done.append("slept")

    greenpatch.spawn(waits_for_data)
    greenpatch.spawn(sleeps)
    writer.send(b"x")
    if kind != "select":
        poller = getattr(gselect, kind)()
        poller.register(busy.fileno(), stdselect.POLLOUT if kind == "poll" else stdselect.EPOLLOUT)
    for _ in range(1_000_000):
        if len(done) == 2:
            break
        if kind == "select":
            assert gselect.select([], [busy], [], 5.0)[1] == [busy]
        else:
            assert poller.poll(5.0 if kind == "epoll" else 5000)
    assert sorted(done, key=str) == [b"x", "slept"]
    if kind == "epoll":
        poller.close()
