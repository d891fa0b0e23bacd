"""Green ``ssl``: TLS sockets whose handshake, reads, writes and shutdown wait on the hub.

Use it stand-alone (``from greenpatch.green import ssl``) or through
``monkey_patch()``.  Everything the stdlib module defines is re-exported
unchanged, except:

* ``SSLSocket``: a subclass of both the stdlib ``ssl.SSLSocket`` and the
  green ``socket.socket``, so the stdlib's own code builds it
  (``SSLContext.wrap_socket`` calls its ``_create``), it is an instance of
  the stdlib class too, and the plain-socket calls (connect, accept, recv
  after ``unwrap()``) are the green socket's.  Its fd is non-blocking at the C
  level, so OpenSSL answers "want read" / "want write" instead of blocking;
  the TLS calls (``do_handshake``, ``read``/``recv``/``recv_into``,
  ``write``/``send``/``sendall``, ``unwrap``) go through one helper,
  ``_tls_io``, that waits for that direction with ``hub.wait_fd`` and
  retries, within the socket's timeout.  Non-blocking sockets raise
  ``SSLWantReadError``/``SSLWantWriteError`` and timeouts raise
  ``TimeoutError`` with CPython's messages (``"_ssl.c:NNN: The handshake
  operation timed out"``, ``"The read operation timed out"``, ...).
* ``SSLContext``: a subclass of the stdlib class whose ``sslsocket_class`` is
  the green ``SSLSocket``, and the module functions that build a context or
  a connection (``create_default_context``, ``wrap_socket`` where this Python
  has it, ``get_server_certificate``, ...): the stdlib's code re-bound to this
  module's globals.  Memory-BIO objects (``wrap_bio``, ``SSLObject``) never
  wait and are the stdlib's.

Under ``monkey_patch()`` the stdlib ``ssl.SSLContext`` class is *not*
replaced: replacing it with a subclass is what made gevent's property setters
recurse (gevent#1016, #1777), ``from ssl import SSLContext`` done before the
patch (urllib3 does it) would name another class, and contexts created before
the patch would stay blocking.  ``__after_patch__`` instead points the stdlib
class's ``sslsocket_class`` at the green ``SSLSocket``, so every context, old
or new, wraps green and ``isinstance(ctx, ssl.SSLContext)`` holds for all.
``ssl.SSLSocket`` itself is swapped, as ``socket.socket`` is, so a program's
own subclass of it (installed as a context's ``sslsocket_class``) is green
too.  ``get_server_certificate`` is swapped so that it connects through the
green socket even when ``socket`` is not patched.
"""

from __future__ import annotations

import ssl as _stdssl

# The stdlib namespace first, so the re-bound stdlib functions find every
# global they use; what follows overrides the socket and context classes.
globals().update({name: value for name, value in vars(_stdssl).items()
                  if not (name.startswith("__") and name.endswith("__"))})

import _socket as _csocket  # noqa: E402
from time import monotonic as _monotonic  # noqa: E402

from greenpatch.green import rebind as _rebind  # noqa: E402
from greenpatch.green import rebind_functions as _rebind_functions  # noqa: E402
from greenpatch.green import socket as _green_socket  # noqa: E402
from greenpatch.hub import READ as _READ  # noqa: E402
from greenpatch.hub import WRITE as _WRITE  # noqa: E402
from greenpatch.hub import get_hub as _get_hub  # noqa: E402

__implements__ = ["SSLSocket", "get_server_certificate"]

_StdSSLSocket = _stdssl.SSLSocket
_StdSSLContext = _stdssl.SSLContext
_WantRead = _stdssl.SSLWantReadError
_WantWrite = _stdssl.SSLWantWriteError

socket = _green_socket.socket
create_connection = _green_socket.create_connection


class _Expired(TimeoutError):
    """The hub's timeout for one TLS wait (never seen outside ``_tls_io``)."""


# CPython's timeout messages, by operation and by the direction that was awaited.
_READ_OP = {_READ: "The read operation timed out", _WRITE: "The read operation timed out"}
_WRITE_OP = {_READ: "The write operation timed out", _WRITE: "The write operation timed out"}
_SHUTDOWN_OP = {_READ: "The read operation timed out", _WRITE: "The write operation timed out"}
_HANDSHAKE_OP = None  # "_ssl.c:NNN: The handshake operation timed out": see _handshake_timed_out()
_handshake_message: str | None = None


class _ProbeSocket(_csocket.socket):
    __slots__ = ("__weakref__",)  # the C SSL object keeps a weak reference to its socket


def _handshake_timed_out() -> str:
    """CPython's handshake-timeout message, with this build's ``_ssl.c`` line number.

    The number differs between builds, so it is read from the C module
    once, on the first handshake that times out: a real handshake on a
    socketpair with a 1 ns timeout, which times out at once without polling.
    """
    global _handshake_message
    if _handshake_message is None:
        message = "The handshake operation timed out"
        try:
            pair = _csocket.socketpair()
            left = _ProbeSocket(pair[0].family, pair[0].type, 0, pair[0].detach())
            right = pair[1]
            try:
                left.settimeout(1e-9)
                probe = _stdssl._SSLContext(PROTOCOL_TLS_CLIENT)._wrap_socket(left, False, None)
                try:
                    probe.do_handshake()
                except TimeoutError as exc:
                    message = str(exc)
            finally:
                left.close()
                right.close()
        except Exception:
            pass  # keep the message without the line number
        _handshake_message = message
    return _handshake_message


