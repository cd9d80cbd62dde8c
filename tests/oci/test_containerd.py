"""containerd drives an OCI runtime: a rootless containerd 1.6 under rootlesskit, started by the
unprivileged test user (tests/oci/containerd_fixtures.py), runs the test registry's busybox
image through `ctr run --runc-binary RUNTIME`, once with runc and once with rl-oci. The shim
(containerd-shim-runc-v2) calls the runtime as it calls runc: `--root --log --log-format json`
then create/start/exec/kill/delete (docs/containerd.md lists the calls).

Every container is run with `--cgroup ""` and `--cpu-shares 0`: containerd's default spec
places the container in the cgroup /NAMESPACE/ID and ctr asks for cpu.shares 1024, which a
runtime in a user namespace then has to create and cannot; these tests leave cgroups alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import container_processes
from tests.integration.test_lifecycle import until
from tests.oci.containerd_fixtures import Containerd, start_containerd
from tests.oci.engine_fixtures import RUNTIMES, runtime_path

pytestmark = pytest.mark.integration

NO_CGROUP = ("--cgroup", "", "--cpu-shares", "0")


@pytest.fixture(scope="session")
def ctrd(tmp_path_factory: pytest.TempPathFactory, unprivileged: None) -> Iterator[Containerd]:
    daemon = start_containerd(tmp_path_factory.mktemp("containerd"))
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def busybox_image(ctrd: Containerd, test_registry) -> str:
    ref = f"{test_registry.url_host}/rltest/busybox:latest"
    r = ctrd.ctr("images", "pull", "--plain-http", ref, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return ref


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest) -> str:
    return runtime_path(request.param)


@pytest.fixture
def cid(ctrd: Containerd) -> Iterator[str]:
    """A fresh container id; whatever the test leaves under it is removed."""
    name = f"rl{uuid.uuid4().hex[:12]}"
    yield name
    if name in ctrd.names("tasks"):
        ctrd.ctr("tasks", "kill", "-s", "SIGKILL", name)
        ctrd.ctr("tasks", "delete", "-f", name)
    if name in ctrd.names("containers"):
        ctrd.ctr("containers", "rm", name)


def task_status(ctrd: Containerd, cid: str) -> str:
    for line in ctrd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return fields[-1]
    return ""


def test_ctr_run_output_and_status(ctrd: Containerd, busybox_image: str, runtime: str,
                                   cid: str) -> None:
    r = ctrd.ctr("run", "--rm", *NO_CGROUP, "--runc-binary", runtime, busybox_image, cid,
                 "sh", "-c", 'echo "out pid=$$ path=$PATH"; echo err >&2; exit 3')
    assert r.returncode == 3, r.stdout + r.stderr
    # PID 1 of its PID namespace, with the image's environment (its config's PATH).
    assert "out pid=1 path=/usr/local/sbin:/usr/local/bin:" in r.stdout, r.stdout + r.stderr
    assert "err" in r.stderr
    assert cid not in ctrd.names("containers")


def test_ctr_run_rootfs(ctrd: Containerd, busybox_rootfs: Path, runtime: str, cid: str) -> None:
    """A container on a plain directory (`--rootfs`, no image and no snapshot)."""
    r = ctrd.ctr("run", "--rm", *NO_CGROUP, "--runc-binary", runtime, "--rootfs",
                 str(busybox_rootfs), cid, "/bin/sh", "-c", "echo from $(cat /proc/1/comm); exit 3")
    assert (r.returncode, r.stdout) == (3, "from sh\n"), r.stderr


def test_ctr_detached_exec_kill_delete(ctrd: Containerd, busybox_image: str, runtime: str,
                                       cid: str) -> None:
    marker = f"rlctrd{uuid.uuid4().hex[:10]}"
    r = ctrd.ctr("run", "-d", *NO_CGROUP, "--runc-binary", runtime, busybox_image, cid,
                 "sh", "-c", "sleep 300; :", marker)
    assert r.returncode == 0, r.stdout + r.stderr
    assert until(lambda: task_status(ctrd, cid) == "RUNNING", timeout=30), ctrd.ctr("tasks", "ls")
    assert container_processes(marker), "the container's process is not running"

    r = ctrd.ctr("tasks", "exec", "--exec-id", "e1", cid, "sh", "-c", "echo exec pid=$$; exit 4")
    assert r.returncode == 4, r.stdout + r.stderr
    assert "exec pid=" in r.stdout and "exec pid=1\n" not in r.stdout

    r = ctrd.ctr("tasks", "kill", "-s", "SIGKILL", cid)
    assert r.returncode == 0, r.stderr
    assert until(lambda: task_status(ctrd, cid) == "STOPPED", timeout=30), ctrd.ctr("tasks", "ls")
    assert until(lambda: not container_processes(marker), timeout=30), container_processes(marker)

    r = ctrd.ctr("tasks", "delete", cid)
    assert r.returncode == 0, r.stderr
    r = ctrd.ctr("containers", "rm", cid)
    assert r.returncode == 0, r.stderr
    assert cid not in ctrd.names("tasks") and cid not in ctrd.names("containers")
