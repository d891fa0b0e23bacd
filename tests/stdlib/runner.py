"""Run CPython's own test modules under a monkey patch, one subprocess per module.

``python -m tests.stdlib --help`` for the options; README.md beside this file
for what the numbers and the known-failures tables mean.

Each module runs in ``bootstrap.py`` (patch first, then unittest with a result
class that appends one JSON line per event).  This side reads those lines as
they come and keeps, per module, an outcome for every test id.  When nothing
new arrives for ``--stall`` seconds the child is killed, whatever it was doing
(a test, a class or module fixture, interpreter shutdown) is recorded as
``hung``, and the module is started again without it and without everything
that already finished.  A child that dies the same way is ``crashed``.

Outcomes of a test id:
    pass xfail           passed (an expected failure counts, as in unittest)
    skip                 skipped (neutral: never unexpected, but not "kept" either)
    fail error xpass     failed (xpass: an unexpected success)
    blocked              passed, but starved the hub (--switch-check, greenpatch only)
    hung crashed         the test (or fixture) stalled / the process died in it
    not-run              never ran: its setUpClass hung or crashed, or the module timed out
Ids that are not tests name fixtures and module-level events:
    <class>.setUpClass, <module>.tearDownModule, ...   (as unittest names them)
    <module>.<import> <module>.<shutdown> <module>.<timeout> <test id>.<after>
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BOOTSTRAP = HERE / "bootstrap.py"
KNOWN_DIR = HERE / "known"
RESULTS_DIR = HERE / "results"

LIBS = ("greenpatch", "gevent", "eventlet", "none")
PASSING = frozenset({"pass", "xfail"})
BAD = frozenset({"fail", "error", "xpass", "blocked", "hung", "crashed", "timeout"})

ALL_MODULES = (
    "test_socket", "test_select", "test_selectors", "test_poll", "test_epoll", "test_time",
    "test_threading", "test_thread", "test_threading_local", "test_threadsignals", "test_queue",
    "test_socketserver", "test_httplib", "test_httpservers", "test_urllib2_localnet", "test_ftplib",
    "test_smtplib", "test_poplib", "test_imaplib", "test_telnetlib", "test_xmlrpc", "test_wsgiref",
    "test_timeout", "test_ssl", "test_subprocess", "test_signal", "test_os", "test_concurrent_futures",
    "test_logging", "test_asyncore", "test_asynchat", "test_sched", "test_context", "test_contextlib",
    "test_weakref",
)
SUBSETS = {
    "ci": ("test_socket", "test_select", "test_selectors", "test_time", "test_threading", "test_thread",
           "test_threading_local", "test_queue", "test_socketserver"),
    "all": ALL_MODULES,
}
# First guess at the slow ones, so -j starts them first; a previous result file refines it.
SLOW_FIRST = ("test_concurrent_futures", "test_subprocess", "test_socket", "test_ssl", "test_signal",
              "test_logging", "test_threading", "test_os", "test_xmlrpc", "test_httpservers")


# -- known-failures tables -----------------------------------------------------

@dataclass
class KnownEntry:
    reason: str
    tags: frozenset = frozenset()   # "hung": not run unless --run-hung; "flaky": may pass; "crashed": informational


_LINE = re.compile(r"^(?P<id>\S+)(?:\s+\[(?P<tags>[\w,\s-]*)\])?\s*(?:#\s?(?P<reason>.*))?$")


def known_path(lib: str, minor: str, directory: Path = KNOWN_DIR) -> Path:
    return directory / f"{lib}-{minor}.txt"


def read_known(path: Path) -> dict[str, KnownEntry]:
    """``test.id [tag,...]  # reason`` per line; blank lines and ``#`` comments are ignored."""
    table: dict[str, KnownEntry] = {}
    if not path.exists():
        return table
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"{path}:{number}: cannot parse {raw!r}")
        tags = frozenset(t.strip() for t in (m["tags"] or "").split(",") if t.strip())
        table[m["id"]] = KnownEntry((m["reason"] or "").strip(), tags)
    return table


