"""Child process of the stdlib conformance runner: patch first, then run one CPython test module.

    python bootstrap.py LIB CONFIG.json

LIB is ``greenpatch``, ``gevent``, ``eventlet`` or ``none``; the patch is applied
before anything but ``os`` and ``sys`` (which the interpreter has already
imported) is touched.  CONFIG names the module, a records file, and the test
ids to leave out (those already finished or found hung in earlier attempts).

Every event is appended to the records file as one JSON line, written with a
single ``os.write`` as it happens, so a crash or a kill loses nothing already
recorded.  Each line carries this process's pid: a test that forks a child
which then runs on into unittest cannot forge records.  The runner
(``runner.py``) reads these lines; the vocabulary:

    hello   {lib, lib_version, python}
    plan    {tests: [[id, class, module], ...]}   the tests this attempt may run
    phase   {id}            a fixture is about to run: "<class>.setUpClass", "<module>.tearDownModule", ...
    start   {id}            a test starts
    end     {id, outcome, duration, detail?}   outcome: pass fail error skip xfail xpass blocked
    fixture {id, outcome, detail}   a fixture failed or skipped (unittest's _ErrorHolder)
    skipped {detail}        the module skipped itself at import (unittest.SkipTest)
    abort   {detail}        an exception escaped the test run (KeyboardInterrupt from a stray signal)
    done    {}              the run finished; what follows is interpreter shutdown
"""

import os
import sys

_ORIGINAL = {"write": os.write}  # the records are written unpatched (in a dict: no early-binding warning)
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.curdir) == _HERE:
    del sys.path[0]  # our own directory must not shadow anything a test imports


def _patch(lib):
    """Apply ``lib``'s monkey patch; return its version string."""
    if lib == "none":
        return ""
    if lib == "gevent":
        from gevent import monkey
        monkey.patch_all()
        import gevent
        return gevent.__version__
    if lib == "eventlet":
        import eventlet
        eventlet.monkey_patch()
        return eventlet.__version__
    if lib == "greenpatch":
        import greenpatch
        patch = getattr(greenpatch, "monkey_patch", None)
        if patch is None:
            from greenpatch.patcher import monkey_patch as patch
        patch()
        return getattr(greenpatch, "__version__", "")
    raise SystemExit(f"bootstrap: unknown lib {lib!r}")


if __name__ == "__main__":
    LIB = sys.argv[1]
    LIB_VERSION = _patch(LIB)

import faulthandler  # noqa: E402  (everything below runs patched)
import fnmatch  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import traceback  # noqa: E402
import unittest  # noqa: E402
from time import perf_counter  # noqa: E402

DETAIL_LIMIT = 3000
PASSING = ("pass", "xfail")
# When several things happen to one test, the worst wins.
_RANK = {None: 0, "pass": 1, "skip": 2, "xfail": 3, "blocked": 4, "xpass": 5, "fail": 6, "error": 7}


