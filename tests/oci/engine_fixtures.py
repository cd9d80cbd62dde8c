"""What the engine tests (Slurm, containerd) share: the OCI runtimes they drive, by name."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO, need, need_tool

RUNTIMES = ["runc", "rl-oci"]


def runtime_path(name: str) -> str:
    """The runtime binary an engine test drives: runc, or the rl-oci installed with rl."""
    if name == "runc":
        return need_tool("runc")
    # rl-oci is being written on another branch; until scripts/rl-oci is in the source tree
    # there is nothing to test. Remove this condition once it is on main: then a missing
    # rl-oci fails under CI=true like any other missing component.
    if not (REPO / "scripts" / "rl-oci").exists():
        pytest.skip("rl-oci is not in this source tree yet")
    path = shutil.which("rl-oci")
    need(path is not None, "rl-oci is not installed in this environment")
    return path or ""
