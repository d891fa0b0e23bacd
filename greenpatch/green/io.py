"""Green twin of ``io``: ``open`` waits on the hub for pipes, FIFOs, ttys and sockets.

Every public name of ``io`` is re-exported; ``__implements__`` lists the one
replaced, ``open``.  The patch also rebinds ``builtins.open`` (the same C
function as ``io.open`` in CPython, so the two never disagree), and through
the module name ``io.open`` makes ``os.fdopen``, ``pathlib.Path.open`` and the
pipes of ``subprocess.Popen`` green.

* ``open()`` on a path or fd that is a pipe, FIFO, character device (tty) or
  socket returns the usual stack, ``TextIOWrapper`` over a buffered object
  over a raw ``FileIO``, with the buffering rules, ``name``, ``mode``,
  ``closefd``, ``opener`` and line buffering for ttys of ``io.open``.  The raw
  object is this module's ``FileIO``, a subclass of ``io.FileIO`` whose
  ``read``/``readinto``/``readall`` first wait for the fd to poll readable and
  whose ``write`` writes in ``PIPE_BUF`` chunks after it polls writable (the
  one waiting path of ``greenpatch.green.os``); the fd's O_NONBLOCK flag is
  left alone.  The buffered objects are subclasses of ``io.BufferedReader``/
  ``BufferedWriter``/``BufferedRandom`` that let one green thread at a time in
  (the C classes lock per OS thread and would raise "reentrant call" for a
  second green thread); the others wait greenly, as threads wait for the
  buffer's lock.
* Opening a FIFO by path (which blocks in ``open(2)`` until the other end is
  opened) runs the open in a ``greenpatch.tpool`` worker; to spot one, a path
  is ``stat()``-ed first.  A socket's fd, non-blocking under the patch, is
  waited on as the blocking socket it stands for.
* Regular files, directories and block devices get the real ``io.open``
  objects, unchanged: their reads do not wait for anyone, only for the disk.
  ``GREENPATCH_TPOOL_FILES=1`` in the environment (or
  ``tpool_regular_files(True)``) makes their reads and writes run in tpool
  workers instead.
* Closing a reading object while another green thread waits in it wakes that
  thread with ``OSError(EBADF)`` (a real thread would stay blocked); closing a
  writing object flushes first, as the stdlib does.

Arguments are validated by the real ``io.open`` itself, so every error is the
stdlib's.  Not covered: ``io.FileIO(fd)`` made directly (use
``greenpatch.green.io.FileIO``), ``sys.stdout``/``sys.stderr`` (the hub itself
reports errors there), and ``input()`` on an interactive terminal (CPython
reads it with GNU readline in C).
"""

from __future__ import annotations

import io as _io
import os as _os
import stat as _stat
import sys as _sys
from io import *  # noqa: F401,F403  (the twin exposes every public name of the original)
from typing import Any

from greenlet import getcurrent as _getcurrent

from greenpatch import tpool as _tpool
from greenpatch.green import os as _green_os
from greenpatch.hub import park as _park
from greenpatch.hub import peek_hub as _peek_hub
from greenpatch.hub import wake_one as _wake_one
from greenpatch.patcher import original as _original
from greenpatch.patcher import record_original as _record_original

globals().update({name: value for name, value in vars(_io).items()
                  if not name.startswith("_") and name not in globals()})

__implements__ = ["open"]

_real_open = _original("io", "open")
_real_lock = _original("_thread", "allocate_lock")  # this module may be imported after the thread patch
_RealFileIO = _io.FileIO
_get_blocking = _os.get_blocking
_finalizing = _sys.is_finalizing
_fstat = _os.fstat
_POLL = "poll"    # wait for readiness on the hub, then make the real call
_TPOOL = "tpool"  # make the real call in a tpool worker
_READ_ALL_CHUNK = 65536
_tpool_files = _os.environ.get("GREENPATCH_TPOOL_FILES", "") not in ("", "0")


def tpool_regular_files(enabled: bool = True) -> None:
    """Make ``open()`` of regular files read and write through tpool workers (or stop, with False).

    Off by default (``GREENPATCH_TPOOL_FILES=1`` turns it on): a read of a
    regular file waits only for the disk, and a thread round trip costs more
    than a cached read.  Turn it on for slow or network file systems.
    Affects files opened afterwards.
    """
    global _tpool_files
    _tpool_files = bool(enabled)


def _kind(st_mode: int) -> str | None:
    if _stat.S_ISFIFO(st_mode) or _stat.S_ISCHR(st_mode) or _stat.S_ISSOCK(st_mode):
        return _POLL
    if _tpool_files and _stat.S_ISREG(st_mode):
        return _TPOOL
    return None


