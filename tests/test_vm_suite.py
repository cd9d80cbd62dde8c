"""Runs the cgroup v2 VM suite (tests/vm) inside the User-Mode Linux guest and fails if it
fails. This host's cgroups are a v1/v2 hybrid, so real limits can only be shown in the guest
(scripts/vm/run-in-vm.sh; ../shared notes: cgroup-v2-vm.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, need

pytestmark = pytest.mark.vm


def test_cgroup_suite_in_the_vm() -> None:
    need(shutil.which("linux.uml") is not None,
         "linux.uml is not installed (apt-get install user-mode-linux kmod uidmap)")
    need(shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe"),
         "modprobe is not installed (apt-get install kmod)")
    env = dict(os.environ)
    env["RL_VM_VENV"] = sys.prefix
    job = ("PYTHONDONTWRITEBYTECODE=1 python -m pytest -q -p no:cacheprovider -o addopts= "
           "tests/vm")
    # A session of its own, so that a guest that hangs is stopped whole (UML is many processes).
    proc = subprocess.Popen([str(REPO / "scripts" / "vm" / "run-in-vm.sh"), job], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the VM suite did not finish in 10 minutes\n{out}\n{err}")
    report = f"--- guest stdout\n{out}\n--- guest stderr\n{err}"
    assert proc.returncode == 0, report
    # The guest really ran the suite (an empty collection would exit 5, but be explicit).
    assert " passed" in out and " failed" not in out, report
