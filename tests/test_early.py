"""Early activation: GREENPATCH=1 patches at start-up through the installed greenpatch-early.pth.

These run real interpreters (``sys.executable``, so the venv this test runs
in); they need the package installed with its .pth file (``pip install .`` or
``pip install -e .`` both install it) and skip, saying so, where it is missing.
"""

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

PTH = "greenpatch-early.pth"
PROBE = "import socket, greenpatch.patcher as p; print(p.is_patched('socket'), p.is_patched('thread'))"


def installed_pth():
    dirs = list(site.getsitepackages()) + [site.getusersitepackages()]
    for directory in dirs:
        path = Path(directory) / PTH
        if path.exists():
            return path
    return None


pytestmark = pytest.mark.skipif(
    installed_pth() is None,
    reason=f"{PTH} is not installed next to greenpatch in this environment's site-packages "
           "(an install made before it existed? reinstall with pip install . or pip install -e .)")


def run(code, greenpatch=None, *args):
    env = dict(os.environ)
    env.pop("GREENPATCH", None)
    if greenpatch is not None:
        env["GREENPATCH"] = greenpatch
    result = subprocess.run([sys.executable, *args, "-c", code], env=env, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_variable_patches_before_the_program():
    assert run(PROBE, "1") == "True True"
    # patched before the program's first line: socket was imported at start-up, by greenpatch
    assert run("import sys; print('greenpatch.patcher' in sys.modules)", "1") == "True"


def test_without_the_variable_nothing_happens():
    assert run(PROBE) == "False False"
    assert run(PROBE, "0") == "False False"
    assert run(PROBE, "") == "False False"
    assert run("import sys; print('greenpatch' in sys.modules)") == "False"


def test_groups_can_be_chosen():
    assert run(PROBE, "socket") == "True False"


def test_unknown_group_patches_everything_and_says_so():
    env = dict(os.environ, GREENPATCH="sockets")
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "True True"
    assert "unknown group(s) sockets" in result.stderr


def test_child_processes_inherit_it():
    code = ("import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
            f"{PROBE!r}], capture_output=True, text=True).stdout.strip())")
    assert run(code, "1") == "True True"
    assert run(code) == "False False"


def test_the_pth_line_is_tiny_and_guarded():
    text = installed_pth().read_text()
    assert text.count("\n") == 1 and text.startswith("import os;")
    assert 'os.environ.get("GREENPATCH", "0") not in ("", "0")' in text
