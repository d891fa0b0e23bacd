"""A gunicorn worker: ``gunicorn -k greenpatch.contrib.gunicorn.GreenWorker app:app``.

Each worker process patches the standard library when it starts (after the
fork, before the application is imported, unless ``--preload`` imported it
in the arbiter), then serves every connection in its own green thread, at
most ``--worker-connections`` at once; beyond that it stops accepting.  It is
gunicorn's own ``AsyncWorker`` (HTTP parsing, keep-alive, ``sendfile``,
``max_requests``), driven the way gunicorn's gevent worker drives it:

* the heartbeat (``notify``) runs in a green thread once a second, so a
  request that blocks the hub with unpatched blocking code stops the
  heartbeat and the arbiter's ``--timeout`` kills the worker, as with gevent;
* keep-alive connections wait at most ``--keep-alive`` seconds for the next
  request;
* on SIGTERM the worker stops accepting, lets in-flight requests finish for
  up to ``--graceful-timeout`` seconds, then kills what is left and exits;
  SIGQUIT/SIGINT exit at once, as with every gunicorn worker;
* several workers share the listening sockets; each one accepts on its own hub.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from gunicorn.workers.base_async import AsyncWorker

import greenpatch
from greenpatch.green import socket as _gsocket
from greenpatch.hub import get_hub, park, wake_all, wake_one

__all__ = ["GreenWorker"]


class GreenWorker(AsyncWorker):
    """gunicorn's async worker on greenpatch green threads."""

    def patch(self) -> None:
        """Patch the stdlib and put the listening sockets on green socket objects."""
        greenpatch.monkey_patch()
        self.sockets = [_gsocket.socket(s.FAMILY, _gsocket.SOCK_STREAM, fileno=s.sock.detach())
                        for s in self.sockets]

    def init_process(self) -> None:
        self.patch()
        super().init_process()

    def init_signals(self) -> None:
        super().init_signals()
        # gunicorn points the signal wakeup fd at a pipe nobody reads in this
        # worker; point it back at the hub, so a signal wakes the loop at once.
        hub = get_hub()
        signal.set_wakeup_fd(hub._wakeup_write, warn_on_full_buffer=False)

    def timeout_ctx(self) -> greenpatch.Timeout:
        return greenpatch.Timeout(self.cfg.keepalive or None, False)

    def notify(self) -> None:
        super().notify()
        if self.ppid != os.getppid():
            self.log.info("Parent changed, shutting down: %s", self)
            sys.exit(0)

    # -- serving ----------------------------------------------------------------------

    def run(self) -> None:
        self._connections: set = set()
        self._slot_waiters: list = []
        self._idle_waiters: list = []
        acceptors = []
        for listener in self.sockets:
            listener.setblocking(True)
            acceptors.append(greenpatch.spawn(self._accept_loop, listener))

        while self.alive:
            self.notify()
            greenpatch.sleep(1.0)

        # Stop accepting; let in-flight requests finish until graceful_timeout.
        for acceptor in acceptors:
            acceptor.kill()
        for listener in self.sockets:
            try:
                listener.close()
            except OSError:
                pass
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self._connections and time.monotonic() < deadline:
            self.notify()
            park(self._idle_waiters, self._idle, min(1.0, max(0.0, deadline - time.monotonic())))
        if self._connections:
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for conn in tuple(self._connections):
                conn.kill(block=False)
            park(self._idle_waiters, self._idle, 1.0)

    def _idle(self) -> bool:
        return not self._connections

    def _has_slot(self) -> bool:
        return len(self._connections) < self.worker_connections

    def _accept_loop(self, listener: Any) -> None:
        while self.alive:
            if not self._has_slot():
                park(self._slot_waiters, self._has_slot)
                continue
            try:
                client, addr = listener.accept()
            except OSError:
                if not self.alive:
                    return
                continue
            client.setblocking(True)
            conn = greenpatch.spawn(self._serve, listener, client, addr)
            self._connections.add(conn)
            if self.cfg.workers > 1:
                greenpatch.sleep(0)  # let the other workers take a share of a burst

    def _serve(self, listener: Any, client: Any, addr: Any) -> None:
        try:
            self.handle(listener, client, addr)
        finally:
            self._connections.discard(greenpatch.getcurrent())
            wake_one(self._slot_waiters)
            if not self._connections:
                wake_all(self._idle_waiters)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except (greenpatch.GreenletExit, SystemExit):
            return False

    # -- signals: the handlers may run inside the hub, where nothing may wait ---------

    def handle_quit(self, sig: int, frame: Any) -> None:
        greenpatch.spawn(self._quit)

    def _quit(self) -> None:
        self.alive = False
        self.cfg.worker_int(self)
        greenpatch.sleep(0.1)
        _exit_main(0)

    def handle_abort(self, sig: int, frame: Any) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        _exit_main(1)

    def handle_usr1(self, sig: int, frame: Any) -> None:
        greenpatch.spawn(super().handle_usr1, sig, frame)


def _exit_main(status: int) -> None:
    """Raise SystemExit in the main green thread, which ends the worker process.

    (Raised in a request's green thread it would end only that green thread.)
    The hub hands a SystemExit raised by one of its callbacks to the main
    green thread.
    """
    get_hub().schedule(_raise_exit, status)


def _raise_exit(status: int) -> None:
    raise SystemExit(status)
