"""Green ``socket``: the stdlib module, with a ``socket`` class whose blocking calls wait on the hub.

Use it stand-alone (``from greenpatch.green import socket``) or through
``monkey_patch()``, which puts the class on the stdlib module in place.
Everything the stdlib module defines is re-exported unchanged, except:

* ``socket``: a subclass of the stdlib class, so makefile, dup, repr,
  ``family``/``type`` and the context manager are the stdlib's own code.  Its
  fd is always non-blocking at the C level; the timeout the program sees
  (None: blocking, 0.0: non-blocking, seconds: timeout) lives in the Python
  object.  Every call that could block goes through one helper, ``_green_io``: it
  tries the real C call, and on EAGAIN either re-raises (non-blocking), or
  waits for the fd on the hub and retries until the call succeeds or the
  timeout (a total duration, as in CPython) runs out.
* the stdlib helpers that construct ``socket`` (create_connection,
  create_server, socketpair, fromfd, ...): the stdlib's code re-bound to this
  module's globals, so they build green sockets without any patching.  After
  ``monkey_patch()`` the stdlib's own helpers do the same through the patched
  ``socket.socket``, so only that name is swapped.

Invariant (hub.py, ``forget_fd``): a socket forgets its fd on the hub when it
takes an fd (creation, accept, ``fileno=``, fromfd, socketpair, dup) and
before it lets go of one (close, detach).  Green threads waiting on a socket
that is closed get ``OSError(EBADF)``; a reused fd number starts clean.
Name lookups (``getaddrinfo``, ``gethostbyname(_ex)``, ``gethostbyaddr``,
``getnameinfo``) run in ``greenpatch.tpool`` worker threads, numeric addresses
excepted; the lookup the C ``connect``/``sendto`` does for a host name is
still the real, blocking one.
"""

from __future__ import annotations

import socket as _stdsocket

# The stdlib namespace first, so the re-bound stdlib helpers find every global
# they use; what follows overrides ``socket`` and the helpers.
globals().update({name: value for name, value in vars(_stdsocket).items()
                  if not (name.startswith("__") and name.endswith("__"))})
__all__ = list(_stdsocket.__all__)

import _socket as _csocket  # noqa: E402
import os as _os  # noqa: E402
import select as _select  # noqa: E402
from errno import EAGAIN as _EAGAIN  # noqa: E402
from errno import EALREADY as _EALREADY  # noqa: E402
from errno import EINPROGRESS as _EINPROGRESS  # noqa: E402
from errno import EWOULDBLOCK as _EWOULDBLOCK  # noqa: E402
from math import ceil as _ceil  # noqa: E402
from time import monotonic as _monotonic  # noqa: E402

from greenpatch.hub import HANGUP as _HANGUP  # noqa: E402
from greenpatch.hub import READ as _READ  # noqa: E402
from greenpatch.hub import WRITE as _WRITE  # noqa: E402
from greenpatch.hub import peek_hub as _peek_hub  # noqa: E402
from greenpatch.hub import get_hub as _get_hub  # noqa: E402
from greenpatch.hub import _state as _hub_state  # noqa: E402
from greenpatch.green import rebind_functions as _rebind_functions  # noqa: E402
from greenpatch.patcher import original as _original  # noqa: E402

__implements__ = ["socket"]

_csock = _csocket.socket
_c_fileno = _csock.fileno
_c_type = _csock.type.__get__
_c_gettimeout = _csock.gettimeout
_c_settimeout = _csock.settimeout
_c_setblocking = _csock.setblocking
_c_accept = _csock._accept
_c_connect = _csock.connect
_c_connect_ex = _csock.connect_ex
_c_recv = _csock.recv
_c_recv_into = _csock.recv_into
_c_recvfrom = _csock.recvfrom
_c_recvfrom_into = _csock.recvfrom_into
_c_send = _csock.send
_c_sendto = _csock.sendto
_c_recvmsg = getattr(_csock, "recvmsg", None)
_c_recvmsg_into = getattr(_csock, "recvmsg_into", None)
_c_sendmsg = getattr(_csock, "sendmsg", None)
_real_poll = _original("select", "poll")  # unpatched even if select was patched first
_POLLOUT = _select.POLLOUT

