"""Differential tests: the same threaded program, real threads vs. ``python -m greenpatch``.

Each program in tests/scripts/diff_*.py takes its parameters as one JSON
argument and prints output that is the same in every schedule (sorted, or
ordered by design).  Each case runs the program twice, with plain python and
under the CLI, and compares stdout, stderr and the exit status.  Hypothesis
draws the parameters (chunkings, sizes, line lengths, delays); examples are
few, since each costs two interpreter starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")  # in the [test] extra

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.timeout(60)

SCRIPTS = Path(__file__).parent / "scripts"
FEW = settings(max_examples=4, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow])


def run(mode: str, script: str, params: dict) -> subprocess.CompletedProcess:
    prefix = [sys.executable] if mode == "threads" else [sys.executable, "-m", "greenpatch"]
    return subprocess.run(prefix + [str(SCRIPTS / script), json.dumps(params)],
                          capture_output=True, text=True, timeout=30)


def assert_same(script: str, params: dict) -> str:
    threads = run("threads", script, params)
    green = run("green", script, params)
    assert threads.returncode == 0, threads.stderr
    assert (green.returncode, green.stderr) == (threads.returncode, threads.stderr), green.stderr
    assert green.stdout == threads.stdout
    return green.stdout


# -- producer / consumer ------------------------------------------------------------


@FEW
@given(producers=st.integers(1, 4), consumers=st.integers(1, 4), items=st.integers(0, 40),
       maxsize=st.integers(1, 5), seed=st.integers(0, 1000))
def test_producer_consumer(producers, consumers, items, maxsize, seed):
    out = assert_same("diff_queue.py", dict(producers=producers, consumers=consumers, items=items,
                                             maxsize=maxsize, seed=seed))
    assert "all distinct and complete: True" in out
    assert "in order: False" not in out


# -- makefile over sockets -----------------------------------------------------------


@FEW
@given(lines=st.lists(st.integers(0, 3000), min_size=0, max_size=30),
       chunks=st.lists(st.integers(1, 9000), min_size=1, max_size=8),
       pause=st.booleans())
def test_makefile_reads(lines, chunks, pause):
    out = assert_same("diff_makefile.py", dict(lines=lines, chunks=chunks, pause=pause))
    assert "False" not in out


def test_makefile_reads_byte_by_byte():
    out = assert_same("diff_makefile.py", dict(lines=[0, 1, 2, 100, 0, 8193], chunks=[1], pause=False))
    assert "False" not in out


# -- Timer / Event / Barrier ------------------------------------------------------------


@FEW
@given(parties=st.integers(2, 8), delays=st.lists(st.integers(0, 15), min_size=1, max_size=5))
def test_timer_event_barrier_choreography(parties, delays):
    out = assert_same("diff_sync.py", dict(parties=parties, delays=delays))
    assert "barrier actions: [0, 1, 2]" in out


# -- socketserver ------------------------------------------------------------------------


@FEW
@given(clients=st.integers(1, 12), requests=st.integers(1, 6),
       sizes=st.lists(st.integers(0, 20000), min_size=1, max_size=4))
def test_threading_tcp_server(clients, requests, sizes):
    out = assert_same("diff_socketserver.py", dict(clients=clients, requests=requests, sizes=sizes))
    assert "threads left: 1" in out
