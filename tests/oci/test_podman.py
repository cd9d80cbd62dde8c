"""podman drives rl-oci (`podman --runtime rl-oci`), as the unprivileged user, with conmon:
run --rm, run -d + exec + logs + stop + rm, run -it through the console socket, and the exit
codes podman derives from the runtime's errors. podman keeps its storage and state in a
directory of this session's own (vfs), and pulls the busybox image from the test registry."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import need, need_tool

pytestmark = pytest.mark.integration


class Podman:
    def __init__(self, rl_oci: str, root: Path) -> None:
        runtime = root / "xdg"
        runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
        # Storage, run state and podman's own temporary directory below `root`: other
        # sessions of this user keep theirs. cgroupfs and file events: no systemd here.
        self.base = ["podman", "--root", str(root / "root"), "--runroot", str(root / "run"),
                     "--tmpdir", str(root / "tmp"), "--storage-driver", "vfs",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file",
                     "--runtime", rl_oci]
        self.root = root

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env)


@pytest.fixture(scope="session")
def podman(rl_oci_bin, test_registry, unprivileged):
    need_tool("podman")
    need_tool("conmon")
    # podman's runroot must stay short (a socket path of conmon's lives below it).
    root = Path(tempfile.mkdtemp(prefix="rlpo", dir="/tmp"))
    p = Podman(rl_oci_bin, root)
    image = f"{test_registry.url_host}/rltest/busybox:latest"
    r = p("pull", "-q", "--tls-verify=false", image)
    need(r.returncode == 0, f"podman cannot pull the test image: {r.stderr[-300:]}")
    p.image = image  # type: ignore[attr-defined]
    yield p
    p("rm", "-a", "-f")
    p("rmi", "-a", "-f")
    subprocess.run(["podman", "unshare", "rm", "-rf", str(root)], env=p.env, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_run_rm_returns_output_and_status(podman):
    r = podman("run", "--rm", podman.image, "sh", "-c", "echo hello; cat /proc/1/comm; exit 3")
    assert (r.returncode, r.stdout) == (3, "hello\nsh\n"), r.stderr
    assert podman("ps", "-a", "-q").stdout == ""


def test_run_rm_without_network(podman):
    r = podman("run", "--rm", "--network", "none", podman.image, "cat", "/proc/net/dev")
    assert r.returncode == 0, r.stderr
    assert "lo:" in r.stdout and "eth0" not in r.stdout and "tap0" not in r.stdout


def test_detached_exec_logs_stop_rm(podman):
    r = podman("run", "-d", podman.image, "sh", "-c",
               "echo started; trap 'echo stopping; exit 7' TERM; while :; do sleep 0.1; done")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        r = podman("exec", cid, "sh", "-c", "echo exec:$(cat /proc/1/comm); exit 4")
        assert (r.returncode, r.stdout) == (4, "exec:sh\n"), r.stderr
        deadline = time.monotonic() + 10
        while "started" not in podman("logs", cid).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert podman("logs", cid).stdout == "started\n"
        r = podman("stop", "-t", "10", cid)
        assert r.returncode == 0, r.stderr
        r = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", cid)
        assert r.stdout.split() == ["exited", "7"]
        assert "stopping" in podman("logs", cid).stdout
    finally:
        assert podman("rm", "-f", cid).returncode == 0
    assert cid not in podman("ps", "-a", "-q", "--no-trunc").stdout


def test_missing_command_is_127_and_podman_says_why(podman):
    r = podman("run", "--rm", podman.image, "no-such-command")
    assert r.returncode == 127, (r.returncode, r.stderr)
    assert "executable file not found" in r.stderr


def test_run_it_through_the_console_socket(podman):
    """podman -it: conmon gives rl-oci a console socket; rl-oci sends the pty master."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*podman.base, "run", "-it", "--rm", podman.image, "sh"],
                            stdin=slave, stdout=slave, stderr=slave, env=podman.env,
                            start_new_session=True)
    os.close(slave)
    buf = b""

    def read_until(token: bytes, timeout: float = 60) -> None:
        nonlocal buf
        deadline = time.monotonic() + timeout
        while token not in buf and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    buf += os.read(master, 4096)
                except OSError:  # EIO: podman closed the terminal
                    return

    try:
        read_until(b"# ")
        os.write(master, b"tty; echo in-$((6*7)); exit 5\r")
        read_until(b"in-42")
        assert proc.wait(timeout=60) == 5
        read_until(b"\n", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"/dev/pts/0" in buf and b"in-42" in buf
