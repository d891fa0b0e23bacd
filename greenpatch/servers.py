"""Making legacy, serial ``socketserver``-style servers concurrent.

``make_concurrent(server)`` (or the ``ConcurrentMixIn`` / ``@concurrent``
class forms) makes a serial ``socketserver.TCPServer``, ``UDPServer``,
``UnixStreamServer``, ``http.server.HTTPServer``,
``wsgiref.simple_server.WSGIServer``, ``xmlrpc.server.SimpleXMLRPCServer``
(any ``socketserver.BaseServer``) handle each request in its own green
thread, the way ``socketserver.ThreadingMixIn`` does with OS threads:
``finish_request``, then ``shutdown_request``, with ``handle_error`` for an
exception.  The handler code is not touched.

It works with and without ``monkey_patch()``.  Without it the server's
listening socket is replaced by a green socket on the same fd and
``serve_forever`` waits on the hub, so the accepted sockets (and the
handler's ``rfile``/``wfile``) are green too.  Anything else the handler does
that blocks and is not patched (``time.sleep``, a database driver, a lock)
blocks every request of that OS thread.

Invariants:

* At most ``pool_size`` requests run at once (None: no limit); while that
  many run, the server does not accept.
* ``shutdown()`` stops accepting, lets in-flight requests finish for up to
  ``shutdown_timeout`` seconds (None: as long as they take), then kills the
  rest with ``GreenletExit`` (their ``shutdown_request`` still runs), and
  returns once ``serve_forever`` has returned.  It may be called from a
  green thread of the serving OS thread or from any other OS thread.
* ``server_close()`` waits for in-flight requests the same way before it
  closes the listening socket.
"""

from __future__ import annotations

import socketserver
from typing import Any, Callable, TypeVar

from greenlet import GreenletExit, getcurrent

from greenpatch.event import Event
from greenpatch.green import socket as _gsocket
from greenpatch.greenthread import GreenThread, spawn
from greenpatch.hub import park, wake_all, wake_one

__all__ = ["ConcurrentMixIn", "concurrent", "make_concurrent", "install"]

S = TypeVar("S")


