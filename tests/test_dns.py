"""Green DNS: getaddrinfo and friends run in greenpatch.tpool; numeric addresses skip it."""

import _socket
import socket as std_socket
import time

import pytest

import greenpatch
from greenpatch import tpool
from greenpatch.green import socket as green_socket

from children import heartbeat


def test_results_match_the_stdlib():
    assert green_socket.getaddrinfo("localhost", 80) == std_socket.getaddrinfo("localhost", 80)
    assert green_socket.getaddrinfo("127.0.0.1", "80", 0, std_socket.SOCK_STREAM) == \
        std_socket.getaddrinfo("127.0.0.1", "80", 0, std_socket.SOCK_STREAM)
    assert green_socket.gethostbyname("localhost") == std_socket.gethostbyname("localhost")
    assert green_socket.gethostbyname_ex("localhost") == std_socket.gethostbyname_ex("localhost")
    assert green_socket.gethostbyaddr("127.0.0.1") == std_socket.gethostbyaddr("127.0.0.1")
    for flags in (0, std_socket.NI_NUMERICHOST | std_socket.NI_NUMERICSERV):
        assert green_socket.getnameinfo(("127.0.0.1", 80), flags) == std_socket.getnameinfo(("127.0.0.1", 80), flags)


@pytest.mark.parametrize("call, args", [
    ("getaddrinfo", ("no-such-host.invalid", 80)),
    ("getaddrinfo", ("127.0.0.1", "no-such-service")),
    ("gethostbyname", ("no-such-host.invalid",)),
    ("getnameinfo", (("127.0.0.1", 80, 0, 0), 0)),
    ("gethostbyaddr", ("not an address",)),
])
def test_errors_are_the_stdlib_errors(call, args):
    with pytest.raises(Exception) as std_info:
        getattr(std_socket, call)(*args)
    with pytest.raises(Exception) as green_info:
        getattr(green_socket, call)(*args)
    assert type(green_info.value) is type(std_info.value)
    assert green_info.value.args == std_info.value.args


def test_numeric_addresses_skip_the_pool(monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a numeric address went to the thread pool")

    monkeypatch.setattr(tpool, "execute", no_pool)
    assert green_socket.getaddrinfo("127.0.0.1", 80)
    assert green_socket.getaddrinfo("::1", 80, std_socket.AF_INET6)
    assert green_socket.getaddrinfo(None, 80)
    assert green_socket.gethostbyname("127.0.0.1") == "127.0.0.1"
    assert green_socket.getnameinfo(("127.0.0.1", 80), std_socket.NI_NUMERICHOST | std_socket.NI_NUMERICSERV)
    with pytest.raises(AssertionError):
        green_socket.getaddrinfo("localhost", 80)


def test_slow_lookups_keep_a_heartbeat_on_time(monkeypatch):
    real = _socket.getaddrinfo

    def slow(*args):
        time.sleep(0.2)  # the real sleep, in a worker thread (the pytest process is not patched)
        return real("127.0.0.1", *args[1:])

    monkeypatch.setattr(_socket, "getaddrinfo", slow)
    # A fresh pool: one left idle by an earlier test takes every job alone
    # (tpool starts a worker only when none is idle; reported on issue 6).
    monkeypatch.setattr(tpool, "_default", tpool.ThreadPool(50))
    lateness = []
    stop = []

    beat = greenpatch.spawn(heartbeat, lateness, stop)
    start = time.monotonic()
    lookups = [greenpatch.spawn(green_socket.getaddrinfo, f"host{i}.example", 80) for i in range(50)]
    results = [lookup.wait() for lookup in lookups]
    elapsed = time.monotonic() - start
    stop.append(True)
    beat.wait()
    assert all(result and result[0][4][0] == "127.0.0.1" for result in results)
    assert elapsed >= 0.2
    assert len(lateness) >= 10
    print(f"50 slow lookups in {elapsed:.2f}s; heartbeat max lateness {max(lateness) * 1000:.1f} ms")
    assert max(lateness) < 0.150