# connect_ex() results that mean "not done yet"; EAGAIN is AF_UNIX's "listener backlog full".
_CONNECT_PENDING = frozenset((_EINPROGRESS, _EALREADY, _EAGAIN))
_UNSURE = object()
_DONTWAIT = getattr(_csocket, "MSG_DONTWAIT", 0)


class socket(_stdsocket.socket):
    """A socket whose blocking calls suspend only the calling green thread.

    Same constructor, methods, timeouts and errors as the stdlib's
    ``socket.socket``.
    """

    __slots__ = ("_timeout", "_stream")

    def __init__(self, family: int = -1, type: int = -1, proto: int = -1, fileno: int | None = None) -> None:
        super().__init__(family, type, proto, fileno)
        hub = _peek_hub()
        if hub is not None:
            hub.forget_fd(_c_fileno(self))
        # On a stream socket a short read means the receive buffer is drained.
        self._stream = _c_type(self) & 0xF == SOCK_STREAM
        # The stdlib has just picked the timeout (the default timeout, or 0.0
        # for SOCK_NONBLOCK); keep it here and make the fd non-blocking.
        timeout = _c_gettimeout(self)
        self._timeout = timeout
        if timeout != 0.0:
            _c_setblocking(self, False)

    # -- timeouts: kept in Python, the fd stays non-blocking ---------------------

    def gettimeout(self) -> float | None:
        return self._timeout

    def settimeout(self, value: float | None) -> None:
        timeout = _fast_timeout(value)
        if timeout is _UNSURE or _c_fileno(self) < 0:
            self._timeout = self._through_c(_c_settimeout, value)
        else:
            # As CPython: the new timeout is kept, then the fd's mode is set
            # (always non-blocking here), which raises OSError for a bad fd.
            self._timeout = timeout
            _c_setblocking(self, False)

    def setblocking(self, flag: bool) -> None:
        if (flag is True or flag is False or (flag.__class__ is int and (flag == 0 or flag == 1))) \
                and _c_fileno(self) >= 0:
            self._timeout = None if flag else 0.0
            _c_setblocking(self, False)  # OSError for an fd closed behind the socket's back, as CPython
        else:
            self._timeout = self._through_c(_c_setblocking, flag)

    def getblocking(self) -> bool:
        return self._timeout != 0.0

    @property
    def timeout(self) -> float | None:
        """The timeout in seconds (float), or None: the same as gettimeout()."""
        return self._timeout

    def _through_c(self, setter, value):
        """Apply the stdlib setter for its exact checks and errors; return the timeout it chose."""
        try:
            setter(self, value)  # raises exactly as the stdlib does
        except OSError:
            # Closed: like the stdlib, keep the new timeout, then raise EBADF.
            self._timeout = _c_gettimeout(self)
            raise
        timeout = _c_gettimeout(self)
        _c_setblocking(self, False)
        return timeout

    # -- the one place a green socket waits ----------------------------------------

    def _green_io(self, call, direction, args, deadline=None, want=0):
        """Return ``call(*args)``; on EAGAIN wait for ``direction`` on the fd and retry.

        Non-blocking sockets re-raise the BlockingIOError.  Otherwise the
        wait lasts until the fd is ready, or until ``deadline`` (monotonic
        seconds; by default the socket's timeout from the first EAGAIN on),
        when it raises ``TimeoutError("timed out")``.  A socket closed
        meanwhile raises ``OSError(EBADF)``.

        ``want`` > 0 marks a plain stream read of that many bytes: a shorter,
        non-empty result means the kernel buffer is drained, so the hub's
        readiness hint is cleared and the next call waits for an edge instead
        of making a recv that would fail (``hub.FdWatch``).
        """
        try:
            hub = _hub_state.hub  # get_hub(), inlined on the hot path as park() does
        except AttributeError:
            hub = _get_hub()
        timeout = self._timeout
        watch = hub._watches.get(_c_fileno(self))
        if watch is None or watch.ready & (direction | _HANGUP) or timeout == 0.0:
            try:
                result = call(*args)
            except BlockingIOError:
                if timeout == 0.0:
                    raise
            else:
                if want and watch is not None and 0 < (result if result.__class__ is int else len(result)) < want:
                    watch.ready &= ~direction
                return result
        if timeout is not None and deadline is None:
            deadline = _monotonic() + timeout
        while True:
            if deadline is None:
                watch = hub.wait_fd(_c_fileno(self), direction)
            else:
                remaining = deadline - _monotonic()
                if remaining <= 0.0:
                    raise TimeoutError("timed out")
                watch = hub.wait_fd(_c_fileno(self), direction, remaining, TimeoutError, "timed out")
            try:
                result = call(*args)
            except BlockingIOError:
                continue
            if want and watch is not None and 0 < (result if result.__class__ is int else len(result)) < want:
                watch.ready &= ~direction
            return result

    # -- receiving ---------------------------------------------------------------

    # MSG_DONTWAIT asks for one try whatever the timeout: the C call alone,
    # whose BlockingIOError goes to the caller.

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags and _dontwait(flags):
            return _c_recv(self, bufsize, flags)
        want = bufsize if self._stream and not flags and bufsize.__class__ is int else 0
        return self._green_io(_c_recv, _READ, (self, bufsize, flags), None, want)

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:
        if flags and _dontwait(flags):
            return _c_recv_into(self, buffer, nbytes, flags)
        want = 0
        if self._stream and not flags and nbytes.__class__ is int:
            want = nbytes or (buffer.nbytes if buffer.__class__ is memoryview else 0)
        return self._green_io(_c_recv_into, _READ, (self, buffer, nbytes, flags), None, want)

    def recvfrom(self, bufsize: int, flags: int = 0):
        if flags and _dontwait(flags):
            return _c_recvfrom(self, bufsize, flags)
        return self._green_io(_c_recvfrom, _READ, (self, bufsize, flags))

    def recvfrom_into(self, buffer, nbytes: int = 0, flags: int = 0):
        if flags and _dontwait(flags):
            return _c_recvfrom_into(self, buffer, nbytes, flags)
        return self._green_io(_c_recvfrom_into, _READ, (self, buffer, nbytes, flags))

    if _c_recvmsg is not None:
        def recvmsg(self, *args):
            if len(args) > 2 and _dontwait(args[2]):
                return _c_recvmsg(self, *args)
            return self._green_io(_c_recvmsg, _READ, (self, *args))

        def recvmsg_into(self, *args):
            if len(args) > 2 and _dontwait(args[2]):
                return _c_recvmsg_into(self, *args)
            return self._green_io(_c_recvmsg_into, _READ, (self, *args))

    def _accept(self):
        """_accept() -> (fd, address): the C accept, waiting like every other call."""
        return self._green_io(_c_accept, _READ, (self,))

    def accept(self):
        """accept() -> (socket object, address info)

        Wait for an incoming connection; the new socket is green too.
        """
        fd, addr = self._accept()
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        # The stdlib's rule: the default timeout, except that a listener with a
        # timeout hands out blocking sockets when there is no default.
        if getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock, addr

    # -- sending -------------------------------------------------------------------

    def send(self, data, flags: int = 0) -> int:
        if flags and _dontwait(flags):
            return _c_send(self, data, flags)
        return self._green_io(_c_send, _WRITE, (self, data, flags))

    def sendto(self, *args) -> int:
        """sendto(data[, flags], address) -> count"""
        if len(args) == 3 and _dontwait(args[1]):
            return _c_sendto(self, *args)
        return self._green_io(_c_sendto, _WRITE, (self, *args))

    if _c_sendmsg is not None:
        def sendmsg(self, *args) -> int:
            if len(args) > 2 and _dontwait(args[2]):
                return _c_sendmsg(self, *args)
            return self._green_io(_c_sendmsg, _WRITE, (self, *args))

    def sendall(self, data, flags: int = 0) -> None:
        # The timeout covers the whole call, as in CPython; partial sends go
        # on from a memoryview slice, so nothing is copied.  The first send is
        # tried at once, as the C sendall does: most sendall() calls end there.
        timeout = self._timeout
        deadline = _monotonic() + timeout if timeout else None
        try:
            sent = _c_send(self, data, flags)  # the C call checks ``data``
        except BlockingIOError:
            if timeout == 0.0:
                raise
            sent = self._green_io(_c_send, _WRITE, (self, data, flags), deadline)
        if sent == len(data) and (data.__class__ is bytes or data.__class__ is bytearray):
            return
        with memoryview(data) as view, view.cast("B") as octets:
            total = octets.nbytes
            while sent < total:
                sent += self._green_io(_c_send, _WRITE, (self, octets[sent:], flags), deadline)

    if hasattr(_os, "sendfile"):
        def _sendfile_use_sendfile(self, file, offset=0, count=None):
            # The stdlib's algorithm, waiting through _green_io instead of a blocking selector.
            self._check_sendfile_params(file, offset, count)
            sockno = self.fileno()
            try:
                fileno = file.fileno()
            except (AttributeError, io.UnsupportedOperation) as err:
                raise _GiveupOnSendfile(err)  # not a regular file
            try:
                fsize = _os.fstat(fileno).st_size
            except OSError as err:
                raise _GiveupOnSendfile(err)  # not a regular file
            if not fsize:
                return 0  # empty file
            blocksize = min(count or fsize, 2 ** 30)  # 1 GiB at most (bpo-38319)
            if self._timeout == 0.0:
                raise ValueError("non-blocking sockets are not supported")
            total_sent = 0
            try:
                while True:
                    if count:
                        blocksize = count - total_sent
                        if blocksize <= 0:
                            break
                    try:
                        sent = self._green_io(_os.sendfile, _WRITE, (sockno, fileno, offset, blocksize))
                    except TimeoutError:
                        raise
                    except OSError as err:
                        if total_sent == 0:
                            # e.g. 'file' is not mmap()-able: the stdlib falls back on send()
                            raise _GiveupOnSendfile(err)
                        raise err from None
                    if sent == 0:
                        break  # EOF
                    offset += sent
                    total_sent += sent
                return total_sent
            finally:
                if total_sent > 0 and hasattr(file, "seek"):
                    file.seek(offset)

    # -- connecting ----------------------------------------------------------------

    def connect(self, address) -> None:
        if self._timeout == 0.0:
            _c_connect(self, address)  # the stdlib's BlockingIOError(EINPROGRESS) and all
            return
        err = self._connect(address)
        if err:
            raise OSError(err, _os.strerror(err))

    def connect_ex(self, address) -> int:
        if self._timeout == 0.0:
            return _c_connect_ex(self, address)
        try:
            return self._connect(address)
        except TimeoutError:
            return _EWOULDBLOCK  # what CPython's connect_ex() returns when its timeout expires

    def _connect(self, address) -> int:
        """Start connect(2) and wait for the result: 0 or its errno.

        Bad addresses raise as in the stdlib; the timeout raises TimeoutError.
        """
        err = _c_connect_ex(self, address)
        if err not in _CONNECT_PENDING:
            return err
        timeout = self._timeout
        deadline = None if timeout is None else _monotonic() + timeout
        if err == _EAGAIN:
            err = self._connect_unix_backlog(address, deadline)
            if err not in _CONNECT_PENDING:
                return err
        # In progress: wait until the fd is writable (or in error), then read
        # the outcome from SO_ERROR, as CPython does.  Wakeups may be spurious,
        # so a level-triggered poll(0) confirms that the attempt has ended.
        wait_fd = _get_hub().wait_fd
        fd = _c_fileno(self)
        while True:
            try:
                if deadline is None:
                    wait_fd(fd, _WRITE)
                else:
                    remaining = deadline - _monotonic()
                    if remaining <= 0.0:
                        raise TimeoutError("timed out")
                    wait_fd(fd, _WRITE, remaining, TimeoutError, "timed out")
            except TimeoutError:
                raise
            except OSError as exc:
                return exc.errno  # closed meanwhile: EBADF
            check = _real_poll()
            check.register(fd, _POLLOUT)
            if check.poll(0):
                return self.getsockopt(SOL_SOCKET, SO_ERROR)

    def _connect_unix_backlog(self, address, deadline) -> int:
        """Retry an AF_UNIX connect refused with EAGAIN (listener backlog full).

        The kernel signals no readiness for this, so this is the one wait by
        backoff: 1 ms doubling to 50 ms, up to the deadline.
        """
        from greenpatch.greenthread import sleep

        delay = 0.001
        while True:
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0.0:
                    raise TimeoutError("timed out")
                delay = min(delay, remaining)
            sleep(delay)
            delay = min(delay * 2, 0.05)
            err = _c_connect_ex(self, address)
            if err != _EAGAIN:
                return err

    # -- letting go of the fd ----------------------------------------------------------

    def _real_close(self, _ss=_csock, _peek=_peek_hub):
        # Like the stdlib's, no globals: this may run during interpreter shutdown.
        fd = _ss.fileno(self)
        if fd >= 0:
            hub = _peek()
            if hub is not None:
                hub.forget_fd(fd)
        _ss.close(self)

    def detach(self) -> int:
        """Close the socket object without closing the fd, and return the fd.

        The fd stays non-blocking (another green socket may share it).
        """
        fd = _c_fileno(self)
        if fd >= 0:
            hub = _peek_hub()
            if hub is not None:
                hub.forget_fd(fd)
        return super().detach()


