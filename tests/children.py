"""Child interpreters and heartbeats shared by the tests.

Patching is process-wide, so patched scenarios run in a child interpreter that
prints one JSON line.  A heartbeat green thread (10 ms sleeps) shows the hub
kept running the other green threads meanwhile.
"""

import json
import subprocess
import sys
import textwrap
import time

import greenpatch

PATCH = "import greenpatch\ngreenpatch.monkey_patch()\n"

HEARTBEAT = """
import json, sys, threading, time

class Heartbeat:
    '''A green thread sleeping 10 ms at a time; done() says how late it ever woke.'''

    def __init__(self):
        self.lateness = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        last = time.monotonic()
        while not self.stop:
            time.sleep(0.01)
            now = time.monotonic()
            self.lateness.append(now - last - 0.01)
            last = now

    def done(self):
        self.stop = True
        self.thread.join()
        return {"beats": len(self.lateness), "late": max(self.lateness)}
"""

RUN_THREADS = """
def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""


def program(code: str, *, prelude: str = "", patch: bool = True) -> str:
    """The child's source: ``PATCH`` if ``patch``, ``HEARTBEAT``, ``prelude``, then ``code`` dedented."""
    return (PATCH if patch else "") + HEARTBEAT + textwrap.dedent(prelude) + textwrap.dedent(code)


def run_child(code: str, *, prelude: str = "", patch: bool = True, timeout: float = 30,
              env: dict | None = None, args=(), script_dir=None) -> dict:
    """Run ``program(code, ...)`` in a child interpreter; return the JSON of its last stdout line.

    By default the source runs with ``-c`` (patched first by ``PATCH`` if ``patch``).  With
    ``script_dir`` it is written to ``script_dir/program.py`` (spawn children re-import it)
    and run from there, under ``python -m greenpatch`` if ``patch``.
    """
    if script_dir is None:
        command, cwd = [sys.executable, "-c", program(code, prelude=prelude, patch=patch)], None
    else:
        script = script_dir / "program.py"
        script.write_text(program(code, prelude=prelude, patch=False))
        command, cwd = [sys.executable, *(["-m", "greenpatch"] if patch else []), str(script)], script_dir
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_kept_beating(beat: dict, min_beats: int = 3, max_late: float = 0.1) -> None:
    """``beat`` (a ``Heartbeat.done()``) beat at least ``min_beats`` times, always under ``max_late`` s late."""
    assert beat["beats"] >= min_beats, beat
    assert beat["late"] < max_late, beat


def heartbeat(lateness: list, stop: list) -> None:
    """In-process heartbeat for ``greenpatch.spawn``: sleep 10 ms at a time until ``stop``, noting lateness."""
    last = time.monotonic()
    while not stop:
        greenpatch.sleep(0.01)
        now = time.monotonic()
        lateness.append(now - last - 0.01)
        last = now
