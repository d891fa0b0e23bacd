"""python -m greenpatch: runs a program exactly as python would, after patching.

Each test starts real interpreters: the program under plain python and under
the CLI must see the same argv, sys.path[0], __file__ and __spec__, and end
with the same exit status and traceback.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greenpatch import __version__
from greenpatch.__main__ import split_argv
from greenpatch.patcher import PATCHES

SCRIPTS = Path(__file__).parent / "scripts"
CLI = [sys.executable, "-m", "greenpatch"]
FLAGS = [patch.flag for patch in PATCHES]


def run(argv, cwd=None, timeout=30, **kwargs):
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, **kwargs)


def report(argv, cwd):
    result = run(argv, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def programs(tmp_path):
    """The reporter as a script in a subdirectory, a symlink to it, a module, a package and a directory."""
    source = (SCRIPTS / "cli_report.py").read_text()
    for path in ("sub/report.py", "pkg/__init__.py", "pkg/mod.py", "pkg/__main__.py", "app/__main__.py"):
        (tmp_path / path).parent.mkdir(exist_ok=True)
        (tmp_path / path).write_text("" if path.endswith("__init__.py") else source)
    (tmp_path / "link.py").symlink_to(tmp_path / "sub" / "report.py")
    return tmp_path


TARGETS = {
    "script": ["sub/report.py"],
    "script by absolute path": ["{tmp}/sub/report.py"],
    "symlinked script": ["link.py"],
    "module": ["-m", "pkg.mod"],
    "package": ["-m", "pkg"],
    "directory": ["app"],
}


@pytest.mark.parametrize("kind", list(TARGETS))
def test_program_sees_what_plain_python_gives_it(programs, kind):
    target = [part.format(tmp=programs) for part in TARGETS[kind]]
    args = ["one", "--no-socket", "-m", "x", "--", "--help"]
    plain = report([sys.executable, *target, *args], cwd=programs)
    green = report([*CLI, *target, *args], cwd=programs)
    assert plain.pop("patched") is None
    assert green.pop("patched") == {**{flag: True for flag in FLAGS}, "socket.socket is the original": False}
    assert green == plain
    assert green["argv"][1:] == args
    assert green["__name__"] == "__main__" and green["__main__ is this module"] and green["pickles"]


def test_program_from_stdin_sees_what_plain_python_gives_it(tmp_path):
    source = (SCRIPTS / "cli_report.py").read_text()
    plain = run([sys.executable, "-", "a", "-m"], cwd=tmp_path, input=source)
    green = run([*CLI, "-", "a", "-m"], cwd=tmp_path, input=source)
    assert plain.returncode == green.returncode == 0, green.stderr
    plain, green = json.loads(plain.stdout), json.loads(green.stdout)
    assert plain.pop("patched") is None and green.pop("patched")["socket"] is True
    assert green == plain
    assert green["argv"] == ["-", "a", "-m"] and green["path[0]"] == ""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is new in 3.11")
def test_safe_path_leaves_sys_path_alone_as_python_does(programs):
    plain = report([sys.executable, "-P", "sub/report.py"], cwd=programs)
    green = report([sys.executable, "-P", "-m", "greenpatch", "sub/report.py"], cwd=programs)
    plain.pop("patched"), green.pop("patched")
    assert green == plain


@pytest.mark.parametrize("code, status, stderr", [
    ("print('hi')", 0, ""),
    ("import sys; sys.exit(3)", 3, ""),
    ("raise SystemExit('goodbye')", 1, "goodbye\n"),
    ("import sys; sys.exit(None)", 0, ""),
])
def test_exit_status_is_the_programs(tmp_path, code, status, stderr):
    (tmp_path / "prog.py").write_text(code + "\n")
    result = run([*CLI, "prog.py"], cwd=tmp_path)
    assert (result.returncode, result.stderr) == (status, stderr)


def test_uncaught_exception_prints_the_same_traceback_as_python_and_exits_1(tmp_path):
    shutil.copy(SCRIPTS / "cli_fail.py", tmp_path / "fail.py")
    plain = run([sys.executable, "fail.py"], cwd=tmp_path)
    green = run([*CLI, "fail.py"], cwd=tmp_path)
    assert green.returncode == plain.returncode == 1
    assert green.stderr == plain.stderr
    assert f'File "{tmp_path / "fail.py"}", line 3, in inner' in green.stderr
    assert green.stderr.strip().endswith("ValueError: broken on purpose")
    assert "runpy" not in green.stderr and "__main__.py" not in green.stderr


def test_syntax_error_is_reported_as_python_reports_it(tmp_path):
    (tmp_path / "bad.py").write_text("x = (\n")
    plain = run([sys.executable, "bad.py"], cwd=tmp_path)
    green = run([*CLI, "bad.py"], cwd=tmp_path)
    assert green.returncode == plain.returncode == 1
    assert green.stderr == plain.stderr


def test_missing_script_exits_2_with_pythons_one_line_error(tmp_path):
    plain = run([sys.executable, "nosuch.py"], cwd=tmp_path)
    green = run([*CLI, "nosuch.py"], cwd=tmp_path)
    assert green.returncode == plain.returncode == 2
    assert green.stderr == plain.stderr
    assert green.stderr.count("\n") == 1
    assert f"can't open file '{tmp_path / 'nosuch.py'}': [Errno 2] No such file or directory" in green.stderr


def test_missing_module_fails_like_python(tmp_path):
    plain = run([sys.executable, "-m", "nosuch_module_xyz"], cwd=tmp_path)
    green = run([*CLI, "-m", "nosuch_module_xyz"], cwd=tmp_path)
    assert green.returncode == plain.returncode == 1  # python -m's own status for this
    assert green.stderr == plain.stderr
    assert green.stderr == f"{sys.executable}: No module named nosuch_module_xyz\n"


def test_no_arguments_prints_usage_and_exits_2():
    result = run(CLI)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m greenpatch [options] (script.py | -m module")
    assert "error: no script or -m module given" in result.stderr


def test_unknown_option_and_unknown_only_flag_exit_2(tmp_path):
    for options in (["--bogus"], ["--only", "sockets"], ["--no-sockets"]):
        result = run([*CLI, *options, "prog.py"], cwd=tmp_path)
        assert result.returncode == 2, options
        assert "usage:" in result.stderr and "error:" in result.stderr


def test_help_describes_every_flag_of_the_registry():
    result = run([*CLI, "--help"])
    assert result.returncode == 0
    for patch in PATCHES:
        assert f"--no-{patch.flag}" in result.stdout
        for target in patch.targets:
            assert target in result.stdout
    for option in ("-m module", "--only", "--report", "--version"):
        assert option in result.stdout


def test_version():
    result = run([*CLI, "--version"])
    assert (result.returncode, result.stdout) == (0, f"greenpatch {__version__}\n")


@pytest.mark.parametrize("options, expected", [
    ([], set(FLAGS)),
    (["--no-socket"], set(FLAGS) - {"socket"}),
    (["--no-thread", "--no-queue"], set(FLAGS) - {"thread", "queue"}),
    (["--only", "time,select"], {"time", "select"}),
    (["--only=socket", "--no-socket"], set()),
])
def test_flags_choose_what_is_patched(programs, options, expected):
    state = report([*CLI, *options, "sub/report.py"], cwd=programs)["patched"]
    assert state.pop("socket.socket is the original") == ("socket" not in expected)
    assert state == {flag: flag in expected for flag in FLAGS}


def test_options_after_the_script_belong_to_the_script(programs):
    seen = report([*CLI, "sub/report.py", "--no-socket", "--only", "time", "--version"], cwd=programs)
    assert seen["argv"] == ["sub/report.py", "--no-socket", "--only", "time", "--version"]
    assert seen["patched"]["socket"] is True and seen["patched"]["thread"] is True


def test_report_lists_the_patched_modules(programs):
    result = run([*CLI, "--report", "--only", "time", "sub/report.py"], cwd=programs)
    assert result.returncode == 0
    assert result.stderr.startswith("greenpatch: patched time\n")  # then the full report (tests/test_report.py)


@pytest.mark.parametrize("argv, expected", [
    (["a.py"], ([], "a.py", None, [])),
    (["--no-socket", "a.py", "--no-time", "-m", "x"], (["--no-socket"], "a.py", None, ["--no-time", "-m", "x"])),
    (["--only", "socket", "-m", "http.server", "8000"], (["--only", "socket"], None, "http.server", ["8000"])),
    (["--only=time", "-mjson.tool", "-h"], (["--only=time"], None, "json.tool", ["-h"])),
    (["--report", "--", "-odd.py", "x"], (["--report"], "-odd.py", None, ["x"])),
    (["--help"], (["--help"], None, None, [])),
    (["--no-time", "-", "x"], (["--no-time"], "-", None, ["x"])),
])
def test_options_end_at_the_target(argv, expected):
    assert split_argv(argv) == expected


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a background shell may have ignored it


def test_ctrl_c_interrupts_accept_like_python(tmp_path):
    proc = subprocess.Popen([*CLI, str(SCRIPTS / "cli_accept.py")], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_default_sigint)
    try:
        assert proc.stdout.readline() == "ready\n"
        time.sleep(0.05)  # let it reach accept()
        sent = time.time()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert out.startswith("KeyboardInterrupt at "), err
    assert float(out.split()[-1]) - sent < 1.0
    assert err.rstrip().endswith("KeyboardInterrupt")
    assert 'cli_accept.py", line 10, in <module>' in err
    assert "runpy" not in err and "greenpatch/__main__.py" not in err
    assert proc.returncode == -signal.SIGINT  # python re-raises SIGINT; a shell shows 130


def test_waiting_forever_raises_deadlock_error_instead_of_hanging(tmp_path):
    result = run([*CLI, str(SCRIPTS / "cli_deadlock.py")], cwd=tmp_path, timeout=30)
    assert result.stdout == "waiting\n"
    assert result.returncode == 1
    assert "greenpatch.hub.DeadlockError: every green thread is waiting" in result.stderr
    assert "cli_deadlock.py" in result.stderr


def test_installed_greenpatch_command_runs_programs_the_same_way(programs):
    command = Path(sys.executable).with_name("greenpatch")
    if not command.exists():
        pytest.skip("the greenpatch console script is not installed in this environment")
    plain = report([sys.executable, "sub/report.py", "x"], cwd=programs)
    green = report([str(command), "sub/report.py", "x"], cwd=programs)
    plain.pop("patched"), green.pop("patched")
    assert green == plain
    module = report([str(command), "-m", "pkg.mod"], cwd=programs)
    assert module["path[0]"] == str(programs) and module["__spec__"][0] == "pkg.mod"
