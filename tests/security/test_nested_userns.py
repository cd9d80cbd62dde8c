"""Nested user namespaces: what podman's default profile lets a container do (podman, buildah,
bubblewrap and browsers' sandboxes run inside containers), and what stays refused.

A nested user namespace gives its creator every capability over the namespaces it owns, never
over the container's or the host's: mounts it inherits are locked together (MNT_LOCKED, so a
mask cannot be unmounted and a read-only mount cannot be made writable), a new procfs or sysfs
is refused while masks hide parts of the existing one ("mount_too_revealing", fs/namespace.c),
device nodes stay unusable, and the seccomp filter is inherited by every descendant.
podman 4.3 on this host, for comparison (busybox image, default options):
  unshare -Ur id -u                              0
  unshare -Urm; mount -t tmpfs t /tmp            works
  unshare -Urmpf --mount-proc                    mount proc: Operation not permitted
  unshare -Uru hostname x                        sethostname: Operation not permitted
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_nested_user_namespace_maps_root(run_sec):
    r = run_sec("unshare", "-Ur", "id", "-u")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0\n"


@pytest.mark.parametrize("call", ["unshare_user", "clone_newuser", "clone3_newuser"])
def test_every_way_to_create_a_user_namespace_is_allowed(run_sec, call):
    # clone3 passes its flags in memory: the profile allows it whole, as podman's does.
    r = run_sec("probe", call)
    assert r.stdout.startswith(f"RISK {call} rc="), r.stdout + r.stderr


def test_nested_mount_namespace_mounts_a_tmpfs_the_container_does_not_see(run_sec):
    r = run_sec("sh", "-c",
                "unshare -Urm sh -c 'mount -t tmpfs nested /tmp && echo hi > /tmp/x && cat /tmp/x"
                " && grep -c \"^nested /tmp tmpfs\" /proc/self/mounts';"
                " echo outer=$(grep -c '^nested ' /proc/self/mounts)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["hi", "1", "outer=0"], r.stdout + r.stderr


def test_nested_mount_namespace_binds_and_unmounts_its_own_mounts(run_sec):
    r = run_sec("unshare", "-Urm", "sh", "-c",
                "mkdir -p /tmp/a /tmp/b && echo in-a > /tmp/a/f && mount -o bind /tmp/a /tmp/b"
                " && cat /tmp/b/f && umount /tmp/b && ls /tmp/b | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["in-a", "0"]


def test_nested_network_namespace_has_its_own_loopback(run_sec):
    r = run_sec("unshare", "-Urn", "sh", "-c", "ip link set lo up && cat /sys/class/net/lo/operstate"
                " ; ls /sys/class/net")
    assert r.returncode == 0, r.stderr
    assert "lo" in r.stdout.split()


def test_nested_pid_namespace_with_an_unmasked_proc(run_sec):
    # With the default masks a new procfs is refused (below); without them — podman's
    # `--security-opt unmask=ALL` — `unshare --mount-proc` works, and shows only its own pids.
    r = run_sec("unshare", "-Urmpf", "--mount-proc", "sh", "-c", "echo $$; ls /proc | grep -c '^[0-9]'",
                opts=["--security-opt", "unmask=ALL"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "1", r.stdout


# -- what stays refused ------------------------------------------------------------------------

def test_attack_new_procfs_from_a_nested_pid_namespace_under_the_masks(run_sec):
    # podman answers the same: the masks over /proc would not hide anything in a fresh procfs.
    r = run_sec("unshare", "-Urmpf", "--mount-proc", "true")
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr, r.stderr
    r = run_sec("unshare", "-Urmpf", "sh", "-c", "mkdir -p /tmp/p; probe mount_proc /tmp/p")
    assert r.stdout.strip() == "SAFE mount_proc errno=EPERM", r.stdout + r.stderr


def test_attack_new_sysfs_from_a_nested_network_namespace(run_sec):
    r = run_sec("unshare", "-Urmn", "sh", "-c", "mkdir -p /tmp/s; probe mount_sysfs /tmp/s")
    assert r.stdout.strip() == "SAFE mount_sysfs errno=EPERM", r.stdout + r.stderr


def test_attack_unmount_a_mask_from_a_nested_mount_namespace(run_sec):
    # The masks came from a more privileged namespace: locked to what they cover.
    r = run_sec("unshare", "-Urm", "sh", "-c", "probe umount /proc/keys; cat /proc/keys | wc -c")
    assert r.stdout.split()[0] == "SAFE", r.stdout + r.stderr
    assert r.stdout.split()[-1] == "0"


def test_attack_make_proc_sys_writable_from_a_nested_mount_namespace(run_sec):
    r = run_sec("unshare", "-Urm", "sh", "-c",
                "probe remount_rw /proc/sys; echo 1 > /proc/sys/kernel/ns_last_pid")
    assert r.stdout.strip() == "SAFE remount_rw errno=EPERM", r.stdout + r.stderr
    assert "Read-only file system" in r.stderr


def test_attack_device_node_from_a_nested_namespace(run_sec):
    r = run_sec("unshare", "-Urm", "sh", "-c", "mount -t tmpfs t /tmp && probe mknod /tmp/null2")
    assert r.stdout.strip() == "SAFE mknod errno=EPERM", r.stdout + r.stderr


def test_attack_sethostname_in_a_nested_uts_namespace_is_still_the_filters(run_sec, marked_profile):
    # The kernel would allow it (the nested namespace owns the new UTS namespace); podman's
    # profile refuses it without CAP_SYS_ADMIN, and so does rl's: the marked errno proves
    # that the refusal is the profile's.
    r = run_sec("unshare", "-Uru", "probe", "sethostname", "nested")
    assert r.stdout.strip() == "SAFE sethostname errno=EPERM", r.stdout + r.stderr
    r = run_sec("unshare", "-Uru", "probe", "sethostname", "nested",
                opts=["--security-opt", f"seccomp={marked_profile}"])
    assert r.stdout.strip() == "SAFE sethostname errno=EOPNOTSUPP", r.stdout + r.stderr
    r = run_sec("unshare", "-Uru", "sh", "-c", "hostname nested && hostname",
                opts=["--security-opt", "seccomp=unconfined"])
    assert r.stdout.strip() == "nested", r.stdout + r.stderr


@pytest.mark.parametrize("call", ["keyctl", "bpf", "userfaultfd", "kexec_load", "open_by_handle_at"])
def test_attack_denied_calls_stay_denied_inside_a_nested_namespace(run_sec, marked_profile, call):
    r = run_sec("unshare", "-Urm", "probe", call, opts=["--security-opt", f"seccomp={marked_profile}"])
    assert r.stdout.strip() == f"SAFE {call} errno=EOPNOTSUPP", r.stdout + r.stderr
