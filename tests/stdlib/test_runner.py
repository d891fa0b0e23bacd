"""Tests of the stdlib conformance runner itself, on tiny synthetic test modules.

These run the real bootstrap in real subprocesses, unpatched (``lib=none``),
with a short stall so the whole file takes a few seconds.
"""

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.stdlib import runner  # noqa: E402
from tests.stdlib.runner import Config, KnownEntry  # noqa: E402

FAKE = '''
import ctypes, os, sys, time, unittest

class A(unittest.TestCase):
    def test_1_pass(self): pass
    def test_2_fail(self): self.assertEqual(1, 2)
    def test_3_error(self): raise RuntimeError("boom")
    @unittest.skip("not here")
    def test_4_skip(self): pass
    @unittest.expectedFailure
    def test_5_xfail(self): self.assertTrue(False)
    @unittest.expectedFailure
    def test_6_xpass(self): pass
    def test_7_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertNotEqual(i, 1)
    def test_8_hang(self): time.sleep(3600)
    def test_9_crash(self): ctypes.string_at(0)
    def test_zz_after(self): pass

class B(unittest.TestCase):
    @classmethod
    def setUpClass(cls): raise RuntimeError("class setup broken")
    def test_x(self): pass

class C(unittest.TestCase):
    @classmethod
    def setUpClass(cls): time.sleep(3600)
    def test_y(self): pass

class D(unittest.TestCase):
    @classmethod
    def setUpClass(cls): raise unittest.SkipTest("no D here")
    def test_z(self): pass

class E(unittest.TestCase):
    def test_fork(self):
        pid = os.fork()
        if pid == 0:   # a child that runs on into unittest must not forge records
            return
        os.waitpid(pid, 0)
'''


def write_module(tmp_path, name, source):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def config(tmp_path, **kw):
    kw.setdefault("stall", 2.0)
    kw.setdefault("timeout", 60)
    kw.setdefault("lib", "none")
    return Config(python=sys.executable, pythonpath=(tmp_path,), log_dir=tmp_path / "logs",
                  poll_interval=0.05, **kw)


def outcomes(run):
    return {uid.split(".", 1)[1]: e["outcome"] for uid, e in list(run.tests.items()) + list(run.fixtures.items())}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fake")
    module = write_module(tmp_path, "gpfake", FAKE)
    run = runner.run_module(config(tmp_path), module)
    run.tmp_path = tmp_path
    return run


def test_outcomes_hang_and_crash_are_recorded_and_the_module_goes_on(fake_run):
    got = outcomes(fake_run)
    assert got == {
        "A.test_1_pass": "pass", "A.test_2_fail": "fail", "A.test_3_error": "error", "A.test_4_skip": "skip",
        "A.test_5_xfail": "xfail", "A.test_6_xpass": "xpass", "A.test_7_subtests": "fail",
        "A.test_8_hang": "hung", "A.test_9_crash": "crashed", "A.test_zz_after": "pass",
        "B.setUpClass": "error", "B.test_x": "not-run",
        "C.setUpClass": "hung", "C.test_y": "not-run",
        "D.setUpClass": "skip", "D.test_z": "skip", "E.test_fork": "pass",
    }
    assert fake_run.status == "crashed"
    # hang in a test, crash in a test, hang in a class fixture: three restarts.
    assert fake_run.attempts == 4
    assert "SIGSEGV" in fake_run.tests["gpfake.A.test_9_crash"]["detail"]
    assert any("hung: gpfake.A.test_8_hang" in e for e in fake_run.events)
    assert "i=1" in fake_run.tests["gpfake.A.test_7_subtests"]["detail"]
    assert fake_run.plan[0] == "gpfake.A.test_1_pass" and len(fake_run.plan) == 14
    # faulthandler dumped the hung test's stack into the log before the kill
    log = (fake_run.tmp_path / "logs" / "gpfake.log").read_text()
    assert "Timeout" in log and "test_8_hang" in log


