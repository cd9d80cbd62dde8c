"""`rl exec` end to end: the new process is inside the container's namespaces (user, mount,
PID, UTS, IPC, network, cgroup), with its environment and security settings, and reports
podman's exit codes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def box(rl, busybox_rootfs):
    """A running detached container named "box" with a marker file, hostname and env."""
    r = rl("run", "-d", "--name", "box", "--hostname", "boxhost", "-e", "FROM_RUN=yes",
           "--network", "none", "-w", "/tmp", "--rootfs", str(busybox_rootfs),
           "sh", "-c", "echo inside > /tmp/marker; mkfifo /tmp/ipc-fifo; sleep 1000; true")
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        if rl("exec", "box", "test", "-e", "/tmp/marker").returncode == 0:
            break
        time.sleep(0.05)
    yield r.stdout.strip()
    rl("rm", "-f", "-a")


def test_exec_sees_the_containers_files_hostname_and_pids(rl, box):
    r = rl("exec", "box", "sh", "-c", "cat /tmp/marker; hostname; echo $$; ps -o pid,args; pwd; "
           "echo $FROM_RUN $container")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "inside" and lines[1] == "boxhost"
    my_pid = int(lines[2])
    assert 1 < my_pid < 100  # a pid of the container's namespace, not the host's
    ps = "\n".join(lines[3:-2])
    assert "1 sh -c echo inside" in ps and "sleep 1000" in ps
    assert lines[-2] == "/tmp"  # the container's working directory
    assert lines[-1] == "yes rl"


def test_exec_shares_every_namespace_with_pid_1(rl, box):
    state = __import__("json").loads((rl.runtime / box / "state.json").read_text())
    pid1 = state["pid"]
    r = rl("exec", "box", "sh", "-c", "for n in user mnt pid net uts ipc cgroup; do "
           "readlink /proc/self/ns/$n; done")
    assert r.returncode == 0, r.stderr
    theirs = [os.readlink(f"/proc/{pid1}/ns/{n}") for n in
              ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")]
    assert r.stdout.split() == theirs
    mine = [os.readlink(f"/proc/self/ns/{n}") for n in ("user", "mnt", "pid", "net")]
    assert not set(mine) & set(theirs)


def test_exec_gets_the_containers_capabilities(rl, box):
    state = __import__("json").loads((rl.runtime / box / "state.json").read_text())
    with open(f"/proc/{state['pid']}/status") as f:
        pid1_caps = [ln.split()[1] for ln in f if ln.startswith(("CapBnd", "CapEff"))]
    r = rl("exec", "box", "sh", "-c", "grep -E '^Cap(Bnd|Eff)' /proc/self/status")
    assert [ln.split()[1] for ln in r.stdout.splitlines()] == pid1_caps
    assert pid1_caps[0] != "000001ffffffffff"  # the default set, not everything


def test_exec_exit_codes(rl, box):
    assert rl("exec", "box", "sh", "-c", "exit 9").returncode == 9
    r = rl("exec", "box", "no-such-cmd")
    assert r.returncode == 127 and "not found" in r.stderr
    r = rl("exec", "box", "/etc/passwd")
    assert r.returncode == 126
    r = rl("exec", "-w", "/no/such/dir", "box", "true")
    assert r.returncode == 126 and "/no/such/dir" in r.stderr
    assert rl("exec", "box", "sh", "-c", "kill -TERM $$").returncode == 143
    r = rl("exec", "box")
    assert r.returncode == 125
    r = rl("exec", "-u", "nobody-here", "box", "true")
    assert r.returncode == 126 and "unable to find user" in r.stderr


def test_exec_env_user_workdir_stdin(rl, box):
    r = rl("exec", "-e", "A=1", "-e", "FROM_RUN=over", "-u", "1000:1000", "-w", "/etc", "box",
           "sh", "-c", "echo $A $FROM_RUN; id -u; id -g; pwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "over", "1000", "1000", "/etc"]
    assert rl("exec", "-i", "box", "cat", input="piped\n").stdout == "piped\n"
    # Without -i stdin is empty.
    assert rl("exec", "box", "cat", input="ignored\n").stdout == ""


def test_exec_detached_runs_in_the_background(rl, box):
    r = rl("exec", "-d", "box", "sh", "-c", "sleep 0.3; echo later > /tmp/bg")
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        if rl("exec", "box", "cat", "/tmp/bg").stdout == "later\n":
            break
        time.sleep(0.05)
    assert rl("exec", "box", "cat", "/tmp/bg").stdout == "later\n"


def test_exec_tty(rl, box):
    master, slave = pty.openpty()
    p = rl.popen("exec", "-it", "box", "sh", "-c", "tty; stty size; echo done", stdin=slave,
                 stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and b"done" not in out:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
    assert p.wait(timeout=15) == 0, out
    os.close(master)
    assert b"/dev/pts/" in out and b"done" in out


def test_exec_refuses_a_stopped_container(rl, busybox_rootfs):
    rl("run", "--name", "stopped", "--network", "none", "--rootfs", str(busybox_rootfs), "true")
    r = rl("exec", "stopped", "true")
    assert r.returncode == 125
    assert "can only create exec sessions on running containers" in r.stderr
    rl("rm", "stopped")


def test_exec_into_a_foreground_container(rl, busybox_rootfs):
    p = rl.popen("run", "--name", "fg", "--network", "none", "--rootfs", str(busybox_rootfs),
                 "sh", "-c", "echo fgfile > /tmp/f; sleep 1000")
    try:
        for _ in range(200):
            r = rl("exec", "fg", "cat", "/tmp/f")
            if r.returncode == 0:
                break
            time.sleep(0.05)
        assert r.stdout == "fgfile\n"
    finally:
        rl("rm", "-f", "fg")
        assert p.wait(timeout=15) == 137
        p.communicate()
    assert subprocess.run(["true"]).returncode == 0
