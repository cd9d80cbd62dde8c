"""Resource limits for real: the real rl, as the test user, in a guest with cgroup v2 delegated
the way systemd delegates user@UID.service (scripts/vm/init.sh)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

# A bounded fork bomb that tries every one of its 100 starts: busybox find keeps going when it
# cannot spawn, where a shell loop would die at its first failed fork. Each start is a shell
# that puts a sleep in the background and says so.
FORK_BOMB = r"""
mkdir /tmp/t
i=0; while [ $i -lt 100 ]; do i=$((i+1)); : > /tmp/t/$i; done
find /tmp/t -type f -exec sh -c 'sleep 30 & echo started' \; >/tmp/out 2>/tmp/err
started=0; while read -r l; do started=$((started+1)); done </tmp/out
failed=0; while read -r l; do failed=$((failed+1)); done </tmp/err
echo "started $started"; echo "failed $failed"
while read -r l; do echo "events $l"; done </sys/fs/cgroup/pids.events
read -r l </tmp/err; echo "error $l"
"""

# Busy for 1.5 s of wall time (by /proc/uptime, in centiseconds), then the cgroup's CPU usage.
BUSY = r"""
read -r up _ </proc/uptime; start=${up%.*}${up#*.}; end=$((start + 150)); now=$start
while [ "$now" -lt "$end" ]; do
    i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done
    read -r up _ </proc/uptime; now=${up%.*}${up#*.}
done
echo "wall_cs $((now - start))"
while read -r k v; do echo "$k $v"; done </sys/fs/cgroup/cpu.stat
"""


def container_cgroups(delegated: Path) -> list[Path]:
    """Every container cgroup (rl-<id>-<pid>) anywhere below the delegated one."""
    return [p for p in delegated.rglob("rl-*") if p.is_dir() and p.name != "rl-leaf"]


def keyed(text: str, prefix: str = "") -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            key, _, value = line[len(prefix):].partition(" ")
            out[key] = value
    return out


def wait_for(predicate, what: str, limit: float = 30.0):
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_fork_bomb_gets_at_most_20_processes(run_bb, delegated):
    r = run_bb("sh", "-c", FORK_BOMB, opts=["--pids-limit", "20"], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    values = keyed(r.stdout)
    started, failed = int(values["started"]), int(values["failed"])
    # PID 1, find and one starting shell count too: fewer than 20 sleeps get a process.
    assert 1 <= started < 20, r.stdout
    assert started + failed == 100, r.stdout
    assert "Resource temporarily unavailable" in values["error"], r.stdout
    assert int(keyed(r.stdout, "events ")["max"]) >= 1, r.stdout
    # The test user's own cgroup was never limited: it can still start processes.
    assert subprocess.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do true & done; wait"],
                          check=False).returncode == 0
    assert container_cgroups(delegated) == []


def test_memory_hog_is_oom_killed_and_rl_says_so(run_bb, delegated):
    r = run_bb("sh", "-c", "x=a; while true; do x=$x$x; done", opts=["--memory", "32m"],
               timeout=180)
    assert r.returncode == 137, r.stdout + r.stderr
    assert "rl: killed by the OOM killer: memory limit 32 MiB" in r.stderr
    assert container_cgroups(delegated) == []


def test_a_process_under_the_memory_limit_completes(run_bb):
    # 4 MiB of string (and a copy or two) under a 32 MiB limit.
    r = run_bb("sh", "-c", "x=a; i=0; while [ $i -lt 22 ]; do x=$x$x; i=$((i+1)); done; echo ${#x}",
               opts=["--memory", "32m"], timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(1 << 22)
    assert "OOM" not in r.stderr


def test_cpus_half_throttles_a_busy_loop(run_bb):
    r = run_bb("sh", "-c", BUSY, opts=["--cpus", "0.5"], timeout=180)
    assert r.returncode == 0, r.stderr
    stat = keyed(r.stdout)
    assert int(stat["nr_throttled"]) >= 1, r.stdout
    assert int(stat["throttled_usec"]) > 0, r.stdout
    ratio = int(stat["usage_usec"]) / (int(stat["wall_cs"]) * 10_000)
    # cpu.max "50000 100000": half a CPU per 100 ms period (one loop alone would take ~1.0).
    assert 0.3 <= ratio <= 0.7, r.stdout


def test_limits_and_cgroup_namespace_inside(run_bb):
    script = ("cd /sys/fs/cgroup; cat memory.max pids.max memory.high memory.swap.max cpu.max"
              " /proc/self/cgroup; touch x 2>/dev/null && echo writable || echo ro")
    r = run_bb("sh", "-c", script, opts=["--memory", "64m", "--pids-limit", "50",
                                         "--cgroup-conf", "memory.high=48m",
                                         "--memory-swap", "96m", "--cpus", "1.5"])
    assert r.returncode == 0, r.stderr
    # --memory-swap counts memory and swap (podman); memory.swap.max holds the swap alone.
    assert r.stdout.split() == [str(64 << 20), "50", str(48 << 20), str(32 << 20),
                                "150000", "100000", "0::/", "ro"]


def test_an_unknown_cgroup_file_is_a_clear_error(run_bb, delegated):
    r = run_bb("true", opts=["--cgroup-conf", "memory.nonsense=1"])
    assert r.returncode == 125
    assert "--cgroup-conf memory.nonsense=1" in r.stderr and "no cgroup file" in r.stderr, r.stderr
    assert container_cgroups(delegated) == []


def test_without_limits_rl_makes_no_cgroup(rl, busybox_rootfs, delegated):
    # PID 1 ignores signals it has no handler for: the shell traps TERM to end the test.
    proc = rl.popen("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs),
                    "sh", "-c", "trap 'exit 0' TERM; sleep 601 & wait")
    try:
        pid = wait_for(lambda: _find_process("sleep 601"), "the container's sleep")
        path = Path(f"/proc/{pid}/cgroup").read_text().strip()
        # It stayed in the cgroup rl was started in; no container cgroup was made.
        launcher = Path(f"/proc/{proc.pid}/cgroup").read_text().strip()
        assert path == launcher
        assert container_cgroups(delegated) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=60) != 0:
            pytest.fail(f"rl run did not end cleanly: {proc.stderr.read().decode()}")


def _find_process(cmdline: str) -> int | None:
    want = cmdline.replace(" ", "\0") + "\0"
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == want.encode():
                    return int(entry)
            except OSError:
                pass
    return None


def _running_cgroup(delegated: Path) -> Path | None:
    for cg in container_cgroups(delegated):
        procs = (cg / "cgroup.procs").read_text().split()
        if any(_comm(int(p)) == "sleep" for p in procs):
            return cg
    return None


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_no_cgroup_left_after_the_container_is_sigkilled(rl, busybox_rootfs, delegated):
    proc = rl.popen("run", "--rm", "--network", "none", "--pids-limit", "50",
                    "--rootfs", str(busybox_rootfs), "sleep", "600")
    try:
        cg = wait_for(lambda: _running_cgroup(delegated), "the container's cgroup")
        sleeper = next(int(p) for p in (cg / "cgroup.procs").read_text().split()
                       if _comm(int(p)) == "sleep")
        os.kill(sleeper, signal.SIGKILL)
        assert proc.wait(timeout=60) == 128 + signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert not cg.exists()
    assert container_cgroups(delegated) == []


def test_cgroup_of_a_sigkilled_rl_is_removed_by_the_next_run(rl, busybox_rootfs, run_bb,
                                                              delegated):
    proc = rl.popen("run", "--rm", "--network", "none", "--pids-limit", "50",
                    "--rootfs", str(busybox_rootfs), "sleep", "600")
    try:
        cg = wait_for(lambda: _running_cgroup(delegated), "the container's cgroup")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    # The helper and the container die with rl (PDEATHSIG, then the PID namespace goes)...
    wait_for(lambda: "populated 0" in (cg / "cgroup.events").read_text(), "the container to die")
    # ...but nobody removed the cgroup: the next run with limits does.
    assert cg.exists()
    r = run_bb("true", opts=["--pids-limit", "10"])
    assert r.returncode == 0, r.stderr
    assert not cg.exists()
    assert container_cgroups(delegated) == []


def test_exec_joins_the_containers_cgroup_and_sees_its_limits(rl, busybox_rootfs, delegated):
    r = rl("run", "-d", "--name", "limited", "--network", "none", "--pids-limit", "30",
           "--rootfs", str(busybox_rootfs), "sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait")
    assert r.returncode == 0, r.stderr
    try:
        e = rl("exec", "limited", "sh", "-c", "cat /proc/self/cgroup /sys/fs/cgroup/pids.max")
        assert e.returncode == 0, e.stderr
        assert e.stdout.split() == ["0::/", "30"], e.stdout
        # The exec'd process counts against the container's limit, not the user's cgroup.
        e = rl("exec", "limited", "sh", "-c", "cat /sys/fs/cgroup/pids.current")
        assert int(e.stdout.strip()) >= 3, e.stdout
    finally:
        rl("rm", "-f", "limited")
    wait_for(lambda: container_cgroups(delegated) == [], "the container's cgroup to go")
