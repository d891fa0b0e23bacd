"""greenpatch.patcher.report() / format_report() and the CLI's --report[=json].

Patching is process-wide, so each scenario runs in a child interpreter.
"""

import json
import subprocess
import sys
import textwrap

from greenpatch.patcher import PATCHES, format_report, report

EARLY = "from socket import socket\nfrom time import sleep as nap\n"


def child(code, cwd):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return result


def test_report_before_any_patch_lists_everything_as_left_alone():
    data = report()
    assert data["patched"] == {}
    assert set(data["not_patched"]) == {patch.flag for patch in PATCHES}
    assert "monkey_patch() not called" in format_report(data)


def test_report_lists_what_was_patched_left_alone_and_still_held(tmp_path):
    (tmp_path / "early_user.py").write_text(EARLY)
    result = child("""
        import json, warnings
        warnings.simplefilter("ignore")
        import early_user, threading
        import greenpatch
        from greenpatch.patcher import report, format_report
        greenpatch.monkey_patch(queue=False)
        print(json.dumps(report()))
        print(format_report())
    """, cwd=tmp_path)
    data = json.loads(result.stdout.splitlines()[0])
    assert "socket" in data["patched"]["socket"]
    assert data["patched"]["time"] == ["sleep"]
    assert "queue" not in data["patched"]
    assert "queue=False" in data["not_patched"]["queue"]
    assert {"socket", "time", "threading"} <= set(data["imported_before_patch"])
    assert data["originals_still_referenced"]["early_user.socket"] == "socket.socket"
    assert data["originals_still_referenced"]["early_user.nap"] == "time.sleep"
    assert "early_user.socket (socket.socket)" in data["warned"]
    if sys.version_info < (3, 13):
        assert "start_joinable_thread" in data["not_in_this_python"]["_thread"]
    else:
        assert "_set_sentinel" in data["not_in_this_python"]["_thread"]
    text = result.stdout
    assert "  early_user.socket -> original socket.socket (stays blocking)" in text
    assert "  queue (queue): switched off" in text


def test_a_name_bound_after_the_patch_is_found_at_report_time(tmp_path):
    result = child("""
        import json, greenpatch
        from greenpatch.patcher import original, report
        greenpatch.monkey_patch()
        import types, sys
        late = sys.modules["late"] = types.ModuleType("late")
        late.real_sleep = original("time", "sleep")
        print(json.dumps(report()["originals_still_referenced"]))
    """, cwd=tmp_path)
    assert json.loads(result.stdout) == {"late.real_sleep": "time.sleep"}


def test_stdlib_names_rebound_by_the_patch_are_listed(tmp_path):
    result = child("""
        import json, functools, greenpatch
        from greenpatch.patcher import report
        greenpatch.monkey_patch()
        print(json.dumps(report()["rebound_in_stdlib"]))
    """, cwd=tmp_path)
    assert "functools.RLock (_thread.RLock)" in json.loads(result.stdout)