def write_known(path: Path, table: dict[str, KnownEntry], header: str) -> None:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    module = None
    for uid in sorted(table, key=_sort_key):
        entry = table[uid]
        mod = module_of(uid)
        if mod != module:
            lines.append("")
            module = mod
        tags = f" [{','.join(sorted(entry.tags))}]" if entry.tags else ""
        lines.append(f"{uid}{tags}  # {entry.reason}" if entry.reason else f"{uid}{tags}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).lstrip("\n") + "\n", encoding="utf-8")


def _sort_key(uid: str):
    return (module_of(uid), uid)


def module_of(uid: str) -> str:
    """'test.test_x.Foo.test_y' -> 'test.test_x' (also for pseudo ids and ``::`` ids)."""
    head = uid.split("::", 1)[0]
    parts = head.split(".")
    return ".".join(parts[:2]) if parts[0] == "test" and len(parts) > 1 else parts[0]


def short_detail(detail: str | None, limit: int = 110) -> str:
    """The last meaningful line of a traceback, for a one-line reason."""
    if not detail:
        return ""
    lines = [ln.strip() for ln in str(detail).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    for candidate in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Failure|Interrupt|Exit|Denied|Timeout)\b", candidate):
            line = candidate
            break
    line = line.replace("#", "(hash)")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# -- one module ------------------------------------------------------------------

@dataclass
class ModuleRun:
    module: str
    plan: list = field(default_factory=list)               # test ids in run order
    classes: dict = field(default_factory=dict)            # test id -> (class, module)
    tests: dict = field(default_factory=dict)              # test id -> {"outcome", "duration"?, "detail"?}
    fixtures: dict = field(default_factory=dict)           # pseudo id -> {"outcome", "detail"?}
    events: list = field(default_factory=list)             # human-readable notes: hangs, crashes, restarts
    status: str = "ok"                                     # ok skipped import-error hung crashed timeout
    attempts: int = 0
    wall: float = 0.0
    skip_reason: str = ""

    def outcome(self, uid: str) -> str | None:
        entry = self.tests.get(uid) or self.fixtures.get(uid)
        return entry["outcome"] if entry else None

    def to_json(self) -> dict:
        return {
            "status": self.status, "attempts": self.attempts, "wall": round(self.wall, 2),
            "skip_reason": self.skip_reason, "events": self.events, "plan": self.plan,
            "tests": self.tests, "fixtures": self.fixtures,
        }

    @classmethod
    def from_json(cls, module: str, data: dict) -> "ModuleRun":
        run = cls(module)
        run.status, run.attempts, run.wall = data["status"], data["attempts"], data["wall"]
        run.skip_reason, run.events, run.plan = data.get("skip_reason", ""), data["events"], data["plan"]
        run.tests, run.fixtures = data["tests"], data["fixtures"]
        return run


@dataclass
class Config:
    python: str
    lib: str
    stall: float = 60.0
    timeout: float = 1200.0
    resources: object = "default"
    match: list = field(default_factory=list)
    skip_ids: frozenset = frozenset()    # known hangs of this lib, not run (recorded as hung)
    env_skip_ids: frozenset = frozenset()  # known to hang unpatched too, not run (recorded as not-run)
    switch_check: float = 0.0
    log_dir: Path | None = None
    poll_interval: float = 0.1
    max_attempts: int = 200
    max_class_hangs: int = 5             # after this many hangs in one class, its other tests are not run
    pythonpath: tuple = ()               # extra import directories for the child (tests use it)


class RecordReader:
    """Reads whole JSON lines appended to a file, keeping only those from one pid."""

    def __init__(self, path: Path, pid: int):
        self.path = path
        self.pid = pid
        self.offset = 0
        self.partial = b""

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        records = []
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("pid") == self.pid:
                records.append(record)
        return records


class _Attempt:
    """What one child process got to: its activity when it stopped, and whether it finished."""

    def __init__(self):
        self.activity = ("import", None)  # (kind, id): import, plan, phase, test, after, done
        self.done = False
        self.skipped = None
        self.abort = None


def run_module(cfg: Config, module: str, stop: threading.Event | None = None) -> ModuleRun:
    """Run one test module to the end, restarting it around hung and crashing tests."""
    run = ModuleRun(module)
    started = time.monotonic()
    deadline = started + cfg.timeout
    workdir = Path(tempfile.mkdtemp(prefix=f"gpstdlib-{cfg.lib}-{module.rsplit('.', 1)[-1]}-"))
    log_path = (cfg.log_dir / f"{module}.log") if cfg.log_dir else workdir / "output.log"
    if cfg.log_dir:
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
    excluded: set[str] = set()
    for uid in cfg.skip_ids | cfg.env_skip_ids:
        if module_of(uid) == module:
            excluded.add(uid)
    try:
        while True:
            run.attempts += 1
            attempt = _run_attempt(cfg, run, workdir, log_path, excluded, deadline, stop)
            if attempt == "stop":
                break
            _give_up_on_hanging_classes(run, cfg.max_class_hangs)
            remaining = [uid for uid in run.plan if uid not in run.tests and uid not in excluded]
            if not remaining or run.attempts >= cfg.max_attempts:
                break
            excluded.update(run.tests)
    finally:
        run.wall = time.monotonic() - started
        shutil.rmtree(workdir, ignore_errors=True)
    for uid in cfg.env_skip_ids:
        if uid in run.classes and uid not in run.tests:
            run.tests[uid] = {"outcome": "not-run", "detail": "hangs unpatched too (none table): not run"}
    for uid in cfg.skip_ids:
        if uid in run.classes and uid not in run.tests:
            run.tests[uid] = {"outcome": "hung", "detail": "known to hang: not run (use --run-hung)"}
    for uid in run.plan:
        if uid not in run.tests:
            run.tests[uid] = {"outcome": "not-run", "detail": "never reached"}
    if run.status == "ok":
        outcomes = {e["outcome"] for e in list(run.tests.values()) + list(run.fixtures.values())}
        if "crashed" in outcomes:
            run.status = "crashed"
        elif "hung" in outcomes:
            run.status = "hung"
    return run


def _give_up_on_hanging_classes(run: ModuleRun, limit: int) -> None:
    """After ``limit`` hangs in one class, record its tests not yet run as not-run.

    A class whose every test hangs (a protocol the patch does not make green
    yet, say TLS) would otherwise cost ``--stall`` seconds per test.  Once the
    hangs are in the table (and so not run), the rest of the class runs again.
    """
    if limit <= 0:
        return
    hangs: dict[str, int] = {}
    for uid, entry in run.tests.items():
        if entry["outcome"] == "hung" and uid in run.classes and "not run" not in entry.get("detail", ""):
            cls = run.classes[uid][0]
            hangs[cls] = hangs.get(cls, 0) + 1
    for cls, count in hangs.items():
        if count < limit:
            continue
        skipped = [uid for uid in run.plan if run.classes[uid][0] == cls and uid not in run.tests]
        for uid in skipped:
            run.tests[uid] = {"outcome": "not-run", "detail": f"{count} tests of {cls} hung: the rest was not run"}
        if skipped:
            run.events.append(f"gave up on {cls} after {count} hangs ({len(skipped)} tests not run)")


def _child_env(cfg: Config, workdir: Path) -> dict:
    env = dict(os.environ)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp)
    env["PYTHONUNBUFFERED"] = "1"
    path = [*map(str, cfg.pythonpath), env.get("PYTHONPATH", "")]
    if cfg.lib == "greenpatch":
        path.append(str(REPO))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, path))
    return env