def _tls_io(sock, call, args, op):
    """Return ``call(*args)`` (a method of the C SSL object); wait and retry while OpenSSL wants I/O.

    The TLS twin of the green socket's ``_green_io``: OpenSSL may want the
    other direction than the call's own (a read during a renegotiation
    writes), so each retry waits for the direction the last attempt asked
    for.  A non-blocking socket re-raises ``SSLWantReadError`` or
    ``SSLWantWriteError``; otherwise the wait lasts until the fd is ready or
    the socket's timeout (a total for the call, counted from the first wait,
    as in CPython) runs out, and then raises ``TimeoutError`` with the message
    CPython gives for ``op``.  A socket closed meanwhile raises
    ``OSError(EBADF)``.
    """
    try:
        return call(*args)
    except (_WantRead, _WantWrite) as exc:
        timeout = sock._timeout
        if timeout == 0.0:
            raise
        direction = _READ if isinstance(exc, _WantRead) else _WRITE
    deadline = None if timeout is None else _monotonic() + timeout
    wait_fd = _get_hub().wait_fd
    while True:
        try:
            if deadline is None:
                wait_fd(sock.fileno(), direction)
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0.0:
                    raise _Expired
                wait_fd(sock.fileno(), direction, remaining, _Expired)
        except _Expired:
            message = _handshake_timed_out() if op is _HANDSHAKE_OP else op[direction]
            raise TimeoutError(message) from None
        try:
            return call(*args)
        except _WantRead:
            direction = _READ
        except _WantWrite:
            direction = _WRITE


class SSLSocket(_StdSSLSocket, _green_socket.socket):
    """An ``ssl.SSLSocket`` whose blocking calls suspend only the calling green thread.

    Made by ``SSLContext.wrap_socket()``, like the stdlib's; same methods,
    timeouts and errors.
    """

    # The stdlib's _create, run with the stdlib class as its ``SSLSocket``
    # global: its ``super(SSLSocket, self).__init__`` must reach the green
    # socket's __init__ even after ``ssl.SSLSocket`` names this class.
    _create = classmethod(_rebind(_StdSSLSocket._create.__func__, dict(vars(_stdssl), SSLSocket=_StdSSLSocket),
                                  __name__))

    def read(self, len=1024, buffer=None):
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Read on closed or unwrapped SSL socket.")
        try:
            if buffer is not None:
                return _tls_io(self, sslobj.read, (len, buffer), _READ_OP)
            return _tls_io(self, sslobj.read, (len,), _READ_OP)
        except SSLError as exc:
            if exc.args[0] == SSL_ERROR_EOF and self.suppress_ragged_eofs:
                return 0 if buffer is not None else b""
            raise

    def write(self, data):
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            raise ValueError("Write on closed or unwrapped SSL socket.")
        return _tls_io(self, sslobj.write, (data,), _WRITE_OP)

    def send(self, data, flags=0):
        self._checkClosed()
        sslobj = self._sslobj
        if sslobj is None:
            return _green_socket.socket.send(self, data, flags)
        if flags != 0:
            raise ValueError(f"non-zero flags not allowed in calls to send() on {self.__class__}")
        # Retried with the same data until OpenSSL has written all of it (it
        # keeps the progress of a write interrupted by "want write").
        return _tls_io(self, sslobj.write, (data,), _WRITE_OP)

    def do_handshake(self, block=False):
        self._check_connected()
        timeout = self.gettimeout()
        try:
            if timeout == 0.0 and block:
                self.settimeout(None)
            _tls_io(self, self._sslobj.do_handshake, (), _HANDSHAKE_OP)
        finally:
            self.settimeout(timeout)

    def unwrap(self):
        sslobj = self._sslobj
        if not sslobj:
            raise ValueError("No SSL wrapper around " + str(self))
        sock = _tls_io(self, sslobj.shutdown, (), _SHUTDOWN_OP)
        self._sslobj = None
        return sock


for _name in ("read", "write", "send", "do_handshake", "unwrap"):
    vars(SSLSocket)[_name].__doc__ = getattr(_StdSSLSocket, _name).__doc__
del _name


class SSLContext(_StdSSLContext):
    # The stdlib's property setters call super(SSLContext, SSLContext) with
    # the stdlib class (the ssl module's global, which is never replaced), so
    # they work unchanged for this subclass.
    __doc__ = _StdSSLContext.__doc__
    sslsocket_class = SSLSocket


# create_default_context, _create_unverified_context (and their aliases
# _create_default_https_context, _create_stdlib_context), wrap_socket on
# 3.10/3.11, get_server_certificate: the stdlib's code, building green objects.
_rebind_functions(_stdssl, globals(), __name__, ("SSLContext", "SSLSocket", "socket", "create_connection"))


def __after_patch__(module) -> None:
    """Make every context, including those created before the patch, wrap green sockets.

    The stdlib ``SSLContext`` class stays in place (``isinstance`` and its
    property setters keep working); only its ``sslsocket_class`` changes,
    unless the program had already put its own class there.  (After
    ``importlib.reload(ssl)`` the default is a fresh stdlib class.)
    """
    default = module.SSLContext.sslsocket_class
    if default is _StdSSLSocket or (default.__module__ == module.__name__ and default.__qualname__ == "SSLSocket"):
        module.SSLContext.sslsocket_class = SSLSocket
