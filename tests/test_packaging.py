"""The `rl` command as installed: scripts/rl is a plain script (see its comment), so its run
bit comes from the repository. With mode 100644 in git, an installer that keeps the file's
mode leaves bin/rl without execute permission ("Permission denied" at the first command)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, need, need_tool


def test_scripts_rl_has_the_run_bit_in_git_and_in_the_checkout():
    # test.sh runs the tests in a copy without .git; RL_TEST_SOURCE names the checkout.
    source = Path(os.environ.get("RL_TEST_SOURCE") or REPO)
    git = need_tool("git")
    need((source / ".git").exists(), f"{source} is not a git checkout")
    r = subprocess.run([git, "-c", "safe.directory=*", "-C", str(source), "ls-files", "--stage",
                        "scripts/rl"], capture_output=True, text=True, check=True)
    assert r.stdout.split()[0] == "100755", r.stdout
    assert stat.S_IMODE(os.stat(REPO / "scripts" / "rl").st_mode) & 0o111 == 0o111


def test_the_installed_rl_is_executable_and_runs():
    installed = Path(sys.executable).parent / "rl"  # the venv's, not whichever is on PATH
    need(installed.exists(), f"rl is not installed in {installed.parent}")
    assert stat.S_IMODE(installed.stat().st_mode) & 0o111 == 0o111, oct(installed.stat().st_mode)
    r = subprocess.run([str(installed), "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("rl version "), r.stderr