def _run_attempt(cfg: Config, run: ModuleRun, workdir: Path, log_path: Path, excluded: set,
                 deadline: float, stop: threading.Event | None) -> str:
    """One child process; returns "stop" when the module cannot or need not go on."""
    records = workdir / f"records-{run.attempts}.jsonl"
    config = workdir / f"config-{run.attempts}.json"
    config.write_text(json.dumps({
        "module": run.module, "records": str(records), "exclude": sorted(excluded),
        "match": cfg.match, "stall": cfg.stall, "resources": cfg.resources, "verbose": 0,
        "switch_check": cfg.switch_check,
    }), encoding="utf-8")
    cwd = workdir / f"cwd-{run.attempts}"  # fresh: a killed attempt may leave files behind
    cwd.mkdir()
    log_start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        log.write(f"\n===== {run.module} attempt {run.attempts} (lib={cfg.lib}, "
                  f"{len(excluded)} ids excluded) =====\n".encode())
        log.flush()
        child = subprocess.Popen(
            [cfg.python, str(BOOTSTRAP), cfg.lib, str(config)], cwd=cwd, env=_child_env(cfg, workdir),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    reader = RecordReader(records, child.pid)
    state = _Attempt()
    last_progress = time.monotonic()
    why = None
    try:
        while True:
            got = reader.read()
            if got:
                last_progress = time.monotonic()
                for record in got:
                    _apply(run, state, record)
            rc = child.poll()
            if rc is not None:
                for record in reader.read():
                    _apply(run, state, record)
                break
            now = time.monotonic()
            if stop is not None and stop.is_set():
                why = "interrupted"
            elif now > deadline:
                why = "timeout"
            elif now - last_progress > (cfg.stall if state.activity[0] != "done" else min(cfg.stall, 30.0)):
                why = "stall"
            if why:
                _kill(child)
                for record in reader.read():
                    _apply(run, state, record)
                rc = child.returncode
                break
            time.sleep(cfg.poll_interval)
    finally:
        if child.poll() is None:
            _kill(child)
    if why is None and rc is not None and rc < 0 and state.activity[0] != "done" \
            and time.monotonic() - last_progress >= 0.85 * cfg.stall:
        # Stalled long enough for the child's faulthandler to dump its stack
        # (at 0.9 x stall), and died then: the dump itself can crash while a
        # greenlet has swapped the thread's frames.  The test hung.
        why = "stall-crash"
    return _conclude(run, state, why, rc, lambda: _log_tail(log_path, log_start))


def _log_tail(path: Path, start: int, limit: int = 1500) -> str:
    """The end of what the child wrote in this attempt (a crash's faulthandler dump, an import error)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(start, path.stat().st_size - limit))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _kill(child: subprocess.Popen) -> None:
    """Kill the child's whole process group (it is a session leader) and reap it."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _apply(run: ModuleRun, state: _Attempt, record: dict) -> None:
    ev = record.get("ev")
    if ev == "plan":
        for uid, cls, mod in record["tests"]:
            if uid not in run.classes:
                run.plan.append(uid)
                run.classes[uid] = (cls, mod)
        state.activity = ("plan", None)
    elif ev == "phase":
        state.activity = ("phase", record["id"])
    elif ev == "start":
        state.activity = ("test", record["id"])
    elif ev == "end":
        entry = {"outcome": record["outcome"], "duration": record.get("duration")}
        if record.get("detail"):
            entry["detail"] = record["detail"]
        run.tests[record["id"]] = entry
        state.activity = ("after", record["id"])
    elif ev == "fixture":
        entry = {"outcome": record["outcome"]}
        if record.get("detail"):
            entry["detail"] = record["detail"]
        run.fixtures[record["id"]] = entry
        _fixture_consequences(run, record["id"], record["outcome"])
    elif ev == "skipped":
        state.skipped = record.get("detail", "")
    elif ev == "abort":
        state.abort = record.get("detail", "")
    elif ev == "done":
        state.done = True
        state.activity = ("done", None)


def _members(run: ModuleRun, fixture_id: str) -> list[str]:
    """The planned tests a class or module fixture stands in front of."""
    owner, _, kind = fixture_id.rpartition(".")
    if kind in ("setUpClass", "tearDownClass"):
        return [uid for uid in run.plan if run.classes[uid][0] == owner]
    if kind in ("setUpModule", "tearDownModule"):
        return [uid for uid in run.plan if run.classes[uid][1] == owner]
    return []


def _fixture_consequences(run: ModuleRun, fixture_id: str, outcome: str) -> None:
    """A setUpClass/setUpModule that failed or skipped decides its tests' outcome."""
    if not fixture_id.endswith((".setUpClass", ".setUpModule")):
        return
    for uid in _members(run, fixture_id):
        if uid not in run.tests:
            if outcome == "skip":
                run.tests[uid] = {"outcome": "skip", "detail": f"{fixture_id} skipped"}
            else:
                run.tests[uid] = {"outcome": "not-run", "detail": f"{fixture_id}: {outcome}"}


def _conclude(run: ModuleRun, state: _Attempt, why: str | None, rc: int | None, log_tail=lambda: "") -> str:
    module = run.module
    if state.skipped is not None:
        run.status, run.skip_reason = "skipped", state.skipped
        return "stop"
    if why == "interrupted":
        run.events.append("interrupted by the runner")
        run.status = "interrupted"
        return "stop"
    if state.done and why is None and rc == 0:
        return "stop"
    kind, uid = state.activity
    if why == "timeout":
        outcome, note = "timeout", "module timeout"
    elif why == "stall":
        outcome, note = "hung", "no progress"
    elif why == "stall-crash":
        outcome, note = "hung", f"no progress, then {_describe_rc(rc)} during faulthandler's stack dump"
    elif state.abort is not None:
        outcome, note = "error", "an exception escaped the test run"
    else:
        outcome, note = "crashed", _describe_rc(rc)
    detail = state.abort if state.abort is not None else note
    if outcome == "crashed":
        detail = f"{note}; the log ends with:\n{log_tail()}"
    if kind == "done":
        run.fixtures[f"{module}.<shutdown>"] = {"outcome": outcome, "detail": f"after the last test: {detail}"}
        run.events.append(f"{outcome} at interpreter shutdown ({note})")
        return "stop"
    if why == "timeout":
        if kind == "test":
            run.tests[uid] = {"outcome": "timeout", "detail": "running when the module timed out"}
        run.fixtures[f"{module}.<timeout>"] = {"outcome": "timeout", "detail": f"module exceeded its timeout while in {kind} {uid or ''}"}
        run.events.append(f"timeout in {kind} {uid or ''}")
        run.status = "timeout"
        return "stop"
    if kind == "test":
        run.tests[uid] = {"outcome": outcome, "detail": detail}
        run.events.append(f"{outcome}: {uid} ({note})")
        return "again"
    if kind == "phase":
        run.fixtures[uid] = {"outcome": outcome, "detail": detail}
        run.events.append(f"{outcome}: {uid} ({note})")
        for member in _members(run, uid):
            if member not in run.tests:
                run.tests[member] = {"outcome": "not-run", "detail": f"{uid} {outcome}"}
        return "again"
    if kind == "after":
        run.fixtures[f"{uid}.<after>"] = {"outcome": outcome, "detail": detail}
        run.events.append(f"{outcome} after {uid} ({note})")
        return "again"
    # Before or while planning: the module cannot be run at all.
    run.fixtures[f"{module}.<import>"] = {"outcome": outcome, "detail": detail}
    run.events.append(f"{outcome} while importing/collecting ({note})")
    run.status = "import-error" if outcome == "error" else outcome
    return "stop"


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "no exit status"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc} before finishing"


