"""Escape attempts towards the host: its processes, files, mounts, hostname, loopback, devices.

Each test names the attack and asserts the exact refusal the container sees, and, where the
target is on the host, that the host is unchanged afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def host_sleeper():
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


# -- processes -------------------------------------------------------------------------------

def test_attack_see_a_host_process_in_proc_or_ps(run_sec, host_sleeper):
    r = run_sec("sh", "-c", f"ls /proc/{host_sleeper}; ps -o pid,comm; true")
    assert f"ls: /proc/{host_sleeper}: No such file or directory" in r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert str(host_sleeper) not in [pid for pid, _ in rows]
    assert sorted(comm for _, comm in rows) == ["ps", "sh"]  # nothing of the host


def test_attack_kill_a_host_process(run_sec, host_sleeper):
    r = run_sec("kill", "-9", str(host_sleeper))
    assert r.returncode == 1
    assert "No such process" in r.stderr
    assert os.waitpid(host_sleeper, os.WNOHANG) == (0, 0)  # still running


def test_attack_ptrace_a_host_process(run_sec, host_sleeper):
    assert run_sec("probe", "ptrace", str(host_sleeper)).stdout.strip() == "SAFE ptrace errno=EPERM"
    # Without the filter and with CAP_SYS_PTRACE, the pid namespace still hides the target.
    r = run_sec("probe", "ptrace", str(host_sleeper),
                opts=["--security-opt", "seccomp=unconfined", "--cap-add", "SYS_PTRACE"])
    assert r.stdout.strip() == "SAFE ptrace errno=ESRCH"


# -- files -----------------------------------------------------------------------------------

def test_attack_read_a_host_file_outside_the_binds(run_sec, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "host-only").write_text("HOST SECRET\n")
    r = run_sec("sh", "-c", f"cat {tmp_path}/host-only; cat /data/../host-only; cat /data/../../host-only",
                opts=["-v", f"{shared}:/data"])
    assert "HOST SECRET" not in r.stdout
    assert r.stderr.count("No such file or directory") == 3, r.stderr


def test_attack_write_through_a_readonly_bind(run_sec, tmp_path):
    shared = tmp_path / "ro"
    shared.mkdir()
    r = run_sec("sh", "-c", "echo x > /data/f; probe remount_rw /data",
                opts=["-v", f"{shared}:/data:ro"])
    assert "can't create /data/f: Read-only file system" in r.stderr
    assert "SAFE remount_rw errno=EPERM" in r.stdout
    assert list(shared.iterdir()) == []


def test_attack_write_to_a_read_only_rootfs(run_sec, sec_rootfs):
    r = run_sec("touch", "/planted", opts=["--read-only"])
    assert r.returncode == 1
    assert "touch: /planted: Read-only file system" in r.stderr
    assert not (sec_rootfs / "planted").exists()


# -- masked and read-only paths ----------------------------------------------------------------

MASK_CANDIDATES = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts",
                   "/proc/sched_debug", "/sys/firmware", "/proc/acpi"]


def _mounts(run_sec, *opts: str) -> set[str]:
    out = run_sec("cat", "/proc/self/mountinfo", opts=list(opts)).stdout
    return {line.split()[4] for line in out.splitlines()}


def test_sensitive_proc_and_sys_paths_are_masked(run_sec):
    existing = [p for p in MASK_CANDIDATES if os.path.exists(p)]
    assert existing, "none of the masked paths exists on this kernel"
    mounts = _mounts(run_sec)
    assert set(existing) <= mounts
    assert "/proc/sys" in mounts and "/proc/bus" in mounts
    script = "; ".join(f"wc -c < {p}" for p in existing if os.path.isfile(p))
    sizes = run_sec("sh", "-c", script).stdout.split()
    assert sizes and set(sizes) == {"0"}  # /dev/null underneath
    if os.path.isdir("/sys/firmware"):
        assert run_sec("ls", "-A", "/sys/firmware").stdout == ""


def test_attack_read_proc_keys_shows_nothing(run_sec):
    assert os.path.exists("/proc/keys")
    r = run_sec("cat", "/proc/keys")
    assert r.returncode == 0 and r.stdout == ""


def test_attack_umount_a_masked_path_to_read_it(run_sec):
    r = run_sec("sh", "-c", "probe umount /proc/keys; cat /proc/keys | wc -c")
    assert r.stdout.split() == ["SAFE", "umount", "errno=EPERM", "0"]


@pytest.mark.parametrize("fs", ["proc", "sysfs"])
def test_attack_mount_procfs_or_sysfs_elsewhere_for_an_unmasked_view(run_sec, fs):
    cmd = f"mkdir -p /tmp/v; probe mount_{fs} /tmp/v"
    assert run_sec("sh", "-c", cmd).stdout.strip() == f"SAFE mount_{fs} errno=EPERM"
    # Not only the filter: without it, the missing CAP_SYS_ADMIN still stops the mount.
    r = run_sec("sh", "-c", cmd, opts=["--security-opt", "seccomp=unconfined"])
    assert r.stdout.strip() == f"SAFE mount_{fs} errno=EPERM"


def test_attack_write_proc_sys_is_read_only(run_sec):
    r = run_sec("sh", "-c", "echo 1 > /proc/sys/kernel/ns_last_pid")
    assert "Read-only file system" in r.stderr


def test_unmask_and_mask_options(run_sec):
    assert "/proc/keys" not in _mounts(run_sec, "--security-opt", "unmask=/proc/keys")
    gone = _mounts(run_sec, "--security-opt", "unmask=ALL")
    assert "/proc/keys" not in gone and "/proc/sys" not in gone
    r = run_sec("cat", "/etc/passwd", opts=["--security-opt", "mask=/etc/passwd:/etc/group"])
    assert r.returncode == 0 and r.stdout == ""


def test_privileged_has_no_masks(run_sec):
    mounts = _mounts(run_sec, "--privileged")
    assert "/proc/keys" not in mounts and "/proc/sys" not in mounts


def test_unknown_security_opt_is_a_usage_error_125(run_sec):
    r = run_sec("true", opts=["--security-opt", "seccomp"])
    assert r.returncode == 125 and "invalid --security-opt 'seccomp'" in r.stderr


# -- symlinks in the image -------------------------------------------------------------------

def _up_to_host_root(rootfs) -> str:
    return "../" * len(rootfs.resolve().parts)


def test_attack_etc_hosts_symlink_makes_rl_write_outside(run_sec, fresh_rootfs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "hosts").write_text("ORIGINAL\n")
    (fresh_rootfs / "etc" / "hosts").unlink()
    (fresh_rootfs / "etc" / "hosts").symlink_to(victim / "hosts")
    (fresh_rootfs / "etc" / "hostname").unlink()
    (fresh_rootfs / "etc" / "hostname").symlink_to(_up_to_host_root(fresh_rootfs) + str(victim)[1:] + "/hostname")
    (fresh_rootfs / "etc" / "resolv.conf").unlink()
    (fresh_rootfs / "etc" / "resolv.conf").symlink_to("/proc/self/root" + str(victim) + "/resolv.conf")
    r = run_sec("sh", "-c", "cat /etc/hosts; echo planted >> /etc/hosts", rootfs=fresh_rootfs,
                opts=["--hostname", "boxname"])
    assert "localhost" in r.stdout and "ORIGINAL" not in r.stdout, r.stdout + r.stderr
    assert (victim / "hosts").read_text() == "ORIGINAL\n"
    assert sorted(p.name for p in victim.iterdir()) == ["hosts"]


def test_attack_mount_target_symlink_makes_rl_mount_outside(run_sec, fresh_rootfs, tmp_path):
    victim = tmp_path / "victim-dir"
    victim.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (fresh_rootfs / "data").symlink_to(_up_to_host_root(fresh_rootfs) + str(victim)[1:])
    r = run_sec("sh", "-c", "touch /data/written-through-the-bind; cut -d' ' -f5 /proc/self/mountinfo",
                rootfs=fresh_rootfs, opts=["-v", f"{src}:/data"])
    assert r.returncode == 0, r.stderr
    assert list(victim.iterdir()) == []
    assert (src / "written-through-the-bind").exists()
    # The symlink was resolved inside the image: the bind sits on the container's own path
    # of that name, under the container's root.
    assert str(victim) in r.stdout.split()


# -- hostname, network, devices --------------------------------------------------------------

def test_attack_change_the_host_hostname(run_sec):
    before = socket.gethostname()
    assert run_sec("probe", "sethostname", "evil").stdout.strip() == "SAFE sethostname errno=EPERM"
    # --privileged may rename its own UTS namespace, never the host's.
    r = run_sec("sh", "-c", "hostname evil-privileged && hostname", opts=["--privileged"])
    assert r.stdout.strip() == "evil-privileged"
    assert socket.gethostname() == before


def test_attack_reach_a_host_loopback_service_with_network_none(run_sec):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        r = run_sec("sh", "-c", f"echo hello | nc 127.0.0.1 {port}")
        assert "Connection refused" in r.stderr, r.stderr
        time.sleep(0.1)
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()


def test_attack_create_a_device_node(run_sec):
    assert run_sec("probe", "mknod", "/tmp/null2").stdout.strip() == "SAFE mknod errno=EPERM"
    r = run_sec("probe", "mknod", "/tmp/null2", opts=["--privileged"])
    assert r.stdout.strip() == "SAFE mknod errno=EPERM"  # CAP_MKNOD of the host is never ours


def test_attack_use_a_host_device_through_a_volume(run_sec):
    # Volumes are nodev: a device node reached through one cannot be opened.
    r = run_sec("head", "-c", "1", "/dev-zero", opts=["-v", "/dev/zero:/dev-zero"])
    assert r.returncode == 1
    assert "Permission denied" in r.stderr
