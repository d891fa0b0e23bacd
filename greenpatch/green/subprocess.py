"""Green twin of ``subprocess``: a ``Popen`` whose waits and pipe I/O wait on the hub.

Every public name of ``subprocess`` is re-exported; only ``Popen`` is
replaced (``run``, ``call``, ``check_call`` and ``check_output`` build it
through the patched module name).  The green ``Popen`` is a subclass of the
stdlib class whose ``_wait``, ``_try_wait`` and ``_communicate`` are the
stdlib's own code re-bound to globals where ``os``, ``time`` and the pipe
selector are the green twins, so they are green whether or not the ``os``,
``time`` or ``select`` groups are patched:

* ``wait()`` waits for the child through the green ``os.waitpid`` (a pidfd);
  ``wait(timeout=...)`` is CPython's WNOHANG loop with green sleeps.
* ``communicate()`` always takes the selector path, also for a single pipe
  and no timeout, where CPython calls the pipe file object's blocking
  ``read()``/``write()`` directly.

Not covered: ``Popen.__init__`` still reads the exec-error pipe with the real
``os.read`` unless the ``os`` group is patched (it returns once the child has
exec'd); reading ``proc.stdout`` yourself is a file object on a pipe (issue 6,
item 7).
"""

from __future__ import annotations

import subprocess as _subprocess
from subprocess import *  # noqa: F401,F403

from greenpatch.green import os as _green_os
from greenpatch.green import rebind as _rebind
from greenpatch.green import selectors as _green_selectors
from greenpatch.green import time as _green_time

globals().update({name: value for name, value in vars(_subprocess).items()
                  if not name.startswith("_") and name not in globals()})

__implements__ = ["Popen"]

_green_globals = dict(vars(_subprocess))
_green_globals.update(
    os=_green_os,
    time=_green_time,
    _PopenSelector=getattr(_green_selectors, "PollSelector", _green_selectors.SelectSelector),
)


_StdPopen = _subprocess.Popen


class Popen(_StdPopen):
    __doc__ = _StdPopen.__doc__

    _wait = _rebind(_StdPopen._wait, _green_globals, __name__)
    _try_wait = _rebind(_StdPopen._try_wait, _green_globals, __name__)
    _communicate = _rebind(_StdPopen._communicate, _green_globals, __name__)

    def communicate(self, input=None, timeout=None):
        if (timeout is not None or self._communication_started
                or (self.stdin is None and self.stdout is None and self.stderr is None)):
            return super().communicate(input, timeout)
        # CPython's one-pipe shortcut reads or writes the pipe's file object
        # directly, blocking the OS thread; the selector path is green.
        try:
            stdout, stderr = self._communicate(input, None, None)
        finally:
            self._communication_started = True
        self.wait()
        return (stdout, stderr)

    communicate.__doc__ = _StdPopen.communicate.__doc__


def __after_patch__(module) -> None:
    """Point the module's private aliases (bound at its import, which the patch itself may trigger) at the green twins."""
    module._waitpid = _green_os.waitpid
    module._PopenSelector = _green_globals["_PopenSelector"]