def cli(args, cwd):
    result = subprocess.run([sys.executable, "-m", "greenpatch", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    return result


def test_cli_report_prints_text_to_stderr_before_the_script_runs(tmp_path):
    (tmp_path / "early_user.py").write_text(EARLY)
    (tmp_path / "app.py").write_text("import sys\nsys.stderr.write('APP RAN\\n')\n")
    # sitecustomize-free way to import a user module before the patch: -m greenpatch with PYTHONSTARTUP
    # does not apply, so the script imports it and the report shows it only if imported earlier;
    # here the report must at least name the patched modules and say nothing is held.
    result = cli(["--report", "--no-queue", "app.py"], cwd=tmp_path)
    err = result.stderr
    assert err.index("greenpatch: patched") < err.index("APP RAN")
    assert "  time: sleep\n" in err
    assert "  queue (queue): switched off" in err
    assert "originals still referenced outside greenpatch: none" in err


def test_cli_report_json(tmp_path):
    (tmp_path / "app.py").write_text("print('ok')\n")
    result = cli(["--report=json", "app.py"], cwd=tmp_path)
    data = json.loads(result.stderr)
    assert set(data) >= {"patched", "not_patched", "imported_before_patch", "originals_still_referenced"}
    assert data["patched"]["time"] == ["sleep"]
    assert result.stdout == "ok\n"


def test_cli_report_shows_a_user_module_imported_before_the_patch(tmp_path):
    # A .pth-free way to import user code before the CLI patches: a usercustomize-like
    # module given through PYTHONSTARTUP is not run for -m, so use a wrapper that imports
    # the module, then hands over to the CLI's main().
    (tmp_path / "early_user.py").write_text(EARLY)
    (tmp_path / "app.py").write_text("pass\n")
    (tmp_path / "launch.py").write_text(
        "import sys, warnings\nwarnings.simplefilter('ignore')\nimport early_user\n"
        "from greenpatch.__main__ import main\nmain(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "launch.py", "--report", "app.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert "  early_user.socket -> original socket.socket (stays blocking)" in result.stderr


# A launcher that adds an on_import group "lazy" (target lazymod, not imported yet) to the
# registry before the CLI reads it, as a new registry entry would.
LAZY_LAUNCH = """\
import sys, types
from greenpatch import patcher
twin = types.ModuleType("greenpatch.green.lazymod")
twin.__implements__ = ["block"]
twin.block = lambda: "green"
sys.modules["greenpatch.green.lazymod"] = twin
patcher.PATCHES += (patcher.Patch("lazy", ("lazymod",), "a test group", on_import=True),)
patcher._FLAGS["lazy"] = patcher.PATCHES[-1]
from greenpatch.__main__ import main
main(sys.argv[1:])
"""


def launch(args, cwd):
    (cwd / "launch.py").write_text(LAZY_LAUNCH)
    (cwd / "lazymod.py").write_text("def block():\n    return 'original'\n")
    result = subprocess.run([sys.executable, "launch.py", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0, result.stderr
    return result


def test_pending_on_import_patches_are_reported_then_move_to_patched(tmp_path):
    (tmp_path / "app.py").write_text(
        "import json, sys, lazymod\nfrom greenpatch.patcher import report\n"
        "print(json.dumps([lazymod.block(), 'lazymod' in report()['patched_on_import'],"
        " 'lazymod' in report()['patched']]))\n")
    text = launch(["--report", "app.py"], tmp_path)
    pending = [line for line in text.stderr.splitlines() if line.startswith("patched when first imported")]
    assert len(pending) == 1 and "lazymod" in pending[0].split(": ")[1].split(", ")
    assert json.loads(text.stdout) == ["green", False, True]
    as_json = launch(["--report=json", "app.py"], tmp_path)
    assert "lazymod" in json.loads(as_json.stderr)["patched_on_import"]


def test_the_cli_options_come_from_the_registry(tmp_path):
    (tmp_path / "app.py").write_text(
        "import json, sys\nfrom greenpatch.patcher import is_patched\n"
        "print(json.dumps([is_patched('lazy'), is_patched('socket'), 'lazymod' in sys.modules]))\n")
    helped = launch(["--help"], tmp_path).stdout
    assert "--no-lazy" in helped and "a test group (patched when first imported)" in " ".join(helped.split())
    assert json.loads(launch(["--only", "lazy", "app.py"], tmp_path).stdout) == [True, False, False]
    assert json.loads(launch(["--no-lazy", "app.py"], tmp_path).stdout) == [False, True, False]
    text = launch(["--no-lazy", "--report", "app.py"], tmp_path).stderr
    assert "  lazy (lazymod): switched off: monkey_patch(lazy=False)" in text


def test_cli_rebind_rebinds_what_was_bound_before_the_patch(tmp_path):
    (tmp_path / "early_user.py").write_text(EARLY)
    (tmp_path / "app.py").write_text(
        "import json, socket, time, early_user\n"
        "print(json.dumps([early_user.socket is socket.socket, early_user.nap is time.sleep]))\n")
    (tmp_path / "launch.py").write_text(
        "import sys\nimport early_user\nfrom greenpatch.__main__ import main\nmain(sys.argv[1:])\n")
    result = subprocess.run([sys.executable, "launch.py", "--rebind", "--report", "app.py"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, True]
    err = result.stderr
    assert "rebound to green on request (rebind):\n" in err
    assert "  early_user.nap (time.sleep)\n" in err and "  early_user.socket (socket.socket)\n" in err
    assert "originals still referenced outside greenpatch: none" in result.stderr
    assert "PatchWarning" not in result.stderr