def test_known_table_accounting(fake_run, tmp_path):
    table_path = tmp_path / "known.txt"
    table_path.write_text(textwrap.dedent("""\
        # comment line
        gpfake.A.test_1_pass  # wrongly listed: must be reported as an unexpected pass
        gpfake.A.test_2_fail  # known
        gpfake.A.test_6_xpass [flaky]  # flaky entries may pass or fail
        gpfake.A.test_7_subtests  # known
        gpfake.A.test_8_hang [hung]  # blocks forever
        gpfake.A.test_9_crash [crashed]  # segfaults
        gpfake.B.setUpClass  # known
        gpfake.A.test_gone  # no such test any more

        othermod.X.test_y  # a module not run: left alone
    """))
    table = runner.read_known(table_path)
    assert table["gpfake.A.test_8_hang"] == KnownEntry("blocks forever", frozenset({"hung"}))
    runs = {"gpfake": fake_run}
    verdict = runner.judge(runs, table)
    assert verdict.unexpected_passes == ["gpfake.A.test_1_pass"]
    assert verdict.unexpected_failures == {"gpfake.A.test_3_error": "error", "gpfake.C.setUpClass": "hung"}
    assert verdict.stale == ["gpfake.A.test_gone"]
    # the unpatched table excuses failures too
    verdict = runner.judge(runs, table, baseline_known={"gpfake.A.test_3_error": KnownEntry("env")})
    assert verdict.unexpected_failures == {"gpfake.C.setUpClass": "hung"}

    new = runner.updated_known(runs, table, {}, full_modules=True)
    assert "gpfake.A.test_1_pass" not in new and "gpfake.A.test_gone" not in new
    assert new["gpfake.A.test_2_fail"].reason == "known"
    assert new["gpfake.A.test_3_error"].reason == "TODO reason (error: RuntimeError: boom)"
    assert new["gpfake.C.setUpClass"] == KnownEntry("TODO reason (hung)", frozenset({"hung"}))
    assert new["othermod.X.test_y"].reason == "a module not run: left alone"
    assert new["gpfake.A.test_6_xpass"].tags == {"flaky"}
    runner.write_known(table_path, new, "header line")
    assert runner.read_known(table_path) == new
    assert not runner.judge(runs, new).unexpected_failures


def test_known_hangs_are_not_run(tmp_path):
    module = write_module(tmp_path, "gphang", """
        import time, unittest
        class T(unittest.TestCase):
            def test_a(self): pass
            def test_b_hang(self): time.sleep(3600)
            def test_c(self): pass
    """)
    started = time.monotonic()
    run = runner.run_module(config(tmp_path, skip_ids=frozenset({"gphang.T.test_b_hang"})), module)
    assert time.monotonic() - started < 2.0  # no stall was waited for
    assert outcomes(run) == {"T.test_a": "pass", "T.test_b_hang": "hung", "T.test_c": "pass"}
    assert run.attempts == 1
    assert "not run" in run.tests["gphang.T.test_b_hang"]["detail"]


def test_a_class_whose_tests_all_hang_is_given_up(tmp_path):
    module = write_module(tmp_path, "gpclass", """
        import time, unittest
        class T(unittest.TestCase):
            def test_1(self): time.sleep(3600)
            def test_2(self): time.sleep(3600)
            def test_3(self): time.sleep(3600)
        class U(unittest.TestCase):
            def test_4(self): pass
    """)
    run = runner.run_module(config(tmp_path, stall=1.0, max_class_hangs=2), module)
    assert outcomes(run) == {"T.test_1": "hung", "T.test_2": "hung", "T.test_3": "not-run", "U.test_4": "pass"}
    assert any("gave up on gpclass.T after 2 hangs" in e for e in run.events)


def test_module_level_skip_import_error_and_timeout(tmp_path):
    skipped = write_module(tmp_path, "gpskip", "import unittest\nraise unittest.SkipTest('needs epoll')\n")
    run = runner.run_module(config(tmp_path), skipped)
    assert run.status == "skipped" and run.skip_reason == "needs epoll" and not run.tests

    broken = write_module(tmp_path, "gpbroken", "import no_such_module_here\n")
    run = runner.run_module(config(tmp_path), broken)
    assert run.status == "import-error"
    assert "no_such_module_here" in run.fixtures["gpbroken.<import>"]["detail"]

    slow = write_module(tmp_path, "gpslow", """
        import time, unittest
        class T(unittest.TestCase):
            def test_a(self): time.sleep(0.5)
            def test_b(self): time.sleep(0.5)
            def test_c(self): time.sleep(0.5)
    """)
    run = runner.run_module(config(tmp_path, timeout=0.8, stall=10), slow)
    assert run.status == "timeout"
    got = outcomes(run)
    assert got["T.test_a"] == "pass" and got["T.test_b"] == "timeout" and got["T.test_c"] == "not-run"


def test_record_reader_keeps_whole_lines_of_one_pid(tmp_path):
    path = tmp_path / "records.jsonl"
    reader = runner.RecordReader(path, pid=42)
    assert reader.read() == []
    with open(path, "w") as f:
        f.write(json.dumps({"ev": "start", "id": "a", "pid": 42}) + "\n")
        f.write(json.dumps({"ev": "start", "id": "forged", "pid": 43}) + "\n")
        f.write('{"ev": "end", "id": "a", "pi')
    assert reader.read() == [{"ev": "start", "id": "a", "pid": 42}]
    with open(path, "a") as f:
        f.write('d": 42, "outcome": "pass"}\n')
    assert reader.read() == [{"ev": "end", "id": "a", "pid": 42, "outcome": "pass"}]


