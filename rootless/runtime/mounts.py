"""The container's mount plan for `rl run`: plain data built by a pure function, applied by
rootless.primitives.mounts.apply_plan inside PID 1's new mount namespace.

Targets are paths *inside* the container (for example "/proc"); the rootfs itself is mounted
first by the caller.
"""

from __future__ import annotations

import errno

from rootless.kernel import constants as k
from rootless.primitives.mounts import MountOp

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

# Host device nodes bind-mounted into the container's /dev (an unprivileged user cannot mknod).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

DEFAULT_TMPFS_OPTS = "mode=1777,size=65536k"

# What a kernel or host without a feature answers to its mount: not built in, or refused.
NOT_HERE = (errno.ENODEV, errno.EPERM)


def plan_mounts(
    *,
    host_network: bool,
    volumes: Iterable[Any],
    etc_files: dict[str, str],
    gid_5_mapped: bool,
    read_only: bool,
    read_only_tmpfs: bool,
    masked: Iterable[str] = (),
    readonly_paths: Iterable[str] = (),
    cgroup_ns: bool = False,
) -> list[MountOp]:
    """The mounts made inside the new root, in order (the rootfs itself is mounted first by the
    caller). `etc_files` maps a container path (/etc/hosts) to the host file bind-mounted there."""
    nsd = k.MS_NOSUID | k.MS_NODEV
    plan: list[MountOp] = [
        # A new procfs instance shows only this PID namespace; mount(2) for proc needs a
        # process inside that namespace, which is why PID 1 (not the helper) runs this plan.
        MountOp("mount", "/proc", "proc", "proc", nsd | k.MS_NOEXEC),
        MountOp("mount", "/dev", "tmpfs", "tmpfs", k.MS_NOSUID | k.MS_STRICTATIME, "mode=755,size=65536k"),
    ]
    for dev in DEVICES:
        plan.append(MountOp("file", f"/dev/{dev}"))
        plan.append(MountOp("bind", f"/dev/{dev}", f"/dev/{dev}", flags=k.MS_NOSUID | k.MS_NOEXEC))
    # A new devpts instance: the container's ptys are its own (devpts(5) "newinstance").
    # gid=5 (tty) only when that gid exists in our namespace, or the mount fails with EINVAL.
    pts_opts = "newinstance,ptmxmode=0666,mode=0620" + (",gid=5" if gid_5_mapped else "")
    plan += [
        MountOp("mount", "/dev/pts", "devpts", "devpts", k.MS_NOSUID | k.MS_NOEXEC, pts_opts),
        MountOp("symlink", "/dev/ptmx", "pts/ptmx"),
        MountOp("mount", "/dev/shm", "shm", "tmpfs", nsd | k.MS_NOEXEC, DEFAULT_TMPFS_OPTS),
        # ENODEV: a kernel without POSIX message queues; EPERM: one that refuses them here.
        MountOp("mount", "/dev/mqueue", "mqueue", "mqueue", nsd | k.MS_NOEXEC, skip_on=NOT_HERE),
        MountOp("symlink", "/dev/fd", "/proc/self/fd"),
        MountOp("symlink", "/dev/stdin", "/proc/self/fd/0"),
        MountOp("symlink", "/dev/stdout", "/proc/self/fd/1"),
        MountOp("symlink", "/dev/stderr", "/proc/self/fd/2"),
    ]
    if host_network:
        # sysfs can be mounted only by the owner of the network namespace; with the host's
        # network we bind the host's /sys read-only instead, as podman does.
        plan.append(MountOp("bind", "/sys", "/sys", flags=nsd | k.MS_NOEXEC | k.MS_RDONLY))
    else:
        plan.append(MountOp("mount", "/sys", "sysfs", "sysfs", nsd | k.MS_NOEXEC | k.MS_RDONLY))
    if cgroup_ns:
        # A new cgroup2 instance from inside the cgroup namespace shows the container's own
        # cgroup as its root (cgroup_namespaces(7)).
        plan.append(MountOp("mount", "/sys/fs/cgroup", "cgroup2", "cgroup2",
                            nsd | k.MS_NOEXEC | k.MS_RDONLY, skip_on=NOT_HERE))
    for target, source in etc_files.items():
        plan.append(MountOp("file", target))
        plan.append(MountOp("bind", target, source, flags=nsd | k.MS_NOEXEC))
    if read_only and read_only_tmpfs:
        for target in ("/tmp", "/var/tmp", "/run"):
            plan.append(MountOp("mount", target, "tmpfs", "tmpfs", nsd, DEFAULT_TMPFS_OPTS))
    for vol in volumes:
        if vol.kind == "tmpfs":
            opts = vol.options or DEFAULT_TMPFS_OPTS
            flags = nsd | (k.MS_RDONLY if vol.readonly else 0)
            plan.append(MountOp("mount", vol.destination, "tmpfs", "tmpfs", flags, opts))
        elif vol.kind == "overlay":
            # layers of another image or build stage (rl build's RUN --mount=type=bind,from=):
            # options hold lowerdir=...[,upperdir=,workdir=],userxattr
            flags = k.MS_NOSUID | k.MS_NODEV | (k.MS_RDONLY if vol.readonly else 0)
            plan.append(MountOp("mount", vol.destination, "overlay", "overlay", flags, vol.options))
        else:
            flags = k.MS_RDONLY if vol.readonly else 0
            plan.append(MountOp("bind", vol.destination, vol.source, flags=flags | k.MS_NOSUID | k.MS_NODEV))
    # A masked or read-only path that this kernel does not have is skipped (the step checks
    # first; ENOENT covers a /proc entry gone in between). Any other failure is an error:
    # a mask that silently failed would leave the path readable (runc decides the same).
    for path in masked:
        plan.append(MountOp("mask", path, skip_on=(errno.ENOENT,)))
    for path in readonly_paths:
        plan.append(MountOp("remount", path, flags=k.MS_RDONLY, skip_on=(errno.ENOENT,)))
    return plan