class FileIO(_RealFileIO):
    """``io.FileIO`` whose reads and writes wait on the hub (pipes, FIFOs, ttys, sockets) or run in tpool.

    On a regular file (with tpool files off), a directory or a block device it
    behaves exactly like ``io.FileIO``; so it does on an fd in non-blocking
    mode (reads return None, as the caller asked).
    """

    _gp_kind: str | None = None
    _gp_socket = False

    def __init__(self, file: Any, mode: str = "r", closefd: bool = True, opener: Any = None) -> None:
        if opener is None and not isinstance(file, int) and _is_fifo_path(file):
            opener = _WorkerOpener(None)
        super().__init__(file, mode, closefd, opener)
        st_mode = _fstat(self.fileno()).st_mode
        self._gp_kind = _kind(st_mode)
        # Under the patch a socket's fd is non-blocking whatever its timeout
        # (green sockets wait themselves): treat it as blocking, as the
        # real socket it stands for is.
        self._gp_socket = _stat.S_ISSOCK(st_mode)

    def _gp_in_tpool(self, check: Any) -> bool:
        """True if this call goes to a tpool worker (a regular file with tpool files on)."""
        return self._gp_kind is _TPOOL and check() and not _finalizing()

    def _gp_wait_readable(self) -> bool:
        """Wait until a read cannot block; False if this fd does not need it (the real call is made as is)."""
        if self._gp_kind is _POLL and self.readable() and not _finalizing():  # readable() raises once closed
            fd = self.fileno()
            if self._gp_socket or _get_blocking(fd):
                _green_os._wait_readable(fd)
                return True
        return False

    def readinto(self, buffer: Any) -> int | None:
        if self._gp_in_tpool(self.readable):
            view = memoryview(buffer).cast("B")
            # The worker reads into its own bytes, never into the caller's
            # buffer: the caller may be killed while the worker still runs.
            data = _tpool.execute(_RealFileIO.read, self, len(view))
            view[:len(data)] = data
            return len(data)
        while True:
            waited = self._gp_wait_readable()
            count = _RealFileIO.readinto(self, buffer)
            if count is not None or not (waited and self._gp_socket):
                return count  # (None on a socket: another reader was first; wait again)

    def read(self, size: Any = -1) -> bytes | None:
        try:
            wanted = -1 if size is None else size.__index__()
        except AttributeError:
            return _RealFileIO.read(self, size)  # raises the real TypeError
        if wanted < 0:
            return self.readall()
        if self._gp_in_tpool(self.readable):
            return _tpool.execute(_RealFileIO.read, self, wanted)
        while True:
            waited = self._gp_wait_readable()
            data = _RealFileIO.read(self, wanted)
            if data is not None or not (waited and self._gp_socket):
                return data

    def readall(self) -> bytes | None:
        if self._gp_in_tpool(self.readable):
            return _tpool.execute(_RealFileIO.readall, self)
        if not self._gp_wait_readable():
            return _RealFileIO.readall(self)
        chunks = []
        while True:
            chunk = _RealFileIO.read(self, _READ_ALL_CHUNK)
            if chunk is None and self._gp_socket:
                self._gp_wait_readable()
                continue
            if not chunk:
                if chunk is None and not chunks:
                    return None  # the fd was made non-blocking meanwhile
                break
            chunks.append(chunk)
            self._gp_wait_readable()
        return b"".join(chunks)

    def write(self, data: Any) -> int | None:
        if self._gp_kind is _POLL and self.writable() and not _finalizing():
            fd = self.fileno()
            if self._gp_socket or _get_blocking(fd):
                try:
                    memoryview(data)
                except TypeError:
                    return _RealFileIO.write(self, data)  # raises the real TypeError
                return _green_os._write_in_chunks(fd, data, self._gp_write_chunk)
        elif self._gp_in_tpool(self.writable):
            return _tpool.execute(_RealFileIO.write, self, bytes(data))
        return _RealFileIO.write(self, data)

    def _gp_write_chunk(self, chunk: Any) -> int:
        return _RealFileIO.write(self, chunk) or 0  # (None: a non-blocking socket was full after all; wait again)

    def _gp_abort_waiters(self) -> None:
        """Wake green threads waiting on this fd with OSError(EBADF): it is about to be closed."""
        if self._gp_kind is _POLL and self.closefd and not self.closed and not _finalizing():
            hub = _peek_hub()
            if hub is not None:
                hub.forget_fd(self.fileno())

    def close(self) -> None:
        self._gp_abort_waiters()
        _RealFileIO.close(self)