def test_known_line_parsing():
    m = runner._LINE.match("test.test_x.A.test_b [hung, flaky]  # why: it # hangs")
    assert m["id"] == "test.test_x.A.test_b" and m["tags"] == "hung, flaky" and m["reason"] == "why: it # hangs"
    assert runner._LINE.match("test.test_x.A.test_b")["reason"] is None
    assert runner.module_of("test.test_x.A.test_b") == "test.test_x"
    assert runner.module_of("test.test_x::_threading_local#2") == "test.test_x"
    assert runner.module_of("test.test_x.<import>") == "test.test_x"
    assert runner.normalize_module("socket") == "test.test_socket"
    assert runner.normalize_module("test_socket") == "test.test_socket"
    assert runner.short_detail("Traceback...\n  File x\nAssertionError: 1 != 2\n") == "AssertionError: 1 != 2"


def test_cli_end_to_end_exit_codes(tmp_path):
    """A real stdlib module through main(): an unexpected pass fails the run; --update-known fixes the table."""
    known = tmp_path / "known.txt"
    known.write_text("test.test_sched.TestCase.test_enter  # listed on purpose\n")
    argv = ["sched", "--lib", "none", "--known", str(known), "--results-dir", str(tmp_path / "results"),
            "--json", str(tmp_path / "out.json"), "--stall", "20", "-q"]
    assert runner.main(argv) == 1
    data = json.loads((tmp_path / "out.json").read_text())
    tests = data["runs"]["none"]["modules"]["test.test_sched"]["tests"]
    assert tests["test.test_sched.TestCase.test_enter"]["outcome"] == "pass"
    assert runner.main(argv + ["--update-known"]) == 1
    assert runner.read_known(known) == {}
    assert runner.main(argv) == 0


def test_a_patched_lib_without_a_table_is_a_clear_usage_error(tmp_path, capsys):
    """No table for this lib and version: exit 2 at once, naming the file and the command that writes it."""
    missing = tmp_path / "greenpatch-9.9.txt"
    argv = ["sched", "--lib", "greenpatch", "--known", str(missing), "--results-dir", str(tmp_path / "results"), "-q"]
    assert runner.main(argv) == 2
    err = capsys.readouterr().err
    assert f"no known-failures table {missing}" in err and "--update-known" in err
    assert not (tmp_path / "results" / "logs").exists()  # nothing was run


def test_switch_check_flags_a_test_that_blocks_the_hub():
    """The watcher sees a green thread waiting on an fd while the main greenlet blocks for real."""
    greenpatch = pytest.importorskip("greenpatch")
    hubmod = pytest.importorskip("greenpatch.hub")
    if not all(hasattr(hubmod, name) for name in ("hubs", "own_threads")) or not hasattr(hubmod.Hub, "counts"):
        pytest.skip("this greenpatch's hub has no debugging interface (hubs, turns, polling, counts)")
    from tests.stdlib import bootstrap
    import socket
    a, b = socket.socketpair()
    a.setblocking(False)
    own = hubmod.own_threads
    watch = bootstrap.SwitchWatch(0.3)
    try:
        waiter = greenpatch.spawn(hubmod.get_hub().wait_fd, a.fileno())
        greenpatch.sleep(0)  # the waiter parks on the fd
        watch.test_started("blocking")
        greenpatch.original("time", "sleep")(0.9)  # real sleep: the hub cannot run
        assert "held the hub" in (watch.test_stopped("blocking") or "")
        watch.test_started("switching")
        greenpatch.sleep(0.9)  # green sleep: the hub runs meanwhile
        assert watch.test_stopped("switching") is None
        watch.test_started("computing")
        b.send(b"x")
        waiter.wait()  # nobody waits any more
        greenpatch.original("time", "sleep")(0.9)
        assert watch.test_stopped("computing") is None
    finally:
        watch.stop()
        a.close()
        b.close()
    time.sleep(0.3)
    assert hubmod.own_threads == own


def test_switch_check_end_to_end_under_greenpatch(tmp_path):
    """In a patched child, a passing test that holds the hub while a green thread waits is 'blocked'."""
    pytest.importorskip("greenpatch.debug")
    module = write_module(tmp_path, "gpblock", """
        import socket, threading, time, unittest
        import greenpatch

        class T(unittest.TestCase):
            def test_blocks(self):
                a, b = socket.socketpair()
                t = threading.Thread(target=a.recv, args=(1,))
                t.start()
                time.sleep(0.05)                               # the thread now waits on the fd
                greenpatch.original("time", "sleep")(1.0)      # a real sleep holds the hub
                b.send(b"x")
                t.join()

            def test_switches(self):
                a, b = socket.socketpair()
                t = threading.Thread(target=a.recv, args=(1,))
                t.start()
                time.sleep(1.0)                                # green: the hub runs
                b.send(b"x")
                t.join()
    """)
    run = runner.run_module(config(tmp_path, lib="greenpatch", switch_check=0.3, stall=20), module)
    if "gpblock.<import>" in run.fixtures:
        pytest.skip(f"greenpatch.monkey_patch() fails here: {run.fixtures['gpblock.<import>']['detail'][-300:]}")
    assert outcomes(run) == {"T.test_blocks": "blocked", "T.test_switches": "pass"}
    assert "held the hub" in run.tests["gpblock.T.test_blocks"]["detail"]
