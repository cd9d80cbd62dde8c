"""`rl run` end to end: the real rl, as an unprivileged user, on a busybox rootfs."""

from __future__ import annotations

import os
import pty
import signal
import socket
import struct
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import container_processes, need, need_tool

pytestmark = pytest.mark.integration


def test_command_is_pid_1_and_sees_only_its_processes(run_bb):
    r = run_bb("sh", "-c", "echo $$; ps -o pid,comm; true")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "1"
    pids = [ln.split()[0] for ln in lines[2:]]
    # sh (1) and ps: nothing of the host.
    assert pids[0] == "1" and len(pids) == 2, r.stdout


def test_hostname_is_the_containers_and_the_hosts_is_unchanged(run_bb):
    before = socket.gethostname()
    # Changing the hostname needs CAP_SYS_ADMIN (not in the default set, as in podman).
    r = run_bb("sh", "-c", "hostname; hostname changed-inside; hostname",
               opts=["--hostname", "box1", "--cap-add", "SYS_ADMIN"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["box1", "changed-inside"]
    assert socket.gethostname() == before
    r = run_bb("cat", "/etc/hostname")
    assert len(r.stdout.strip()) == 12  # default: the short container id


def test_root_inside_maps_to_the_user_and_the_subordinate_range(run_bb):
    r = run_bb("sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map")
    assert r.returncode == 0, r.stderr
    lines = [ln.split() for ln in r.stdout.splitlines()]
    assert lines[0] == ["0"]
    uid = os.getuid()
    assert lines[1] == ["0", str(uid), "1"]
    need(len(lines) >= 3 and lines[2][0] == "1", "the test user has no /etc/subuid range")
    assert int(lines[2][2]) >= 65536


def test_single_id_map_without_newuidmap(rl, busybox_rootfs, tmp_path):
    # A PATH without newuidmap/newgidmap: rl falls back to one id and says how to get ranges.
    r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs),
           "cat", "/proc/self/uid_map", env={"PATH": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", str(os.getuid()), "1"]
    assert "single id" in r.stderr


def test_files_written_inside_land_in_the_containers_storage_with_mapped_owners(rl, busybox_rootfs):
    r = rl("run", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "echo data > /created-by-root; echo x > /created-by-1000; chown 1000:1000 /created-by-1000")
    assert r.returncode == 0, r.stderr
    assert not (busybox_rootfs / "created-by-root").exists()  # the rootfs is never modified
    (container,) = list((rl.data / "containers").iterdir())
    upper = container / "upper"
    st = os.stat(upper / "created-by-root")
    assert st.st_uid == os.getuid()
    st = os.stat(upper / "created-by-1000")
    uid_map = Path("/etc/subuid").read_text()
    user = os.environ.get("USER") or ""
    start = next((int(ln.split(":")[1]) for ln in uid_map.splitlines()
                  if ln.split(":")[0] in (user, str(os.getuid()))), None)
    need(start is not None, "the test user has no /etc/subuid range")
    assert st.st_uid == start + 999


def test_a_mount_made_inside_is_invisible_on_the_host(rl, busybox_rootfs):
    p = rl.popen("run", "--rm", "--network", "none", "--cap-add", "SYS_ADMIN",
                 "--rootfs", str(busybox_rootfs), "sh", "-c",
                 "mount -t tmpfs rlmarkerfs /tmp && echo ready && sleep 30")
    try:
        assert p.stdout.readline().strip() == b"ready"
        for pid in ("self", "1"):
            try:
                text = Path(f"/proc/{pid}/mountinfo").read_text()
            except OSError:
                continue
            assert "rlmarkerfs" not in text
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)


@pytest.mark.parametrize(
    ("cmd", "opts", "code"),
    [
        (["true"], [], 0),
        (["sh", "-c", "exit 3"], [], 3),
        (["sh", "-c", "sleep 30 & kill -9 $!; wait $!"], [], 137),
        (["sh", "-c", "kill -TERM $$"], ["--init"], 143),
        (["no-such-command"], [], 127),
        (["/no/such/path"], [], 127),
        (["/etc/passwd"], [], 126),
        (["/etc"], [], 126),
        (["true"], ["--workdir", "/does/not/exist"], 126),
        (["true"], ["--bogus-flag"], 125),
        (["true"], ["--user", "nosuchuser"], 126),
    ],
)
def test_exit_codes(run_bb, cmd, opts, code):
    r = run_bb(*cmd, opts=opts)
    assert r.returncode == code, (r.stdout, r.stderr)
    if code in (125, 126, 127):
        assert r.stderr.startswith("Error: "), r.stderr


def test_bad_rootfs_is_125_and_leaves_nothing(rl, tmp_path):
    r = rl("run", "--rm", "--rootfs", str(tmp_path / "missing"), "true")
    assert r.returncode == 125
    assert "no such directory" in r.stderr
    assert not (rl.data / "containers").exists() or not list((rl.data / "containers").iterdir())


def test_failed_setup_with_rm_leaves_no_storage(rl, busybox_rootfs):
    r = rl("run", "--rm", "--network", "none", "-w", "/nope", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 126
    assert list((rl.data / "containers").iterdir()) == []


def test_rm_removes_the_containers_storage_even_with_subordinate_owned_files(rl, busybox_rootfs):
    r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "mkdir -p /a/b && touch /a/b/f && chown -R 1000:1000 /a && chmod 000 /a/b")
    assert r.returncode == 0, r.stderr
    assert list((rl.data / "containers").iterdir()) == []


def test_volume_read_write_and_read_only(run_bb, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in").write_text("from host\n")
    r = run_bb("sh", "-c", "cat /data/in; echo from-container > /data/out",
               opts=["-v", f"{shared}:/data"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from host\n"
    assert (shared / "out").read_text() == "from-container\n"
    r = run_bb("sh", "-c", "echo x > /data/other", opts=["-v", f"{shared}:/data:ro"])
    assert r.returncode != 0
    assert "Read-only file system" in r.stderr
    assert not (shared / "other").exists()


def test_read_only_rootfs(run_bb):
    r = run_bb("sh", "-c", "touch /newfile", opts=["--read-only"])
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    r = run_bb("sh", "-c", "touch /tmp/ok && echo ok", opts=["--read-only"])
    assert r.stdout.strip() == "ok", r.stderr


def test_tmpfs(run_bb):
    r = run_bb("sh", "-c", "grep ' /scratch ' /proc/mounts", opts=["--tmpfs", "/scratch"])
    assert r.returncode == 0 and "tmpfs" in r.stdout, r.stderr


def test_env_round_trips_awkward_values(run_bb, tmp_path):
    value = "two words = and\nnewline"
    envfile = tmp_path / "env"
    envfile.write_text("# comment\nFROM_FILE=file value\n")
    r = run_bb("sh", "-c", 'printf "%s|%s|%s|%s" "$AWK" "$FROM_FILE" "$container" "$HOME"',
               opts=["-e", f"AWK={value}", "--env-file", str(envfile)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{value}|file value|rl|/root"


def test_default_environment(run_bb):
    r = run_bb("env")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
    assert env["PATH"].startswith("/usr/local/sbin")
    assert env["container"] == "rl"
    assert "TERM" not in env
    assert len(env["HOSTNAME"]) == 12


def test_user_by_name_and_uid(run_bb):
    r = run_bb("sh", "-c", "id -u; id -g; echo $HOME", opts=["-u", "user"])
    assert r.stdout.split() == ["1000", "1000", "/home/user"], r.stderr
    r = run_bb("sh", "-c", "id -u; echo $HOME", opts=["-u", "4242"])
    assert r.stdout.split() == ["4242", "/"], r.stderr


def test_primary_group_is_in_the_supplementary_groups(run_bb):
    # as podman, buildah and docker do since CVE-2022-2989/2990/36109
    r = run_bb("sh", "-c", "cat /proc/self/status | grep ^Groups:", opts=["-u", "1000:1000"])
    assert r.stdout.split() == ["Groups:", "1000"], r.stderr


def test_stdin_passes_through_with_i(run_bb):
    r = run_bb("cat", opts=["-i"], input="hi\n")
    assert r.stdout == "hi\n"
    r = run_bb("cat", input="not read\n")
    assert r.stdout == ""  # without -i stdin is /dev/null, as in podman


def test_a_megabyte_of_output_is_intact(run_bb):
    r = run_bb("sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' 'x'", text=False, timeout=60)
    assert r.returncode == 0
    assert r.stdout == b"x" * 1048576


def test_sigpipe_behaves_as_in_a_shell(run_bb):
    r = run_bb("sh", "-c", "yes | head -n 2")
    assert r.stdout == "y\ny\n"


def test_tty_under_a_real_pty(rl, busybox_rootfs):
    master, slave = pty.openpty()
    termios.tcsetwinsize(slave, (33, 101)) if hasattr(termios, "tcsetwinsize") else None
    import fcntl

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    p = rl.popen("run", "--rm", "-t", "--network", "none", "--rootfs", str(busybox_rootfs),
                 "sh", "-c", "tty; stty size; echo TERM=$TERM",
                 stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    p.wait(30)
    os.close(master)
    text = out.decode(errors="replace")
    assert p.returncode == 0, text
    assert "/dev/pts/0" in text
    assert "33 101" in text
    assert "TERM=xterm" in text


def test_sigterm_to_rl_reaches_a_trap_in_the_container(rl, busybox_rootfs):
    p = rl.popen("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 'trap "echo got-term; exit 7" TERM; echo ready; while :; do sleep 0.1; done')
    assert p.stdout.readline().strip() == b"ready"
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 7, err
    assert b"got-term" in out


def test_sigkill_of_rl_leaves_no_container_process(rl, busybox_rootfs):
    marker = "31415926"
    p = rl.popen("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
                 f"sleep {marker} & echo ready; wait")
    assert p.stdout.readline().strip() == b"ready"
    assert container_processes(f"sleep {marker}")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    deadline = time.monotonic() + 10
    while container_processes(f"sleep {marker}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container_processes(f"sleep {marker}") == []


def test_timeout_kills_the_container_with_255(run_bb):
    start = time.monotonic()
    r = run_bb("sleep", "60", opts=["--timeout", "1"])
    assert r.returncode == 255, r.stderr
    assert time.monotonic() - start < 30


def test_init_reaps_orphans_and_forwards_signals(rl, busybox_rootfs):
    r = rl("run", "--rm", "--init", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "echo $$; (sleep 0.1 &) ; sleep 0.3; ps -o stat,comm | grep -c Z || true")
    assert r.returncode == 0, r.stderr
    pid, zombies = r.stdout.split()
    assert pid != "1"  # the command is not PID 1 under --init
    assert zombies == "0"


def test_network_none_has_only_loopback_up(run_bb):
    r = run_bb("sh", "-c", "ls /sys/class/net; ip -o link show lo 2>/dev/null || cat /sys/class/net/lo/operstate")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "lo" and r.stdout.split()[1] != "eth0"


def test_proc_sys_dev_layout(run_bb):
    r = run_bb("sh", "-c", "ls /dev; readlink /dev/ptmx; grep -E ' /(proc|sys|dev/pts|dev/shm) ' /proc/mounts")
    assert r.returncode == 0, r.stderr
    for dev in ("null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"):
        assert dev in r.stdout.split(), r.stdout
    assert "pts/ptmx" in r.stdout
    assert " /sys sysfs ro," in r.stdout


def test_run_help_lists_the_flags(rl):
    r = rl("run", "--help")
    assert r.returncode == 0
    assert "--rootfs" in r.stdout and "--timeout" in r.stdout


def test_no_command_is_an_error(rl, busybox_rootfs):
    r = rl("run", "--rm", "--rootfs", str(busybox_rootfs))
    assert r.returncode == 125
    assert "no command" in r.stderr


def test_newuidmap_missing_notice_says_how_to_fix(rl, busybox_rootfs, tmp_path):
    need_tool("newuidmap")
    r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "true",
           env={"PATH": str(tmp_path)})
    assert r.returncode == 0
    assert "newuidmap" in r.stderr or "uidmap" in r.stderr


def test_host_network_mode_sees_host_interfaces(run_bb):
    host_ifaces = sorted(os.listdir("/sys/class/net"))
    r = run_bb("ls", "/sys/class/net", opts=["--network", "host"])
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == host_ifaces


def test_a_container_without_name_gets_one_that_rm_accepts(rl, busybox_rootfs):
    import json
    import re

    r = rl("run", "--network", "none", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 0, r.stderr
    (entry,) = json.loads(rl("ps", "-a", "--format", "json").stdout)
    (name,) = entry["Names"]
    assert re.fullmatch(r"[a-z]+_[a-z]+", name)
    assert rl("rm", name).returncode == 0
    assert json.loads(rl("ps", "-a", "--format", "json").stdout) == []
    assert os.listdir(rl.data / "names") == []