class ConcurrentMixIn:
    """Mix in before a ``socketserver`` server class: each request runs in its own green thread.

    ``class Server(ConcurrentMixIn, socketserver.TCPServer): ...``
    """

    #: most requests handled at once; beyond it the server stops accepting (None: no limit)
    pool_size: int | None = None
    #: seconds ``shutdown()``/``server_close()`` let in-flight requests run (None: no limit)
    shutdown_timeout: float | None = None

    # -- state, set up lazily so make_concurrent() works on a built instance -------

    def _gp_setup(self) -> None:
        if "_gp_threads" in self.__dict__:
            return
        self._gp_threads: set[GreenThread] = set()
        self._gp_slot_waiters: list = []
        self._gp_idle_waiters: list = []
        self._gp_shutdown_request = False
        self._gp_stopped = Event()
        self._gp_stopped.set()

    def _gp_green_socket(self) -> None:
        """Put the listening socket on a green socket object (same fd) unless it is one."""
        sock = getattr(self, "socket", None)
        if sock is None or isinstance(sock, _gsocket.socket):
            return
        timeout = sock.gettimeout()
        green = _gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        green.settimeout(timeout)
        self.socket = green

    # -- handling a request ---------------------------------------------------------

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a green thread that handles the request, as ThreadingMixIn starts a thread."""
        self._gp_setup()
        thread = spawn(self._gp_process_request, request, client_address)
        thread.name = f"{type(self).__name__}-request-{thread.name.rpartition('-')[2]}"
        self._gp_threads.add(thread)

    def _gp_process_request(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                self._gp_threads.discard(getcurrent())
                wake_one(self._gp_slot_waiters)
                if not self._gp_threads:
                    wake_all(self._gp_idle_waiters)

    def _gp_has_slot(self) -> bool:
        return self.pool_size is None or len(self._gp_threads) < self.pool_size

    def active_requests(self) -> int:
        """How many requests are being handled now."""
        self._gp_setup()
        return len(self._gp_threads)

    # -- the serving loop -------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until ``shutdown()``, each in its own green thread."""
        if not isinstance(self, socketserver.BaseServer):
            return super().serve_forever(poll_interval)  # type: ignore[misc]
        self._gp_setup()
        self._gp_green_socket()
        self._gp_stopped.clear()
        drain = False
        try:
            while not self._gp_shutdown_request:
                if not self._gp_has_slot():
                    park(self._gp_slot_waiters, self._gp_stop_or_slot, poll_interval)
                    continue
                if not self._gp_shutdown_request:
                    self._gp_handle_one(poll_interval)
                self.service_actions()  # type: ignore[attr-defined]
            drain = True
        finally:
            self._gp_shutdown_request = False
            try:
                if drain:
                    self._gp_drain()
            finally:
                self._gp_stopped.set()

    def _gp_stop_or_slot(self) -> bool:
        return self._gp_shutdown_request or self._gp_has_slot()

    def _gp_handle_one(self, timeout: float | None) -> bool:
        """Accept one request, waiting up to ``timeout``, and start it; False if none came.

        The stdlib's ``_handle_request_noblock`` after a wait, folded into one
        call: try ``get_request()`` first and wait (greenly) only if nothing is
        there, which the hub's edge-triggered polling requires.
        """
        sock = self.socket  # type: ignore[attr-defined]
        saved = sock.gettimeout()
        sock.settimeout(timeout)
        try:
            request, client_address = self.get_request()  # type: ignore[attr-defined]
        except TimeoutError:
            return False
        except OSError:
            return True
        finally:
            if sock.fileno() >= 0:
                sock.settimeout(saved)
        if self.verify_request(request, client_address):  # type: ignore[attr-defined]
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)  # type: ignore[attr-defined]
                self.shutdown_request(request)  # type: ignore[attr-defined]
            except BaseException:
                self.shutdown_request(request)  # type: ignore[attr-defined]
                raise
        else:
            self.shutdown_request(request)  # type: ignore[attr-defined]
        return True

    def handle_request(self) -> None:
        """Handle one request (in a green thread), waiting at most ``self.timeout`` for it."""
        self._gp_setup()
        self._gp_green_socket()
        timeout = self.socket.gettimeout()  # type: ignore[attr-defined]
        if timeout is None:
            timeout = self.timeout  # type: ignore[attr-defined]
        elif self.timeout is not None:  # type: ignore[attr-defined]
            timeout = min(timeout, self.timeout)  # type: ignore[attr-defined]
        if not self._gp_has_slot():
            park(self._gp_slot_waiters, self._gp_has_slot)
        if not self._gp_handle_one(timeout):
            self.handle_timeout()  # type: ignore[attr-defined]

    # -- stopping ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and let in-flight requests finish (up to ``shutdown_timeout``).

        Returns once ``serve_forever`` has returned.  Called from the green
        thread running ``serve_forever`` itself it would wait forever, as the
        stdlib's would; do it from another green thread or OS thread.
        """
        self._gp_setup()
        self._gp_shutdown_request = True
        wake_all(self._gp_slot_waiters)
        self._gp_stopped.wait()

    def server_close(self) -> None:
        """Wait for in-flight requests (up to ``shutdown_timeout``), then close the socket."""
        self._gp_setup()
        self._gp_drain()
        super().server_close()  # type: ignore[misc]

    def _gp_drain(self) -> None:
        if not self._gp_threads:
            return
        if park(self._gp_idle_waiters, self._gp_idle, self.shutdown_timeout):
            return
        for thread in tuple(self._gp_threads):
            # schedule_threadsafe: this may run in another OS thread than the hub of the request
            thread.hub.schedule_threadsafe(thread.kill, GreenletExit, False)
        park(self._gp_idle_waiters, self._gp_idle, 5.0)

    def _gp_idle(self) -> bool:
        return not self._gp_threads


_classes: dict[type, type] = {}


def _concurrent_class(cls: type) -> type:
    if issubclass(cls, ConcurrentMixIn):
        return cls
    made = _classes.get(cls)
    if made is None:
        made = _classes[cls] = type(cls.__name__, (ConcurrentMixIn, cls), {
            "__module__": cls.__module__,
            "__qualname__": getattr(cls, "__qualname__", cls.__name__),
            "__doc__": cls.__doc__,
        })
    return made


def make_concurrent(server: S, pool_size: int | None = None,
                    shutdown_timeout: float | None = None) -> S:
    """Make an existing serial server handle each request in its own green thread; returns it.

    ``server`` keeps its identity and attributes; its class becomes a
    subclass of its class with ``ConcurrentMixIn`` first.  ``pool_size``
    caps the requests handled at once (beyond it the server does not accept);
    ``shutdown_timeout`` caps how long ``shutdown()``/``server_close()`` wait
    for in-flight requests before killing them.
    """
    if not callable(getattr(server, "process_request", None)):
        raise TypeError(f"{type(server).__name__} has no process_request(): not a socketserver-style server")
    server.__class__ = _concurrent_class(type(server))
    server._gp_setup()  # type: ignore[attr-defined]
    if pool_size is not None:
        if pool_size < 1:
            raise ValueError("pool_size must be >= 1 or None")
        server.pool_size = pool_size  # type: ignore[attr-defined]
    if shutdown_timeout is not None:
        server.shutdown_timeout = shutdown_timeout  # type: ignore[attr-defined]
    if isinstance(server, socketserver.BaseServer):
        server._gp_green_socket()  # type: ignore[attr-defined]
    return server


def concurrent(cls: type | None = None, *, pool_size: int | None = None,
               shutdown_timeout: float | None = None) -> Any:
    """Class decorator: ``@concurrent`` or ``@concurrent(pool_size=100)`` on a server class."""
    def decorate(klass: type) -> type:
        attrs: dict[str, Any] = {"__module__": klass.__module__, "__qualname__": klass.__qualname__,
                                 "__doc__": klass.__doc__}
        if pool_size is not None:
            attrs["pool_size"] = pool_size
        if shutdown_timeout is not None:
            attrs["shutdown_timeout"] = shutdown_timeout
        return type(klass.__name__, (ConcurrentMixIn, klass), attrs)
    return decorate(cls) if cls is not None else decorate


# -- python -m greenpatch --concurrent-servers ------------------------------------

_installed = False


_ALREADY_CONCURRENT = tuple(getattr(socketserver, name) for name in ("ThreadingMixIn", "ForkingMixIn")
                            if hasattr(socketserver, name))


def _already_concurrent(cls: type) -> bool:
    return issubclass(cls, (ConcurrentMixIn, *_ALREADY_CONCURRENT))


def _after_base_init(wrapped: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    if instance is not None and not _already_concurrent(type(instance)):
        instance.__class__ = _concurrent_class(type(instance))
        instance._gp_setup()
    return result


def install() -> None:
    """Make every ``socketserver`` server created from now on concurrent (what ``--concurrent-servers`` does).

    Servers that already use ``ThreadingMixIn`` or ``ForkingMixIn`` are left alone.
    The listening socket becomes green when serving starts, after ``__init__``
    has bound it.
    """
    global _installed
    if _installed:
        return
    _installed = True
    import wrapt

    def hook(module: Any) -> None:
        wrapt.wrap_function_wrapper(module, "BaseServer.__init__", _after_base_init)

    wrapt.register_post_import_hook(hook, "socketserver")
