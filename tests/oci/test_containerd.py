"""containerd drives rl-oci: Debian's containerd 1.6 as the unprivileged user under
rootlesskit (its own user and mount namespaces, the host's network), and `ctr run
--runc-binary rl-oci`: containerd-shim-runc-v2 calls rl-oci's create/start/delete and reaps the
container's PID 1 as its subreaper."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.integration


@pytest.fixture
def containerd(unprivileged):
    need_tool("containerd")
    need_tool("rootlesskit")
    need_tool("ctr")
    need_tool("nsenter")
    # Short: containerd's sockets live below it (sun_path holds 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="rlc", dir="/tmp"))
    config = base / "config.toml"
    config.write_text(f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
                      f'[grpc]\n  address = "{base}/c.sock"\n')
    log = open(base / "log", "w")
    proc = subprocess.Popen(
        ["rootlesskit", f"--state-dir={base}/rk", "--net=host", "--copy-up=/etc",
         "--copy-up=/run", "--disable-host-loopback", "containerd", "-c", str(config)],
        stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (base / "c.sock").exists() or not (base / "rk" / "child_pid").exists():
            assert proc.poll() is None, (base / "log").read_text()
            assert time.monotonic() < deadline, (base / "log").read_text()
            time.sleep(0.1)
        child = (base / "rk" / "child_pid").read_text().strip()

        def ctr(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
            # ctr in rootlesskit's namespaces, where containerd and its shims live.
            return subprocess.run(["nsenter", "-U", "--preserve-credentials", "-m", "-t", child,
                                   "ctr", "--address", str(base / "c.sock"), *args],
                                  capture_output=True, text=True, timeout=timeout)

        yield ctr
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        subprocess.run(["rootlesskit", "rm", "-rf", str(base)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def test_ctr_run_with_rl_oci(containerd, rl_oci_bin, busybox_rootfs):
    r = containerd("run", "--rm", "--runc-binary", rl_oci_bin, "--rootfs", str(busybox_rootfs),
                   "rl1", "sh", "-c", "echo from $(cat /proc/1/comm); exit 3")
    assert (r.returncode, r.stdout) == (3, "from sh\n"), r.stderr
    assert "rl1" not in containerd("containers", "list", "-q").stdout


def test_ctr_detached_task_kill_and_delete(containerd, rl_oci_bin, busybox_rootfs):
    r = containerd("run", "-d", "--runc-binary", rl_oci_bin, "--rootfs", str(busybox_rootfs),
                   "rl2", "sleep", "300")
    assert r.returncode == 0, r.stderr
    tasks = containerd("tasks", "list").stdout
    assert "rl2" in tasks and "RUNNING" in tasks, tasks
    assert containerd("tasks", "kill", "-s", "KILL", "rl2").returncode == 0
    deadline = time.monotonic() + 20
    while "STOPPED" not in containerd("tasks", "list").stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "STOPPED" in containerd("tasks", "list").stdout
    assert containerd("tasks", "delete", "rl2").returncode == 0
    assert containerd("containers", "delete", "rl2").returncode == 0