# -- a whole run -----------------------------------------------------------------

def interpreter_info(python: str) -> dict:
    code = ("import json, sys, platform; print(json.dumps({'version': platform.python_version(), "
            "'minor': '%d.%d' % sys.version_info[:2], 'executable': sys.executable}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def lib_version(python: str, lib: str) -> str:
    """The lib's version in that interpreter; raises RuntimeError if it cannot be imported."""
    if lib == "none":
        return ""
    code = f"import {lib}; print(getattr({lib}, '__version__', '?'))"
    env = dict(os.environ)
    if lib == "greenpatch":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    out = subprocess.run([python, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env)
    if out.returncode:
        raise RuntimeError(f"{python} cannot import {lib}: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def present_modules(python: str, names: list[str]) -> tuple[list[str], list[str]]:
    """(present, missing) among ``test.<name>`` in that interpreter's test package."""
    code = ("import importlib.util, json, sys; names = json.loads(sys.argv[1]); "
            "print(json.dumps([n for n in names if importlib.util.find_spec(n) is not None]))")
    full = [n if n.startswith("test.") else f"test.{n}" for n in names]
    out = subprocess.run([python, "-c", code, json.dumps(full)], capture_output=True, text=True, check=True)
    present = set(json.loads(out.stdout))
    return [n for n in full if n in present], [n for n in full if n not in present]


def normalize_module(name: str) -> str:
    name = name.strip()
    if name.startswith("test."):
        return name
    if not name.startswith("test_"):
        name = "test_" + name
    return "test." + name


def results_path(lib: str, version: str, directory: Path = RESULTS_DIR) -> Path:
    return directory / f"{lib}-{version}.json"


def load_result(path: Path) -> dict[str, ModuleRun] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {name: ModuleRun.from_json(name, mod) for name, mod in data.get("modules", {}).items()}


# -- accounting ------------------------------------------------------------------

@dataclass
class Verdict:
    unexpected_failures: dict = field(default_factory=dict)   # id -> outcome
    unexpected_passes: list = field(default_factory=list)
    stale: list = field(default_factory=list)                 # known ids now skipped, not-run or gone
    expected: int = 0


def judge(runs: dict[str, ModuleRun], known: dict[str, KnownEntry],
          baseline_known: dict[str, KnownEntry] | None = None, full_modules: bool = True) -> Verdict:
    """Compare a run with its known-failures table (and, for a patched run, the unpatched table)."""
    verdict = Verdict()
    baseline_known = baseline_known or {}
    observed = {}
    for run in runs.values():
        for uid, entry in list(run.tests.items()) + list(run.fixtures.items()):
            observed[uid] = entry["outcome"]
    for uid, outcome in observed.items():
        if outcome in BAD:
            if uid in known or uid in baseline_known:
                verdict.expected += 1
            else:
                verdict.unexpected_failures[uid] = outcome
    for uid, entry in known.items():
        if module_of(uid) not in runs:
            continue
        outcome = observed.get(uid)
        if outcome in PASSING and "flaky" not in entry.tags:
            verdict.unexpected_passes.append(uid)
        elif outcome is None or outcome in ("skip", "not-run"):
            if outcome is not None or full_modules:
                verdict.stale.append(uid)
    return verdict


def updated_known(runs: dict[str, ModuleRun], known: dict[str, KnownEntry],
                  baseline_known: dict[str, KnownEntry], full_modules: bool, todo: bool = True) -> dict[str, KnownEntry]:
    """The table rewritten from a run: bad outcomes become entries; reasons already written are kept."""
    table = dict(known)
    observed = {}
    for run in runs.values():
        for uid, entry in list(run.tests.items()) + list(run.fixtures.items()):
            observed[uid] = entry
    for uid in list(table):
        if module_of(uid) not in runs:
            continue
        entry = observed.get(uid)
        if entry is None:
            if full_modules:
                del table[uid]  # the test is gone
        elif entry["outcome"] not in BAD and "flaky" not in table[uid].tags:
            del table[uid]
    for uid, entry in observed.items():
        outcome = entry["outcome"]
        if outcome not in BAD or uid in baseline_known:
            continue
        old = table.get(uid)
        tags = set(old.tags) if old else set()
        if outcome in ("hung", "crashed"):
            tags.add(outcome)
        if old and old.reason and not old.reason.startswith("TODO"):
            reason = old.reason
        else:
            seen = short_detail(entry.get("detail")) if outcome not in ("hung", "crashed") else ""
            hint = f"{outcome}: {seen}" if seen else outcome
            reason = f"TODO reason ({hint})" if todo else hint
        table[uid] = KnownEntry(reason, frozenset(tags))
    return table


@dataclass
class ModuleRow:
    module: str
    planned: int = 0
    unpatched: int | None = None
    passed: int = 0
    kept: int | None = None
    failed: int = 0
    skipped: int = 0
    hung: int = 0
    crashed: int = 0
    not_run: int = 0
    wall: float = 0.0
    status: str = ""


def module_row(run: ModuleRun, base: ModuleRun | None) -> ModuleRow:
    row = ModuleRow(run.module.split(".", 1)[-1], wall=run.wall, status=run.status)
    row.planned = len(run.tests)
    outcomes = {uid: e["outcome"] for uid, e in run.tests.items()}
    row.passed = sum(1 for o in outcomes.values() if o in PASSING)
    row.failed = sum(1 for o in outcomes.values() if o in ("fail", "error", "xpass", "blocked", "timeout"))
    row.skipped = sum(1 for o in outcomes.values() if o == "skip")
    row.not_run = sum(1 for o in outcomes.values() if o == "not-run")
    every = list(outcomes.values()) + [e["outcome"] for e in run.fixtures.values()]
    row.hung = every.count("hung")
    row.crashed = every.count("crashed")
    if base is not None:
        good = {uid for uid, e in base.tests.items() if e["outcome"] in PASSING}
        row.unpatched = len(good)
        row.kept = sum(1 for uid in good if outcomes.get(uid) in PASSING)
    return row


def _pct(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return "-"
    return f"{100.0 * part / whole:.1f}%"


def format_table(rows: list[ModuleRow], title: str) -> str:
    head = (f"{'module':24} {'tests':>6} {'unpatched':>9} {'passed':>7} {'kept':>6} {'kept%':>7} "
            f"{'fail':>5} {'skip':>5} {'hung':>5} {'crash':>5} {'notrun':>6} {'time':>7}  status")
    lines = [title, head, "-" * len(head)]
    total = ModuleRow("TOTAL", unpatched=0, kept=0)
    have_base = all(r.unpatched is not None for r in rows) and rows
    for r in rows:
        lines.append(
            f"{r.module:24} {r.planned:6d} {_opt(r.unpatched):>9} {r.passed:7d} {_opt(r.kept):>6} "
            f"{_pct(r.kept, r.unpatched):>7} {r.failed:5d} {r.skipped:5d} {r.hung:5d} {r.crashed:5d} "
            f"{r.not_run:6d} {r.wall:6.1f}s  {r.status}")
        for name in ("planned", "passed", "failed", "skipped", "hung", "crashed", "not_run", "wall"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        if have_base:
            total.unpatched += r.unpatched
            total.kept += r.kept
    if not have_base:
        total.unpatched = total.kept = None
    lines.append("-" * len(head))
    lines.append(
        f"{'TOTAL':24} {total.planned:6d} {_opt(total.unpatched):>9} {total.passed:7d} {_opt(total.kept):>6} "
        f"{_pct(total.kept, total.unpatched):>7} {total.failed:5d} {total.skipped:5d} {total.hung:5d} "
        f"{total.crashed:5d} {total.not_run:6d} {total.wall:6.1f}s")
    return "\n".join(lines)


def _opt(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_comparison(by_lib: dict[str, dict[str, ModuleRun]], base: dict[str, ModuleRun]) -> str:
    """module | unpatched | <lib> kept/unpatched (hangs) ... side by side."""
    libs = [lib for lib in by_lib if lib != "none"]
    head = f"{'module':24} {'unpatched':>9}" + "".join(f" {lib:>22}" for lib in libs)
    lines = [head, "-" * len(head)]
    modules = sorted({m for runs in by_lib.values() for m in runs})
    totals = {lib: [0, 0, 0] for lib in libs}
    total_base = 0
    for module in modules:
        b = base.get(module)
        good = {uid for uid, e in b.tests.items() if e["outcome"] in PASSING} if b else set()
        total_base += len(good)
        cells = []
        for lib in libs:
            run = by_lib[lib].get(module)
            if run is None:
                cells.append(f"{'':>22}")
                continue
            kept = sum(1 for uid in good if run.tests.get(uid, {}).get("outcome") in PASSING)
            hangs = sum(1 for e in list(run.tests.values()) + list(run.fixtures.values()) if e["outcome"] == "hung")
            crash = "C" if run.status in ("crashed", "timeout", "import-error") else ""
            totals[lib][0] += kept
            totals[lib][1] += hangs
            totals[lib][2] += bool(crash)
            cells.append(f" {f'{kept} {_pct(kept, len(good))} h{hangs}{crash}':>22}")
        lines.append(f"{module.split('.', 1)[-1]:24} {len(good):9d}" + "".join(cells))
    lines.append("-" * len(head))
    lines.append(f"{'TOTAL':24} {total_base:9d}" + "".join(
        f" {f'{t[0]} {_pct(t[0], total_base)} h{t[1]} c{t[2]}':>22}" for t in totals.values()))
    lines.append("(cells: tests kept of those passing unpatched, % kept, hN = hung ids, C/cN = crashed or timed-out modules)")
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.stdlib",
        description="Run CPython's own test modules under a monkey patch and compare with known failures.")
    p.add_argument("modules", nargs="*", help="test modules (socket, test_socket or test.test_socket); default: the issue-7 list")
    p.add_argument("--subset", choices=sorted(SUBSETS), help="a named module list (ci: the fast subset)")
    p.add_argument("--python", default=sys.executable, help="interpreter whose test package is run (default: this one)")
    p.add_argument("--lib", default="greenpatch",
                   help="greenpatch|gevent|eventlet|none, or several separated by commas (run side by side)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="modules run at once (default 1)")
    p.add_argument("--timeout", type=float, default=1200.0, help="per-module wall-clock limit in seconds (default 1200)")
    p.add_argument("--stall", type=float, default=60.0, help="a test with no progress for this long is hung (default 60)")
    p.add_argument("--known", type=Path, default=None,
                   help="known-failures table (default: tests/stdlib/known/<lib>-<minor>.txt)")
    p.add_argument("--json", type=Path, default=None, help="also write the full results here")
    p.add_argument("--update-known", action="store_true", help="rewrite the known-failures table(s) from this run")
    p.add_argument("--auto-reason", action="store_true",
                   help="with --update-known: write the observed error as the reason instead of 'TODO reason (...)'")
    p.add_argument("--baseline", type=Path, default=None,
                   help="results of an unpatched run (default: tests/stdlib/results/none-<version>.json if present)")
    p.add_argument("--match", action="append", default=[], metavar="PATTERN",
                   help="run only test ids matching (prefix or fnmatch pattern); repeatable")
    p.add_argument("--use", default="default",
                   help="test.support resources: 'default' (test.support's own: all enabled), 'none', or a list like network,cpu")
    p.add_argument("--run-hung", action="store_true", help="also run tests the table marks [hung]")
    p.add_argument("--max-class-hangs", type=int, default=5, metavar="N",
                   help="after N new hangs in one test class, do not run its remaining tests (0: no limit; default 5)")
    p.add_argument("--switch-check", type=float, default=0.0, metavar="SECONDS",
                   help="greenpatch only: a test that holds the hub away from pending work this long is 'blocked'")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where results and logs go")
    p.add_argument("--from-results", action="store_true",
                   help="run nothing: judge (and --update-known) from the saved results of this Python version")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-module progress lines")
    return p.parse_args(argv)


def _resources(spec: str):
    if spec == "default":
        return "default"
    if spec == "none":
        return []
    return [r.strip() for r in spec.split(",") if r.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    libs = [lib.strip() for lib in args.lib.split(",") if lib.strip()]
    for lib in libs:
        if lib not in LIBS:
            print(f"unknown --lib {lib!r}; choose from {', '.join(LIBS)}", file=sys.stderr)
            return 2
    if "none" in libs:  # the baseline first, so the others compare with it
        libs.remove("none")
        libs.insert(0, "none")
    info = interpreter_info(args.python)
    versions = {}
    for lib in libs:
        try:
            versions[lib] = lib_version(args.python, lib)
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 2
    names = [normalize_module(m) for m in (args.modules or SUBSETS[args.subset or "all"])]
    modules, missing = present_modules(args.python, names)
    if missing:
        print(f"not in Python {info['version']}'s test package (skipped): {', '.join(m[5:] for m in missing)}")
    if not modules:
        print("no modules to run", file=sys.stderr)
        return 2
    full_modules = not args.match
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)

    tables = {}
    for lib in libs:
        path = args.known if (args.known and len(libs) == 1) else known_path(lib, info["minor"])
        if lib != "none" and not path.exists() and not args.update_known:
            print(f"no known-failures table {path} for lib={lib} on Python {info['minor']}: write one with "
                  f"python -m tests.stdlib --lib {lib} --python {args.python} --update-known", file=sys.stderr)
            return 2
        tables[lib] = (path, read_known(path))
    none_table = read_known(known_path("none", info["minor"]))

    previous = load_result(results_path(libs[-1], info["version"], results_dir)) or {}
    order = {m: i for i, m in enumerate(SLOW_FIRST)}
    modules.sort(key=lambda m: (-(previous[m].wall if m in previous else 0.0),
                                order.get(m.split(".", 1)[1], len(order))))

    stop = threading.Event()
    by_lib: dict[str, dict[str, ModuleRun]] = {lib: {} for lib in libs}
    lib_wall = {lib: 0.0 for lib in libs}
    started = time.monotonic()
    jobs = []
    for lib in libs:
        path, table = tables[lib]
        # Known hangs (this lib's, and the unpatched ones: they hang patched too) are not run.
        skip_ids = env_skip_ids = frozenset()
        if not args.run_hung:
            skip_ids = frozenset(u for u, e in table.items() if "hung" in e.tags)
            if lib != "none":
                env_skip_ids = frozenset(u for u, e in none_table.items() if "hung" in e.tags) - skip_ids
        cfg = Config(python=args.python, lib=lib, stall=args.stall, timeout=args.timeout,
                     resources=_resources(args.use), match=args.match, skip_ids=skip_ids,
                     env_skip_ids=env_skip_ids,
                     switch_check=args.switch_check, max_class_hangs=args.max_class_hangs,
                     log_dir=results_dir / "logs" / f"{lib}-{info['version']}")
        jobs.extend((cfg, module) for module in modules)
    jobs.sort(key=lambda job: modules.index(job[1]))  # slowest modules first, libs side by side

    print(f"Python {info['version']} ({args.python}); libs: "
          + ", ".join(f"{lib} {versions[lib]}".strip() for lib in libs)
          + f"; {len(modules)} modules, -j {args.jobs}, stall {args.stall:g}s, timeout {args.timeout:g}s, "
          f"resources {args.use}", flush=True)
    lock = threading.Lock()

    def work(job):
        cfg, module = job
        run = run_module(cfg, module, stop)
        with lock:
            by_lib[cfg.lib][module] = run
            lib_wall[cfg.lib] += run.wall
            if not args.quiet:
                row = module_row(run, None)
                extra = f"  [{'; '.join(run.events)[:300]}]" if run.events else ""
                print(f"  {cfg.lib:10} {module[5:]:24} {row.passed:5d} passed {row.failed:4d} failed "
                      f"{row.skipped:4d} skipped {row.hung:3d} hung {row.crashed:3d} crashed "
                      f"{run.wall:7.1f}s {run.status}{extra}", flush=True)
        return run

    if args.from_results:
        for lib in libs:
            saved = load_result(results_path(lib, info["version"], results_dir)) or {}
            by_lib[lib] = {m: saved[m] for m in modules if m in saved}
            lib_wall[lib] = sum(run.wall for run in by_lib[lib].values())
            absent = [m[5:] for m in modules if m not in saved]
            if absent:
                print(f"no saved {lib} results for: {', '.join(absent)}")
    else:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs))
        try:
            futures = [pool.submit(work, job) for job in jobs]
            for future in futures:
                while True:
                    try:
                        future.result(timeout=0.5)
                        break
                    except concurrent.futures.TimeoutError:
                        continue
        except KeyboardInterrupt:
            stop.set()
            print("interrupted: stopping the running modules", file=sys.stderr)
            pool.shutdown(wait=True, cancel_futures=True)
            return 130
        pool.shutdown(wait=True)
    wall = time.monotonic() - started

    # Baseline: this run's none, else --baseline, else a saved unpatched run of this version.
    base_runs = by_lib.get("none")
    if base_runs is None:
        base_file = args.baseline or results_path("none", info["version"], results_dir)
        base_runs = load_result(base_file)
    exit_code = 0
    out_json = {"python": info, "wall": round(wall, 1), "argv": sys.argv[1:], "runs": {}}
    for lib in libs:
        runs = by_lib[lib]
        ordered = [runs[m] for m in sorted(runs)]
        base = None if lib == "none" else base_runs
        rows = [module_row(run, (base or {}).get(run.module) if base is not None else
                           (run if lib == "none" else None)) for run in ordered]
        title = (f"\n== lib={lib} {versions[lib]} on Python {info['version']}: "
                 f"{'unpatched baseline' if lib == 'none' else 'patched'}; module time summed {lib_wall[lib]:.0f}s")
        print(format_table(rows, title))
        path, table = tables[lib]
        verdict = judge(runs, table, none_table if lib != "none" else None, full_modules)
        _print_verdict(lib, path, verdict, runs)
        if base:
            lost = skip_losses(runs, base)
            if lost:
                print(f"passing unpatched but skipped or not run under {lib}: {sum(lost.values())} tests")
                for reason, n in list(lost.items())[:12]:
                    print(f"  {n:5d}  {reason}")
        if verdict.unexpected_failures or verdict.unexpected_passes:
            exit_code = 1
        if args.update_known:
            new = updated_known(runs, table, none_table if lib != "none" else {}, full_modules,
                                todo=not args.auto_reason)
            header = (f"Known failures: lib={lib} {versions[lib]}, Python {info['minor']} "
                      f"(measured on {info['version']}).\n"
                      f"One test id per line: <id> [tags]  # one-line reason.  Tags: hung (not run unless\n"
                      f"--run-hung), crashed, flaky (may also pass).  Regenerate: python -m tests.stdlib "
                      f"--lib {lib} --python <python{info['minor']}> --update-known"
                      + (" --auto-reason\nReasons are the observed errors unless written by hand (hangs)."
                         if args.auto_reason else ""))
            write_known(path, new, header)
            print(f"wrote {path} ({len(new)} entries)")
        payload = {"python": info, "lib": lib, "lib_version": versions[lib], "resources": args.use,
                   "stall": args.stall, "timeout": args.timeout, "switch_check": args.switch_check,
                   "modules": {m: run.to_json() for m, run in runs.items()}}
        out_json["runs"][lib] = payload
        if full_modules and not args.from_results:
            saved = results_path(lib, info["version"], results_dir)
            old = {}
            try:
                old = json.loads(saved.read_text(encoding="utf-8")).get("modules", {})
            except (OSError, ValueError):
                pass
            old.update(payload["modules"])
            saved.write_text(json.dumps(dict(payload, modules=old), indent=1), encoding="utf-8")
    if len(libs) > 1 and base_runs:
        print("\n== side by side (Python %s)" % info["version"])
        print(format_comparison(by_lib, base_runs))
    print(f"\nwall time {wall:.0f}s; logs in {results_dir / 'logs'}")
    if args.json:
        args.json.write_text(json.dumps(out_json, indent=1), encoding="utf-8")
    return exit_code


def skip_losses(runs: dict[str, ModuleRun], base: dict[str, ModuleRun]) -> dict[str, int]:
    """Skip reasons of tests that pass unpatched but are skipped (or not run) patched, with counts."""
    reasons: dict[str, int] = {}
    for module, run in runs.items():
        b = base.get(module)
        if b is None:
            continue
        for uid, entry in b.tests.items():
            if entry["outcome"] not in PASSING:
                continue
            got = run.tests.get(uid)
            if got is None:
                reason = "absent" if run.status != "skipped" else f"module skipped: {run.skip_reason}"
            elif got["outcome"] in ("skip", "not-run"):
                reason = f"{got['outcome']}: {short_detail(got.get('detail'), 90) or '(no reason given)'}"
            else:
                continue
            key = f"{module[5:]}: {reason}"
            reasons[key] = reasons.get(key, 0) + 1
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1]))


def _print_verdict(lib: str, path: Path, verdict: Verdict, runs: dict[str, ModuleRun]) -> None:
    details = {}
    for run in runs.values():
        for uid, entry in list(run.tests.items()) + list(run.fixtures.items()):
            details[uid] = entry.get("detail")
    print(f"known failures table {path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
          f"{verdict.expected} expected, {len(verdict.unexpected_failures)} unexpected failures, "
          f"{len(verdict.unexpected_passes)} unexpected passes, {len(verdict.stale)} stale entries")
    for uid, outcome in sorted(verdict.unexpected_failures.items(), key=lambda kv: _sort_key(kv[0])):
        detail = details.get(uid) or ""
        shown = detail.split(";")[0].splitlines()[0] if outcome in ("hung", "crashed", "timeout") and detail \
            else short_detail(detail)
        print(f"  UNEXPECTED {outcome.upper():8} {uid}  {shown}")
    for uid in sorted(verdict.unexpected_passes, key=_sort_key):
        print(f"  UNEXPECTED PASS     {uid}  (remove it from the table)")
    for uid in sorted(verdict.stale, key=_sort_key)[:20]:
        print(f"  stale entry         {uid}  (skipped, not run or gone)")
    if len(verdict.stale) > 20:
        print(f"  ... {len(verdict.stale) - 20} more stale entries")
