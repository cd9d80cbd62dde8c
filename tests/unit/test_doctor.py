"""rl doctor's checks against deliberately broken hosts: sysctls from a fixture tree, subid
files without the user, a PATH without helpers, runtime dirs that are wrong, a fake
mountinfo with NFS storage and a cgroup v2 tree in a temporary directory."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from rootless.doctor import (
    FAILURE,
    OK,
    WARNING,
    Check,
    Host,
    as_json,
    can_run,
    cgroup,
    format_text,
    ids,
    kernel,
    network,
    session,
)
from rootless.paths import Paths
from tests.conftest import need


def sysctl_tree(root: Path, **values: str) -> Path:
    for name, value in values.items():
        path = root.joinpath(*name.split("__"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return root


def make_host(tmp_path: Path, **env: str) -> Host:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    base.update(env)
    paths = Paths(tmp_path / "data", tmp_path / "run" / "rootless", tmp_path / "config")
    return Host(base, paths=paths)


def only(checks: list[Check], id: str) -> Check:
    [check] = [c for c in checks if c.id == id]
    return check


# -- kernel and sysctls ---------------------------------------------------------------------
@pytest.mark.parametrize("release,status", [("6.18.1-x", OK), ("5.4.0-150-generic", WARNING),
                                            ("3.2.0", FAILURE)])
def test_kernel_version(tmp_path: Path, release: str, status: str) -> None:
    [check] = kernel.check_kernel(make_host(tmp_path, RL_KERNEL_RELEASE=release))
    assert check.status == status and release in check.found
    if status != OK:
        assert "5.11" in check.fix


def test_real_sysctls_allow_userns(tmp_path: Path) -> None:
    [check] = kernel.check_userns_sysctls(make_host(tmp_path))
    assert check.status == OK, check


@pytest.mark.parametrize("name,value,fix", [
    ("user__max_user_namespaces", "0", "sudo sysctl -w user.max_user_namespaces="),
    ("kernel__unprivileged_userns_clone", "0", "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
    ("kernel__apparmor_restrict_unprivileged_userns", "1", "userns,"),
])
def test_blocking_sysctls_fail_with_the_fix(tmp_path: Path, name: str, value: str, fix: str) -> None:
    root = sysctl_tree(tmp_path / "sys", **{"user__max_user_namespaces": "15000", name: value})
    host = make_host(tmp_path, RL_SYSCTL_ROOT=str(root))
    [check] = kernel.check_userns_sysctls(host)
    assert check.status == FAILURE
    assert fix in check.fix
    if "apparmor" in name:
        assert "kernel.apparmor_restrict_unprivileged_userns=0" in check.fix
        assert "apparmor_parser -r /etc/apparmor.d/rl" in check.fix


@pytest.mark.parametrize("ping,status", [("1\t0", WARNING), ("0\t2147483647", OK)])
def test_ping_group_range(tmp_path: Path, ping: str, status: str) -> None:
    root = sysctl_tree(tmp_path / "sys", net__ipv4__ping_group_range=ping,
                       net__ipv4__ip_unprivileged_port_start="80")
    checks = network.check_port_sysctls(make_host(tmp_path, RL_SYSCTL_ROOT=str(root)))
    assert only(checks, "ping").status == status
    if status == WARNING:
        assert "ping_group_range='0 2147483647'" in only(checks, "ping").fix
    ports = only(checks, "ports")
    assert ports.status == OK and "port_start=80" in ports.found and not ports.fix


def test_high_port_start_says_how_to_publish_80(tmp_path: Path) -> None:
    root = sysctl_tree(tmp_path / "sys", net__ipv4__ip_unprivileged_port_start="1024")
    ports = only(network.check_port_sysctls(make_host(tmp_path, RL_SYSCTL_ROOT=str(root))), "ports")
    assert "below 1024 is refused" in ports.found
    assert "ip_unprivileged_port_start=80" in ports.fix


# -- subordinate ids and helpers -------------------------------------------------------------
def subid_files(tmp_path: Path, uid_text: str, gid_text: str | None = None) -> dict[str, str]:
    (tmp_path / "subuid").write_text(uid_text)
    (tmp_path / "subgid").write_text(uid_text if gid_text is None else gid_text)
    return {"RL_SUBUID_FILE": str(tmp_path / "subuid"), "RL_SUBGID_FILE": str(tmp_path / "subgid")}


def test_user_without_ranges(tmp_path: Path) -> None:
    host = make_host(tmp_path, **subid_files(tmp_path, "someoneelse:100000:65536\n"))
    [check] = ids.check_subids(host)
    assert check.status == WARNING
    assert f"no ranges for {host.user}" in check.found
    assert f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {host.user}" in check.fix


def test_user_with_ranges(tmp_path: Path) -> None:
    host = make_host(tmp_path)
    host = make_host(tmp_path, **subid_files(tmp_path, f"{host.user}:200000:65536\n"))
    [check] = ids.check_subids(host)
    assert check.status == OK and "200000-265535" in check.found


def test_small_range_and_malformed_file(tmp_path: Path) -> None:
    user = make_host(tmp_path).user
    host = make_host(tmp_path, **subid_files(tmp_path, f"{user}:200000:1000\n"))
    assert ids.check_subids(host)[0].status == WARNING
    host = make_host(tmp_path, **subid_files(tmp_path, f"{user}:x:1000\n"))
    [check] = ids.check_subids(host)
    assert check.status == FAILURE and "line 1" in check.found


def test_missing_helpers_on_path(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    checks = ids.check_helpers(make_host(tmp_path, PATH=str(empty)))
    assert only(checks, "uidmap").status == WARNING
    assert "newuidmap and newgidmap not found" in only(checks, "uidmap").found
    assert "sudo apt install uidmap" in only(checks, "uidmap").fix
    assert only(checks, "uidmap-works").status == WARNING


def test_helpers_without_privilege_fail_when_ranges_exist(tmp_path: Path) -> None:
    need(shutil.which("newuidmap") is not None, "newuidmap is not installed (uidmap)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("newuidmap", "newgidmap"):
        # A copy made by an ordinary user (or chmod'ed here) is not setuid.
        shutil.copy(shutil.which(name), bindir / name)  # type: ignore[arg-type]
        os.chmod(bindir / name, 0o755)
    user = make_host(tmp_path).user
    host = make_host(tmp_path, PATH=str(bindir), **subid_files(tmp_path, f"{user}:100000:65536\n"))
    checks = ids.check_helpers(host)
    assert only(checks, "uidmap").status == FAILURE
    assert f"sudo chmod u+s {bindir}/newuidmap" in only(checks, "uidmap").fix
    assert "cap_setgid" in only(checks, "uidmap").fix


# -- cgroups ---------------------------------------------------------------------------------
def fake_proc(tmp_path: Path, mountinfo: str, cgroup_line: str = "0::/user.slice/me\n") -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    (proc / "self" / "cgroup").write_text(cgroup_line)
    return str(proc)


def test_unified_cgroup_with_delegation(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    mine = root / "user.slice" / "me"
    mine.mkdir(parents=True)
    (mine / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (mine / "cgroup.procs").write_text("")
    proc = fake_proc(tmp_path, f"30 1 0:26 / {root} rw - cgroup2 cgroup2 rw\n")
    host = Host({"PATH": "/usr/bin"}, paths=make_host(tmp_path).paths, proc_root=proc)
    checks = cgroup.check_cgroups(host)
    assert "hybrid" in only(checks, "cgroups").found  # the fixture is not at /sys/fs/cgroup
    assert only(checks, "delegation").status == OK

    (mine / "cgroup.controllers").write_text("memory pids\n")
    checks = cgroup.check_cgroups(host)
    delegation = only(checks, "delegation")
    assert delegation.status == WARNING and "missing cpu cpuset io" in delegation.found
    assert "Delegate=cpu cpuset io memory pids" in delegation.fix


def test_no_cgroup2(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, "30 1 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
                     "4:memory:/\n")
    host = Host({"PATH": "/usr/bin"}, paths=make_host(tmp_path).paths, proc_root=proc)
    checks = cgroup.check_cgroups(host)
    assert only(checks, "cgroups").status == WARNING
    assert "systemd.unified_cgroup_hierarchy=1" in only(checks, "cgroups").fix


# -- session, runtime dir, storage -----------------------------------------------------------
def test_no_user_manager(tmp_path: Path) -> None:
    host = make_host(tmp_path, XDG_RUNTIME_DIR=str(tmp_path))
    [check] = session.check_user_session(host)
    assert check.status == WARNING
    assert f"loginctl enable-linger {host.user}" in check.fix


def test_runtime_dir_unset(tmp_path: Path) -> None:
    [check] = session.check_runtime_dir(make_host(tmp_path))
    assert check.status == WARNING and "not set" in check.found


def test_runtime_dir_missing(tmp_path: Path) -> None:
    [check] = session.check_runtime_dir(make_host(tmp_path, XDG_RUNTIME_DIR=str(tmp_path / "no")))
    assert check.status == FAILURE and "install -d -m 0700" in check.fix


def test_runtime_dir_unwritable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere; scripts/test.sh runs this as the test user")
    d = tmp_path / "rt"
    d.mkdir(mode=0o500)
    try:
        [check] = session.check_runtime_dir(make_host(tmp_path, XDG_RUNTIME_DIR=str(d)))
    finally:
        d.chmod(0o700)
    assert check.status == FAILURE and "not writable" in check.found


def test_runtime_dir_wrong_mode_and_not_tmpfs(tmp_path: Path) -> None:
    d = tmp_path / "rt"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    [check] = session.check_runtime_dir(make_host(tmp_path, XDG_RUNTIME_DIR=str(d)))
    assert check.status == WARNING and "mode 0755, not 0700" in check.found
    assert "chmod 0700" in check.fix


def test_runtime_dir_on_tmpfs_is_ok(tmp_path: Path) -> None:
    import tempfile

    need(session.mount_of("/dev/shm", Path("/proc/self/mountinfo").read_text())[1] == "tmpfs",
         "/dev/shm is not tmpfs here")
    d = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        d.chmod(0o700)
        [check] = session.check_runtime_dir(make_host(tmp_path, XDG_RUNTIME_DIR=str(d)))
    finally:
        d.rmdir()
    assert check.status == OK, check


def test_storage_on_nfs_fails(tmp_path: Path) -> None:
    store = tmp_path / "nfs" / "store"
    store.mkdir(parents=True)
    proc = fake_proc(tmp_path, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
                     f"50 1 0:50 / {tmp_path / 'nfs'} rw - nfs4 server:/home rw\n")
    paths = Paths(store, tmp_path / "run", tmp_path / "config")
    [check] = session.check_storage(Host({"PATH": "/usr/bin"}, paths=paths, proc_root=proc))
    assert check.status == FAILURE and "nfs4 cannot hold files owned by subordinate ids" in check.found
    assert "[storage] path" in check.fix


def test_storage_on_local_disk(tmp_path: Path) -> None:
    [check] = session.check_storage(make_host(tmp_path))
    assert check.status in (OK, WARNING), check  # a test tmp dir may be on tmpfs or overlay


def test_mount_of_escaped_path() -> None:
    info = "1 0 8:1 / / rw - ext4 /dev/sda rw\n2 1 0:5 / /mnt/my\\040disk rw - xfs /dev/sdb rw\n"
    assert session.mount_of("/mnt/my disk/x", info) == ("/mnt/my disk", "xfs")
    assert session.mount_of("/mnt/my", info) == ("/", "ext4")


# -- devices ---------------------------------------------------------------------------------
def test_missing_device(tmp_path: Path) -> None:
    check = network._device(make_host(tmp_path), str(tmp_path / "tun"), "tun", "pasta")
    assert check.status == WARNING and "modprobe tun" in check.fix


def test_unopenable_device_gives_udev_fix(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root opens any file")
    dev = tmp_path / "tun"
    dev.write_text("")
    dev.chmod(0o600)
    os.chmod(dev, 0)  # stands in for a 0600 root-owned node
    check = network._device(make_host(tmp_path), str(dev), "tun", "pasta")
    assert check.status == WARNING
    assert f"sudo chmod 0666 {dev}" in check.fix and 'KERNEL=="tun", MODE="0666"' in check.fix


def test_real_tun_state_is_explained() -> None:
    host = Host()
    [check] = network.check_tun(host)
    if os.access("/dev/net/tun", os.R_OK | os.W_OK):
        assert check.status == OK
    else:
        assert check.status == WARNING and "chmod 0666 /dev/net/tun" in check.fix
        mode = stat.S_IMODE(os.stat("/dev/net/tun").st_mode)
        if mode == 0o600:
            assert "0600" in check.found


def test_no_network_helpers(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    [check] = network.check_network_helpers(make_host(tmp_path, PATH=str(empty)))
    assert check.status == WARNING and "apt install passt" in check.fix
    [fuse] = network.check_fuse(make_host(tmp_path, PATH=str(empty)))
    assert fuse.status == WARNING and "apt install fuse-overlayfs" in fuse.fix


# -- output ----------------------------------------------------------------------------------
def test_output_and_verdict() -> None:
    checks = [Check("a", "A", OK, "fine"), Check("b", "B", WARNING, "meh", "do x\ndo y")]
    assert can_run(checks)
    text = format_text(checks)
    assert "fix: do x" in text and "     do y" in text and "\033[" not in text
    assert "rl can run containers here. 1 warning(s)" in text
    assert "\033[33m" in format_text(checks, colour=True)
    checks.append(Check("c", "C", FAILURE, "broken", "fix it"))
    assert not can_run(checks)
    data = as_json(checks)
    assert data["can_run_containers"] is False and data["checks"][2]["fix"] == "fix it"


def test_the_network_check_names_the_default_helper(tmp_path: Path) -> None:
    """slirp4netns when installed, else pasta (rootless.network.default_mode): doctor says
    which one `rl run` uses, in that order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("pasta", "slirp4netns"):
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\necho {name} 1.0\n")
        tool.chmod(0o755)
    [both] = network.check_network_helpers(make_host(tmp_path, PATH=str(bin_dir)))
    assert both.status == OK and both.found.endswith("; the default network: slirp4netns")
    assert both.found.index("slirp4netns (") < both.found.index("pasta (")
    (bin_dir / "slirp4netns").unlink()
    [pasta] = network.check_network_helpers(make_host(tmp_path, PATH=str(bin_dir)))
    assert pasta.found.endswith("slirp4netns not found; the default network: pasta")