for _name in ("recv", "recv_into", "recvfrom", "recvfrom_into", "recvmsg", "recvmsg_into", "send",
              "sendto", "sendmsg", "sendall", "connect", "connect_ex", "gettimeout", "settimeout",
              "setblocking", "getblocking"):
    if _name in vars(socket):  # the stdlib's documentation: the same promises
        vars(socket)[_name].__doc__ = getattr(_csock, _name).__doc__
del _name


def _dontwait(flags) -> bool:
    """True if ``flags`` (an int, MsgFlag included; else left to the C call to check) include MSG_DONTWAIT."""
    return isinstance(flags, int) and bool(flags & _DONTWAIT)


def _fast_timeout(value):
    """settimeout()'s value as the stdlib stores it, for the common types; else _UNSURE.

    CPython keeps timeouts in integer nanoseconds rounded up, so gettimeout()
    after settimeout(1e-10) is 1e-09; this does the same arithmetic.
    """
    if value is None:
        return None
    cls = value.__class__
    if cls is float:
        if 0.0 <= value < 9e9:
            ns = _ceil(value * 1e9)
            return ns / 1e9 if ns % 1_000_000_000 else float(ns // 1_000_000_000)
    elif cls is int:
        if 0 <= value < 9_000_000_000:
            return float(value)
    return _UNSURE


# The stdlib helpers that build sockets (create_connection, socketpair, fromfd, ...) build green ones.
_rebind_functions(_stdsocket, globals(), __name__, ("socket",))


# -- name resolution off the hub ------------------------------------------------
# The resolver (getaddrinfo and friends) blocks in C, so each lookup runs the
# stdlib function in a real OS thread of greenpatch.tpool and only the calling
# green thread waits; errors (gaierror, herror, ...) are raised from the
# worker and carried back unchanged.  A numeric address needs no resolver and
# skips the pool.

from greenpatch import tpool as _tpool  # noqa: E402

__implements__ += ["getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"]

_real_getaddrinfo = _original("socket", "getaddrinfo")
_real_gethostbyname = _original("socket", "gethostbyname")
_real_gethostbyname_ex = _original("socket", "gethostbyname_ex")
_real_gethostbyaddr = _original("socket", "gethostbyaddr")
_real_getnameinfo = _original("socket", "getnameinfo")
_inet_pton = _csocket.inet_pton


def _is_numeric_host(host) -> bool:
    """True for None and a literal IPv4/IPv6 address (no scope id): nothing to resolve."""
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    for family in (AF_INET, AF_INET6):
        try:
            _inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return True
    return False


def _is_numeric_port(port) -> bool:
    return port is None or isinstance(port, int) or (isinstance(port, (str, bytes)) and port.isdigit())


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if _is_numeric_host(host) and _is_numeric_port(port):
        return _real_getaddrinfo(host, port, family, type, proto, flags)
    return _tpool.execute(_real_getaddrinfo, host, port, family, type, proto, flags)


def gethostbyname(hostname, /):
    if isinstance(hostname, str):
        try:
            _inet_pton(AF_INET, hostname)
        except (OSError, ValueError):
            pass
        else:
            return _real_gethostbyname(hostname)
    return _tpool.execute(_real_gethostbyname, hostname)


def gethostbyname_ex(hostname, /):
    return _tpool.execute(_real_gethostbyname_ex, hostname)


def gethostbyaddr(ip_address, /):
    return _tpool.execute(_real_gethostbyaddr, ip_address)


def getnameinfo(sockaddr, flags, /):
    if not isinstance(sockaddr, tuple):
        # The C function's error, raised here: a traceback holds this frame,
        # and it must not keep the argument alive (the C call keeps nothing).
        del sockaddr
        raise TypeError("getnameinfo() argument 1 must be a tuple")
    if flags & NI_NUMERICHOST and flags & NI_NUMERICSERV:
        return _real_getnameinfo(sockaddr, flags)
    return _tpool.execute(_real_getnameinfo, sockaddr, flags)


for _name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
    globals()[_name].__doc__ = getattr(_stdsocket, _name).__doc__
del _name
