"""The VM suite runs only inside the User-Mode Linux guest (scripts/vm/run-in-vm.sh), where
cgroup v2 is real and a subtree is delegated to the test user. On the host it is not collected:
tests/test_vm_suite.py runs it in the guest instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("RL_IN_VM") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def delegated() -> Path:
    """The cgroup the guest's init delegated to the test user (user@UID.service)."""
    return Path(os.environ["RL_VM_DELEGATED"])
