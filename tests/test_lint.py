"""ruff on the whole tree and mypy (strict on kernel/ and idmap/) run as part of the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import need

REPO = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    need(Path(path).exists(), f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_ruff():
    r = subprocess.run([tool("ruff"), "check", "rootless", "idmap", "tests", "scripts"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_strict_on_kernel_and_idmap():
    r = subprocess.run([tool("mypy"), "--strict", "rootless/kernel", "idmap"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