def _in_turn(self: Any, real: Any, args: tuple, kwargs: dict) -> Any:
    """Call ``real(self, ...)`` once no other green thread is inside this buffered object.

    The C buffered classes lock per OS thread: a second green thread entering
    while the first waits inside for the raw file would get "RuntimeError:
    reentrant call".  So green threads take turns here, waiting greenly, as
    threads wait for the buffer's lock.  The owner's own nested calls (close
    calls flush) go straight in; calls from other OS threads meet the C lock.
    """
    if _finalizing():
        return real(self, *args, **kwargs)  # greenlets are gone; the C class relaxes its lock too
    current = _getcurrent()
    owner = self._gp_owner
    if owner is current:
        return real(self, *args, **kwargs)
    if owner is not None:
        _park(self._gp_waiters, lambda: self._gp_owner is None)
    self._gp_owner = current
    try:
        return real(self, *args, **kwargs)
    finally:
        self._gp_owner = None
        if self._gp_waiters:
            _wake_one(self._gp_waiters)


def _one_at_a_time(base: type, name: str) -> Any:
    real = getattr(base, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _in_turn(self, real, args, kwargs)

    method.__name__ = name
    method.__qualname__ = f"{base.__name__}.{name}"
    method.__doc__ = real.__doc__
    return method


def _green_buffered(base: type, names: tuple[str, ...]) -> type:
    """A subclass of the C buffered class ``base`` that lets one green thread at a time into ``names``."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._gp_waiters = []
        base.__init__(self, *args, **kwargs)

    namespace = {name: _one_at_a_time(base, name) for name in names}
    namespace.update(__init__=__init__, __doc__=base.__doc__, __module__=__name__, _gp_owner=None)
    return type(base.__name__, (base,), namespace)


# The methods whose C code takes the buffer's lock (tell, detach and a
# reader's flush do not).
_READS = ("read", "read1", "readinto", "readinto1", "readline", "peek", "seek", "truncate")
_WRITES = ("write", "flush", "seek", "truncate", "close")

BufferedReader = _green_buffered(_io.BufferedReader, _READS)
BufferedWriter = _green_buffered(_io.BufferedWriter, _WRITES)
BufferedRandom = _green_buffered(_io.BufferedRandom, tuple(dict.fromkeys(_READS + _WRITES)))


def _close_reader(self: Any) -> None:
    # A reader waiting for data is inside; wake it with EBADF first so that
    # close() cannot hang behind it (BufferedReader.flush does not lock).
    if not _finalizing():
        try:
            raw = self.raw
        except ValueError:
            raw = None  # detached: the real close raises the real error
        if isinstance(raw, FileIO):
            raw._gp_abort_waiters()
    return _in_turn(self, _io.BufferedReader.close, (), {})


_close_reader.__doc__ = _io.BufferedReader.close.__doc__
_close_reader.__name__ = "close"
_close_reader.__qualname__ = "BufferedReader.close"
BufferedReader.close = _close_reader


class _Divert(BaseException):
    """Raised by the opener to take a non-regular fd away from the real ``io.open``."""


class _WorkerOpener:
    """An ``opener`` that opens FIFOs in a tpool worker and diverts non-regular fds to the green stack."""

    __slots__ = ("opener", "divert")

    def __init__(self, opener: Any, divert: bool = False) -> None:
        self.opener = opener
        self.divert = divert

    def __call__(self, path: Any, flags: int) -> Any:
        opener = self.opener or _default_opener
        if _is_fifo_path(path):
            fd = _open_in_worker(opener, path, flags)
        else:
            fd = opener(path, flags)
        if not self.divert or not isinstance(fd, int) or fd < 0:
            return fd  # the real open raises what it raises for a bad fd
        try:
            kind = _kind(_fstat(fd).st_mode)
        except OSError:
            return fd
        if kind is None:
            return fd
        raise _Divert(fd)


def _default_opener(path: Any, flags: int) -> int:
    return _os.open(path, flags, 0o666)


def _is_fifo_path(path: Any) -> bool:
    try:
        return _stat.S_ISFIFO(_os.stat(path).st_mode)
    except (OSError, TypeError, ValueError):
        return False


def _open_in_worker(opener: Any, path: Any, flags: int) -> Any:
    """``opener(path, flags)`` in a tpool worker; the fd is closed if the caller is gone when it arrives."""
    lock = _real_lock()
    state: dict[str, Any] = {}

    def job() -> Any:
        fd = opener(path, flags)
        with lock:
            if "abandoned" not in state:
                state["fd"] = fd
                return fd
        if isinstance(fd, int) and fd >= 0:
            _os.close(fd)
        return -1

    try:
        return _tpool.execute(job)
    except BaseException:
        with lock:
            state["abandoned"] = True
            fd = state.pop("fd", None)
        if isinstance(fd, int) and fd >= 0:
            _os.close(fd)
        raise


def open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
         errors: str | None = None, newline: str | None = None, closefd: bool = True,
         opener: Any = None) -> Any:
    if isinstance(file, int):
        try:
            kind = _kind(_fstat(file).st_mode)
        except (OSError, OverflowError, ValueError):
            kind = None  # the real open raises the real error
        if kind is None:
            return _real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        decided = _probe(file, mode, buffering, encoding, errors, newline, closefd)
        return _layer(FileIO(file, decided[0], closefd), mode, buffering, newline, decided, file)
    if opener is None:
        try:
            kind = _kind(_os.stat(file).st_mode)
        except (OSError, TypeError, ValueError):
            kind = None
        if kind is None:
            return _real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
    # The real open checks the arguments, computes the flags and calls the
    # opener, which takes the fd away from it if it is not a regular file.
    try:
        return _real_open(file, mode, buffering, encoding, errors, newline, closefd,
                          _WorkerOpener(opener, divert=True))
    except _Divert as diverted:
        fd = diverted.args[0]
    try:
        decided = _probe(fd, mode, buffering, encoding, errors, newline, False)
        raw = FileIO(fd, decided[0], True)
    except BaseException:
        _os.close(fd)
        raise
    return _layer(raw, mode, buffering, newline, decided, _os.fspath(file))


open.__doc__ = _real_open.__doc__


def _probe(fd: int, mode: str, buffering: int, encoding: str | None, errors: str | None,
           newline: str | None, closefd: bool) -> tuple[str, bool, tuple[str, str] | None]:
    """Let the real open check every argument on ``fd``; return its raw mode, line buffering and text codec.

    The probe is opened with closefd=False, so closing it leaves the fd open;
    nothing is read or written.  If it fails where the real ``open(fd,
    closefd=True)`` would already have made (and so closes) its raw file,
    the fd is closed too, as the real one would be.
    """
    try:
        probe = _real_open(fd, mode, buffering, encoding, errors, newline, False)
    except BaseException:
        if closefd and _fails_after_raw(mode, buffering, encoding, errors, newline):
            try:
                _os.close(fd)
            except OSError:
                pass
        raise
    try:
        inner = getattr(probe, "buffer", probe)
        rawmode = getattr(inner, "raw", inner).mode
        line_buffering = getattr(probe, "line_buffering", False)
        text = (probe.encoding, probe.errors) if inner is not probe else None
    finally:
        probe.close()
    return rawmode, line_buffering, text


def _fails_after_raw(mode: str, buffering: int, encoding: str | None, errors: str | None,
                     newline: str | None) -> bool:
    """True if the real open gets as far as the opener with these arguments (its error comes later)."""
    try:
        _real_open("", mode, buffering, encoding, errors, newline, True, _stop_at_opener)
    except _Divert:
        return True
    except BaseException:
        return False
    return False


def _stop_at_opener(path: Any, flags: int) -> int:
    raise _Divert(-1)


def _layer(raw: FileIO, mode: str, buffering: int, newline: str | None,
           decided: tuple[str, bool, tuple[str, str] | None], name: Any) -> Any:
    """Buffer and wrap ``raw`` as ``io.open`` does (on error, ``raw`` is closed)."""
    rawmode, line_buffering, text = decided
    try:
        raw.name = name
        if buffering == 1 or (buffering < 0 and raw.isatty()):
            buffering = -1
        if buffering < 0:
            buffering = raw._blksize
        if buffering == 0:
            return raw  # binary: the probe refused unbuffered text
        if "+" in rawmode:
            buffer = BufferedRandom(raw, buffering)
        elif "r" in rawmode:
            buffer = BufferedReader(raw, buffering)
        else:
            buffer = BufferedWriter(raw, buffering)
        if text is None:
            return buffer
        wrapper = TextIOWrapper(buffer, text[0], text[1], newline, line_buffering)
        wrapper.mode = mode
        return wrapper
    except BaseException:
        raw.close()
        raise


def _green_stdin() -> None:
    """Replace an untouched ``sys.stdin`` on a pipe, FIFO, socket or tty by a green one on fd 0."""
    stdin = _sys.stdin
    if stdin is None or stdin is not _sys.__stdin__ or type(stdin) is not TextIOWrapper:
        return
    try:
        if stdin.fileno() != 0 or _kind(_fstat(0).st_mode) is not _POLL:
            return
        decided = _probe(0, "r", -1, stdin.encoding, stdin.errors, "\n", False)
        _sys.stdin = _layer(FileIO(0, decided[0], False), "r", -1, "\n", decided, stdin.name)
    except (OSError, ValueError, AttributeError):
        return


def __after_patch__(module: Any) -> None:
    """``builtins.open`` is ``io.open`` under another name: rebind it too; make an untouched sys.stdin green."""
    import builtins

    _record_original("builtins", "open", builtins.open)
    builtins.open = open
    _green_stdin()
