"""The soak run's short form (about a minute), part of the default run and so of CI; the long form is ``python -m tests.soak --minutes N``."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_soak_one_minute():
    result = subprocess.run([sys.executable, "-m", "tests.soak", "--minutes", "1", "--connections", "50"],
                            cwd=ROOT, capture_output=True, text=True, timeout=170)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result:        OK" in result.stdout
