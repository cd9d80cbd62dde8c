"""Fixtures of the escape suite: a busybox rootfs with a static C probe in /bin/probe.

The probe (probe.c beside this file) is compiled with `gcc -static` once per session, as the
test user, and prints SAFE/RISK with the errno name, so each test asserts the exact refusal.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, RlRunner, need, need_tool

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def probe_bin(tmp_path_factory: pytest.TempPathFactory, unprivileged: None) -> Path:
    gcc = need_tool("gcc")
    out = tmp_path_factory.mktemp("probe") / "probe"
    r = subprocess.run([gcc, "-static", "-O2", "-o", str(out), str(HERE / "probe.c")],
                       capture_output=True, text=True)
    need(r.returncode == 0, f"gcc -static cannot build the probe (libc6-dev? static libc.a): {r.stderr[-400:]}")
    return out


@pytest.fixture(scope="session")
def sec_rootfs(tmp_path_factory: pytest.TempPathFactory, probe_bin: Path, unprivileged: None) -> Path:
    """A busybox rootfs of this suite's own (tests write into it), /bin/probe included."""
    need_tool("busybox")
    dest = tmp_path_factory.mktemp("secroot") / "rootfs"
    subprocess.run([str(REPO / "scripts" / "build-busybox-rootfs.sh"), str(dest)], check=True,
                   stdout=subprocess.DEVNULL)
    shutil.copy2(probe_bin, dest / "bin" / "probe")
    return dest


@pytest.fixture
def fresh_rootfs(sec_rootfs: Path, tmp_path: Path) -> Path:
    """A private copy for tests that plant symlinks or setuid files in the image."""
    dest = tmp_path / "rootfs"
    shutil.copytree(sec_rootfs, dest, symlinks=True)
    return dest


@pytest.fixture
def run_sec(rl: RlRunner, sec_rootfs: Path) -> Callable[..., subprocess.CompletedProcess]:
    """run_sec(*cmd, opts=[...], rootfs=None) -> rl run --rm --network none [opts] --rootfs R cmd."""

    def run(*cmd: str, opts: list[str] | tuple[str, ...] = (), rootfs: Path | None = None,
            **kw) -> subprocess.CompletedProcess:
        root = rootfs or sec_rootfs
        return rl("run", "--rm", "--network", "none", *opts, "--rootfs", str(root), *cmd, **kw)

    return run


@pytest.fixture(scope="session")
def marked_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default profile with its default errno changed to EOPNOTSUPP: a call that fails
    with that errno was refused by the profile's default action, not by the kernel."""
    profile = json.loads((REPO / "configs" / "seccomp.json").read_text())
    profile["defaultErrnoRet"] = 95
    path = tmp_path_factory.mktemp("profile") / "marked.json"
    path.write_text(json.dumps(profile))
    os.chmod(path, 0o644)
    return path


@pytest.fixture
def subuids(run_sec) -> None:
    """Tests that switch to uid 1000 need a subordinate range mapped."""
    r = run_sec("cat", "/proc/self/uid_map")
    need(r.returncode == 0 and len(r.stdout.splitlines()) >= 2,
         "the test user has no /etc/subuid range (newuidmap): uid 1000 is not mapped")


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} missing from:\n{text}")
