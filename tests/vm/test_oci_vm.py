"""rl-oci's linux.resources for real, in the cgroup v2 guest: a pids limit through rl-oci itself
and through `podman --runtime rl-oci --pids-limit`, pause/resume/update on the container's
cgroup, and no cgroup left behind."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.oci.conftest import bundle, cid, oci, rl_oci_bin  # noqa: F401  (fixtures)
from tests.vm.test_cgroups_vm import FORK_BOMB, keyed

pytestmark = pytest.mark.vm


def oci_cgroups(delegated: Path) -> list[Path]:
    return [p for p in delegated.rglob("*") if p.is_dir() and
            (p.name.startswith("rl-oci-") or p.name.startswith("libpod-"))]


def assert_fork_bomb_limited(stdout: str) -> None:
    values = keyed(stdout)
    started, failed = int(values["started"]), int(values["failed"])
    assert 1 <= started < 20, stdout
    assert started + failed == 100, stdout
    assert int(keyed(stdout, "events ")["max"]) >= 1, stdout


def limited(limit: int):
    def edit(config):
        config["linux"]["resources"] = {"pids": {"limit": limit}}
        # strict: a limit that cannot be applied is an error here, not a warning
        config.setdefault("annotations", {})["run.oci.rl.cgroups"] = "enabled"
    return edit


def test_rl_oci_applies_a_pids_limit(oci, bundle, delegated):  # noqa: F811
    r = oci("run", "--bundle", str(bundle(["sh", "-c", FORK_BOMB], limited(20))), cid(),
            timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_fork_bomb_limited(r.stdout)
    assert oci_cgroups(delegated) == []


def test_pause_resume_update(oci, bundle, delegated):  # noqa: F811
    name = cid()
    assert oci("run", "-d", "--bundle", str(bundle(["sleep", "300"], limited(50))), name,
               timeout=120).returncode == 0
    (cgroup,) = oci_cgroups(delegated)
    assert (cgroup / "pids.max").read_text().strip() == "50"
    assert oci("pause", name).returncode == 0
    assert oci.state(name)["status"] == "paused"
    assert "frozen 1" in (cgroup / "cgroup.events").read_text()
    assert oci("resume", name).returncode == 0
    assert oci.state(name)["status"] == "running"
    r = oci("update", "--pids-limit", "30", "--memory", "64m", name)
    assert r.returncode == 0, r.stderr
    assert (cgroup / "pids.max").read_text().strip() == "30"
    assert (cgroup / "memory.max").read_text().strip() == str(64 << 20)
    assert oci("delete", "--force", name).returncode == 0
    assert oci_cgroups(delegated) == []


def test_podman_pids_limit_through_rl_oci(rl_oci_bin, busybox_rootfs, delegated):  # noqa: F811
    root = Path(tempfile.mkdtemp(prefix="rlpv", dir="/tmp"))
    xdg = root / "xdg"
    xdg.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(xdg))
    podman = ["podman", "--root", str(root / "root"), "--runroot", str(root / "run"),
              "--tmpdir", str(root / "tmp"), "--storage-driver", "vfs",
              "--cgroup-manager", "cgroupfs", "--events-backend", "file",
              "--runtime", rl_oci_bin]
    tar = root / "bb.tar"
    subprocess.run(["tar", "-C", str(busybox_rootfs), "-cf", str(tar), "."], check=True)
    subprocess.run([*podman, "import", str(tar), "localhost/rl-vm-bb:1"], check=True, env=env,
                   capture_output=True)
    r = subprocess.run([*podman, "run", "--rm", "--network", "none", "--pids-limit", "20",
                        "localhost/rl-vm-bb:1", "sh", "-c", FORK_BOMB], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_fork_bomb_limited(r.stdout)
    assert oci_cgroups(delegated) == []


def test_a_failed_create_leaves_no_cgroup(oci, bundle, delegated):  # noqa: F811
    def failing(config):
        limited(20)(config)
        config["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}

    name = cid()
    r = oci("create", "--bundle", str(bundle(["true"], failing)), name)
    assert r.returncode == 1 and "hooks.createRuntime[0]" in r.stderr, r.stderr
    assert not (oci.root / name).exists()
    assert oci_cgroups(delegated) == []