class Recorder:
    """Appends one JSON line per event to the records file."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.pid = os.getpid()

    def emit(self, ev, **fields):
        if os.getpid() != self.pid:
            return  # a forked child of a test
        fields["ev"] = ev
        fields["pid"] = self.pid
        data = (json.dumps(fields, default=str) + "\n").encode("utf-8", "replace")
        while data:
            data = data[_ORIGINAL["write"](self.fd, data):]


def _trim(text):
    text = str(text)
    return text if len(text) <= DETAIL_LIMIT else "..." + text[-DETAIL_LIMIT:]


def _fixture_id(description):
    """'setUpClass (test.test_x.Foo)' -> 'test.test_x.Foo.setUpClass'."""
    name, _, rest = description.partition(" (")
    if rest.endswith(")") and name.isidentifier():
        return f"{rest[:-1]}.{name}"
    return description


class Result(unittest.TestResult):
    """Records each test's outcome as it ends; subtest failures fail their test."""

    def __init__(self, rec, stall, watch):
        super().__init__()
        self.rec = rec
        self.stall = stall
        self.watch = watch
        self.current = None
        # A forked child has no faulthandler watchdog thread, but believes it has one:
        # cancelling it (at exit, or in stopTest) would wait forever.  Disarm across fork.
        os.register_at_fork(before=self._disarm_dump, after_in_parent=self._rearm_after_fork)

    def _rearm_after_fork(self):
        if self.current is not None:
            self._arm_dump()

    def startTest(self, test):
        super().startTest(test)
        uid = getattr(test, "_gp_uid", None) or test.id()
        self.current = {"id": uid, "outcome": None, "detail": None, "t0": perf_counter()}
        self.rec.emit("start", id=uid)
        if self.watch is not None:
            self.watch.test_started(uid)
        self._arm_dump()

    def _arm_dump(self):
        if self.stall and os.getpid() == self.rec.pid:
            # If the runner kills us for a stall, the log shows where every thread was.
            faulthandler.dump_traceback_later(max(1.0, self.stall * 0.9), exit=False)

    def _disarm_dump(self):
        if self.stall:
            faulthandler.cancel_dump_traceback_later()

    def _mark(self, test, outcome, detail=None):
        cur = self.current
        if isinstance(test, unittest.suite._ErrorHolder):
            self.rec.emit("fixture", id=_fixture_id(test.id()), outcome=outcome, detail=_trim(detail))
            return
        if cur is None:  # 3.12 reports a skip decorator without startTest/stopTest
            fields = {"id": getattr(test, "_gp_uid", None) or test.id(), "outcome": outcome, "duration": 0.0}
            if detail:
                fields["detail"] = _trim(detail)
            self.rec.emit("end", **fields)
            return
        if _RANK[outcome] >= _RANK[cur["outcome"]]:
            cur["outcome"] = outcome
            if detail is not None:
                cur["detail"] = detail

    def addSuccess(self, test):
        super().addSuccess(test)
        self._mark(test, "pass")

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test, "error", self._exc_info_to_string(err, test))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, "fail", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        if isinstance(test, unittest.case._SubTest):
            return  # a skipped subtest does not skip its test
        self._mark(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._mark(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, "xpass", "unexpected success")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            outcome = "fail" if issubclass(err[0], test.failureException) else "error"
            self._mark(test, outcome, f"{subtest.id()}\n" + self._exc_info_to_string(err, test))

    def stopTest(self, test):
        if os.getpid() == self.rec.pid:
            self._disarm_dump()
        cur, self.current = self.current, None
        if cur is not None:
            outcome = cur["outcome"]
            if outcome is None:  # unittest reports every test that completes; this one was interrupted
                outcome, cur["detail"] = "error", "the test ended without reporting an outcome (interrupted)"
            if self.watch is not None:
                blocked = self.watch.test_stopped(cur["id"])
                if blocked and outcome in PASSING:
                    outcome, cur["detail"] = "blocked", blocked
            fields = {"id": cur["id"], "outcome": outcome, "duration": round(perf_counter() - cur["t0"], 4)}
            if cur["detail"] is not None and outcome != "pass":
                fields["detail"] = _trim(cur["detail"])
            self.rec.emit("end", **fields)
        super().stopTest(test)


class Suite(unittest.TestSuite):
    """A flat suite that announces each fixture before running it (for stall attribution)."""

    rec = None  # set before use
    _pending_setup = None

    def _tearDownPreviousClass(self, test, result):
        previous = getattr(result, "_previousTestClass", None)
        current = test.__class__ if test is not None else None
        if previous is not None and previous != current and not getattr(previous, "_classSetupFailed", False):
            self.rec.emit("phase", id=f"{unittest.util.strclass(previous)}.tearDownClass")
        super()._tearDownPreviousClass(test, result)

    def _handleModuleFixture(self, test, result):
        module = test.__class__.__module__
        if module != self._get_previous_module(result):
            self._pending_setup = f"{module}.setUpModule"
        try:
            super()._handleModuleFixture(test, result)
        finally:
            self._pending_setup = None

    def _handleModuleTearDown(self, result):
        previous = self._get_previous_module(result)
        if previous is not None and not getattr(result, "_moduleSetUpFailed", False):
            self.rec.emit("phase", id=f"{previous}.tearDownModule")
        super()._handleModuleTearDown(result)
        if self._pending_setup is not None:
            self.rec.emit("phase", id=self._pending_setup)

    def _handleClassSetUp(self, test, result):
        cls = test.__class__
        if cls != getattr(result, "_previousTestClass", None) and not getattr(result, "_moduleSetUpFailed", False):
            self.rec.emit("phase", id=f"{unittest.util.strclass(cls)}.setUpClass")
        super()._handleClassSetUp(test, result)


def flatten(suite):
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from flatten(test)
        else:
            yield test


def _matches(uid, patterns):
    for pattern in patterns:
        if uid == pattern or uid.startswith(pattern + ".") or fnmatch.fnmatchcase(uid, pattern):
            return True
    return False


class Session:
    """Plans and runs suites for one module; a module's test_main() may run several."""

    def __init__(self, cfg, rec, watch):
        self.cfg = cfg
        self.rec = rec
        self.watch = watch
        self.module = cfg["module"]
        self.exclude = set(cfg.get("exclude", ()))
        self.match = cfg.get("match") or []
        self.seen = {}

    def uid(self, test):
        base = test.id()
        if not (base == self.module or base.startswith(self.module + ".")):
            base = f"{self.module}::{base}"  # doctests and other odd ids
        n = self.seen.get(base, 0) + 1
        self.seen[base] = n
        return base if n == 1 else f"{base}#{n}"

    def run_suite(self, suite):
        tests, plan = [], []
        for test in flatten(suite):
            uid = self.uid(test)
            if self.match and not _matches(uid, self.match):
                continue
            try:
                test._gp_uid = uid
            except AttributeError:
                pass
            plan.append([uid, unittest.util.strclass(test.__class__), test.__class__.__module__])
            if uid not in self.exclude:
                tests.append(test)
        self.rec.emit("plan", tests=plan)
        Suite.rec = self.rec
        result = Result(self.rec, self.cfg.get("stall"), self.watch)
        Suite(tests).run(result)
        return result


def setup_support(cfg):
    """What regrtest sets before running a test module, where it matters."""
    from test import support
    support.verbose = cfg.get("verbose", 0)
    support.failfast = False
    resources = cfg.get("resources", "default")
    if resources != "default":
        support.use_resources = resources
    if hasattr(support, "record_original_stdout"):
        support.record_original_stdout(sys.stdout)
    sys.path[:] = [os.path.abspath(p) if p else p for p in sys.path]
    faulthandler.enable(all_threads=True)
    import signal
    # A runner started in the background (``cmd &`` in a script, nohup) hands
    # its children SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler; the tests expect an interpreter started from a terminal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    for name in ("SIGALRM", "SIGUSR1"):  # as regrtest: dump tracebacks, then chain to the test's handler
        signum = getattr(signal, name, None)
        if signum is not None:
            faulthandler.register(signum, chain=True)
    return support


class SwitchWatch:
    """greenpatch's "did it switch" check: flag a test during which the hub was starved.

    A real OS thread (the original ``_thread`` functions, counted in
    ``greenpatch.hub.own_threads`` so deadlock detection ignores it) reads the
    main thread's hub through its debugging interface, as ``greenpatch.debug``'s
    blocked-hub detector does: ``hubs``, and per hub ``turns``, ``polling`` and
    ``counts()``.  If during a test one turn of the hub lasts longer than
    ``threshold`` seconds while the hub is not idle in its poller and has work
    waiting (ready callbacks, or green threads waiting on fds), something held
    the OS thread without switching while others waited: the test is
    ``blocked`` even if it passed.  Pure computation with nobody waiting is
    not flagged.
    """

    def __init__(self, threshold):
        from greenpatch import hub as hubmod
        from greenpatch.patcher import original
        self.hubmod = hubmod
        self.threshold = threshold
        self.test_id = None
        self.test_t0 = 0.0
        self.flagged = {}
        self.main_ident = original("_thread", "get_ident")()
        self._stop = original("_thread", "allocate_lock")()
        self._stop.acquire()
        hubmod.own_threads += 1
        original("_thread", "start_new_thread")(self._loop, ())

    def stop(self):
        """End the watcher thread (within threshold/4 seconds)."""
        self._stop.release()

    def test_started(self, uid):
        self.test_t0 = perf_counter()
        self.test_id = uid

    def test_stopped(self, uid):
        self.test_id = None
        return self.flagged.pop(uid, None)

    def _loop(self):
        last_turn, turn_seen = None, perf_counter()
        try:
            while not self._stop.acquire(True, self.threshold / 4):
                hub = self.hubmod.hubs.get(self.main_ident)
                uid = self.test_id
                now = perf_counter()
                if hub is None:
                    continue
                turn = hub.turns
                if turn != last_turn or hub.polling:
                    last_turn, turn_seen = turn, now
                    continue
                if uid is None or uid in self.flagged:
                    continue
                held = now - max(turn_seen, self.test_t0)
                if held < self.threshold:
                    continue
                counts = hub.counts()
                if not (counts.get("ready") or counts.get("fd_waiters")):
                    continue
                frame = sys._current_frames().get(self.main_ident)
                where = "".join(traceback.format_stack(frame)[-4:]) if frame is not None else "?"
                del frame
                if hub.turns == turn and not hub.polling:
                    self.flagged[uid] = (f"held the hub for {held:.1f}s while it had work {counts}; "
                                         f"main thread at:\n{where}")
        finally:
            self.hubmod.own_threads -= 1


def main():
    with open(sys.argv[2], encoding="utf-8") as f:
        cfg = json.load(f)
    rec = Recorder(cfg["records"])
    rec.emit("hello", lib=LIB, lib_version=LIB_VERSION, python=sys.version.split()[0])
    watch = None
    if cfg.get("switch_check") and LIB == "greenpatch":
        watch = SwitchWatch(float(cfg["switch_check"]))
    support = setup_support(cfg)
    session = Session(cfg, rec, watch)
    name = cfg["module"]
    try:
        module = importlib.import_module(name)
        test_main = getattr(module, "test_main", None)
        if callable(test_main) and sys.version_info < (3, 11):
            # regrtest <= 3.10 runs test_main(), which hands its suites to support._run_suite.
            support._run_suite = session.run_suite
            test_main()
        else:
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
            session.run_suite(suite)
    except unittest.SkipTest as exc:
        rec.emit("skipped", detail=str(exc))
    except BaseException:
        rec.emit("abort", detail=_trim(traceback.format_exc()))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)
    rec.emit("done")
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main()
