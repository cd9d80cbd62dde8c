"""What the engine tests (Slurm, containerd) share: the OCI runtimes they drive, by name."""

from __future__ import annotations

import shutil

from tests.conftest import need, need_tool

RUNTIMES = ["runc", "rl-oci"]


def runtime_path(name: str) -> str:
    """The runtime binary an engine test drives: runc, or the rl-oci installed with rl."""
    if name == "runc":
        return need_tool("runc")
    path = shutil.which("rl-oci")
    need(path is not None, "rl-oci is not installed in this environment")
    return path or ""
