"""A bundle's config.json -> the launcher's plan (rootless.runtime.launcher.Prepared): the same
data `rl run` builds from its flags, so one launcher, helper and PID 1 run both.

Everything is decided here, before any process exists: the namespaces to create or join
(their paths opened and checked now, so another user's process is refused with the field
named), the id maps, the mount list, the security plan, the cgroup and PID 1's set-up.
"""

from __future__ import annotations

import errno
import fcntl
import os

from rootless.kernel import constants as k
from rootless.primitives.mounts import MountOp
from rootless.runtime.container import DEFAULT_PATH, ContainerSetup
from rootless.runtime.oci.config import OciConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NS_FLAGS = {"pid": k.CLONE_NEWPID, "network": k.CLONE_NEWNET, "mount": k.CLONE_NEWNS,
            "ipc": k.CLONE_NEWIPC, "uts": k.CLONE_NEWUTS, "user": k.CLONE_NEWUSER,
            "cgroup": k.CLONE_NEWCGROUP, "time": k.CLONE_NEWTIME}
NS_GET_NSTYPE = 0xB703  # <linux/nsfs.h> _IO(0xb7, 0x3): the CLONE_NEW* type of an nsfs fd
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1): a new fd of the user namespace owning it

# mount(8) options -> (flags to set, flags to clear), as runc and crun read them.
MOUNT_FLAGS = {
    "ro": (k.MS_RDONLY, 0), "rw": (0, k.MS_RDONLY),
    "nosuid": (k.MS_NOSUID, 0), "suid": (0, k.MS_NOSUID),
    "nodev": (k.MS_NODEV, 0), "dev": (0, k.MS_NODEV),
    "noexec": (k.MS_NOEXEC, 0), "exec": (0, k.MS_NOEXEC),
    "sync": (k.MS_SYNCHRONOUS, 0), "async": (0, k.MS_SYNCHRONOUS),
    "dirsync": (k.MS_DIRSYNC, 0),
    "mand": (k.MS_MANDLOCK, 0), "nomand": (0, k.MS_MANDLOCK),
    "noatime": (k.MS_NOATIME, 0), "atime": (0, k.MS_NOATIME),
    "nodiratime": (k.MS_NODIRATIME, 0), "diratime": (0, k.MS_NODIRATIME),
    "relatime": (k.MS_RELATIME, 0), "norelatime": (0, k.MS_RELATIME),
    "strictatime": (k.MS_STRICTATIME, 0), "nostrictatime": (0, k.MS_STRICTATIME),
    "nosymfollow": (k.MS_NOSYMFOLLOW, 0), "symfollow": (0, k.MS_NOSYMFOLLOW),
    "defaults": (0, 0), "remount": (0, 0),
}
PROPAGATION = {"private": k.MS_PRIVATE, "shared": k.MS_SHARED, "slave": k.MS_SLAVE,
               "unbindable": k.MS_UNBINDABLE}
# Host device nodes every container gets (runtime-spec config-linux.md "Default Devices");
# bind-mounted: an unprivileged user cannot mknod(2) a device.
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# linux.resources names of the limits, for messages (cgroups.plan_writes uses rl's flags).
RESOURCE_LABELS = {
    "--memory": "linux.resources.memory.limit", "--memory-swap": "linux.resources.memory.swap",
    "--memory-reservation": "linux.resources.memory.reservation",
    "--pids-limit": "linux.resources.pids.limit", "--cpus": "linux.resources.cpu.quota",
    "--cpu-weight": "linux.resources.cpu.shares", "--cpuset-cpus": "linux.resources.cpu.cpus",
    "--cpuset-mems": "linux.resources.cpu.mems", "--io-weight": "linux.resources.blockIO.weight",
    "--cgroup-conf": "linux.resources.unified",
}


class CreateOptions:
    """What the command line adds to the bundle (runc's create/run flags)."""

    __slots__ = ("bundle", "console_socket", "pid_file", "preserve_fds", "no_pivot", "detach",
                 "cgroup_manager", "debug")

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))


class Namespaces:
    """Which namespaces are new, which are joined (open fds), as the helper and PID 1 want."""

    __slots__ = ("new", "joined", "owned", "flags", "userns_fd", "mntns_fd", "joins",
                 "userns_path", "keep_userns")

    def __init__(self) -> None:
        self.new: set[str] = set()
        self.joined: set[str] = set()
        # new or joined namespaces that the container's user namespace owns: the kernel lets
        # its root mount sysfs/mqueue/proc, set the hostname, write sysctls there
        self.owned: set[str] = set()
        self.keep_userns = False
        self.flags = 0
        self.userns_fd: int | None = None
        self.userns_path: str | None = None
        self.mntns_fd: int | None = None
        self.joins: list[tuple[int, int]] = []

    def close(self) -> None:
        """Close the joined namespaces' fds (the helper and PID 1 have their copies)."""
        for fd in [self.userns_fd, self.mntns_fd, *(fd for _, fd in self.joins)]:
            if fd is not None:
                os.close(fd)
        self.userns_fd = self.mntns_fd = None
        self.joins = []


def fail(field: str, problem: str) -> OciConfigError:
    return OciConfigError(f"config.json: {field}: {problem}")


# -- the root ------------------------------------------------------------------------------

def rootfs_path(config: dict[str, Any], bundle: str) -> str:
    """root.path, resolved: a relative path must stay inside the bundle after symlinks (the
    bundle's author may not reach the rest of the user's files through a link); an absolute
    one is the caller's explicit choice (podman points at its overlay mount)."""
    given = config["root"]["path"]
    if os.path.isabs(given):
        path = os.path.realpath(given)
    else:
        base = os.path.realpath(bundle)
        path = os.path.realpath(os.path.join(base, given))
        if path != base and not path.startswith(base.rstrip("/") + "/"):
            raise fail("root.path", f"{given!r} resolves to {path}, outside the bundle {base} "
                                    "(through a symlink)")
    if not os.path.isdir(path):
        raise fail("root.path", f"{path}: no such directory")
    if "," in path or ":" in path:
        raise fail("root.path", f"{path}: ',' and ':' cannot be part of a mount source here")
    return path


# -- namespaces ------------------------------------------------------------------------------

def plan_namespaces(config: dict[str, Any]) -> Namespaces:
    """linux.namespaces: new, or joined through `path` (opened now and checked to be a
    namespace of that type the user may enter). A user namespace is always there: without one
    an unprivileged runtime can create no other namespace, so it is added when not listed
    (unless this process is root already: then it stays in its own)."""
    ns = Namespaces()
    try:
        listed = (config.get("linux") or {}).get("namespaces") or []
        for i, entry in enumerate(listed):
            kind = entry["type"]
            path = entry.get("path")
            if not path:
                ns.new.add(kind)
                continue
            fd = open_namespace(path, kind, f"linux.namespaces[{i}].path")
            ns.joined.add(kind)
            if kind == "user":
                ns.userns_fd, ns.userns_path = fd, path
            elif kind == "mount":
                ns.mntns_fd = fd
            else:
                ns.joins.append((NS_FLAGS[kind], fd))
        if ns.userns_fd is None and "user" not in ns.new:
            if os.geteuid() == 0:
                # Already root of a user namespace (rootless podman runs its runtime in its
                # own) or of the host: the namespace we are in is the container's.
                ns.keep_userns = True
            else:
                ns.new.add("user")
        if "mount" not in ns.new and ns.mntns_fd is None:
            # The host's mount namespace belongs to the host's user namespace: mounting the
            # rootfs there is refused to an unprivileged user (EPERM), so it is always new.
            ns.new.add("mount")
        for kind in ns.new - {"user", "mount"}:
            ns.flags |= NS_FLAGS[kind]
        ns.owned = set(ns.new)
        if ns.userns_fd is not None or ns.keep_userns:
            ours = os.fstat(ns.userns_fd).st_ino if ns.userns_fd is not None else \
                os.stat("/proc/self/ns/user").st_ino
            kinds = {v: n for n, v in NS_FLAGS.items()}
            joined = [(kinds[flag], fd) for flag, fd in ns.joins]
            if ns.mntns_fd is not None:
                joined.append(("mount", ns.mntns_fd))
            ns.owned |= {kind for kind, fd in joined if owner_of(fd) == ours}
        return ns
    except BaseException:
        ns.close()
        raise


def owner_of(fd: int) -> int | None:
    """The inode of the user namespace owning namespace `fd` (None when it is above ours:
    EPERM, ioctl_ns(2))."""
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    except PermissionError:
        return None
    try:
        return os.fstat(owner).st_ino
    finally:
        os.close(owner)


def open_namespace(path: str, kind: str, field: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise fail(field, f"{path}: permission denied: the namespace of another user's "
                          "process cannot be joined") from None
    except OSError as exc:
        raise fail(field, f"{path}: {exc.strerror}") from None
    try:
        found = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOTTY, errno.EINVAL):
            raise fail(field, f"{path} is not a namespace (expected /proc/PID/ns/...)") from None
        raise
    if found != NS_FLAGS[kind]:
        os.close(fd)
        name = next((n for n, v in NS_FLAGS.items() if v == found), hex(found))
        raise fail(field, f"{path} is a {name} namespace, not a {kind} namespace")
    return fd


# -- ids -------------------------------------------------------------------------------------

def plan_mapping(config: dict[str, Any], ns: Namespaces) -> tuple[Any, Any]:
    """(IdMapping, newuidmap/newgidmap) from linux.uidMappings/gidMappings, or rl's default
    (the user's id as 0, the subordinate ranges above) when the config gives none."""
    import idmap
    from rootless.primitives.userns import default_mapping

    linux = config.get("linux") or {}
    if ns.keep_userns:
        # Our own namespace: its maps say which ids exist (devpts' gid=, setgroups).
        def current(name: str) -> tuple[Any, ...]:
            with open(f"/proc/self/{name}") as f:
                return tuple(idmap.IdRange(*map(int, line.split())) for line in f if line.strip())

        with open("/proc/self/setgroups") as f:
            mode = "single" if f.read().strip() == "deny" else "subid"
        return idmap.IdMapping(uid_map=current("uid_map"), gid_map=current("gid_map"),
                               mode=mode), None
    if ns.userns_fd is not None:
        # Joined: its maps exist. setgroups(2) is allowed there only if its setgroups file
        # says so; a /proc/PID/ns/user path tells us where to look.
        mode = "subid"
        parts = (ns.userns_path or "").split("/")
        if len(parts) == 5 and parts[1] == "proc" and parts[3] == "ns":
            from rootless.fileio import read_or_empty

            if read_or_empty(f"/proc/{parts[2]}/setgroups").strip() == "deny":
                mode = "single"
        return idmap.IdMapping(uid_map=(), gid_map=(), mode=mode), None
    uids, gids = linux.get("uidMappings") or [], linux.get("gidMappings") or []
    if not uids and not gids:
        mapping, helpers = default_mapping()
        return mapping, helpers
    if not uids or not gids:
        raise fail("linux.uidMappings" if not uids else "linux.gidMappings",
                   "give both uidMappings and gidMappings, or neither")

    def ranges(items: list[dict[str, int]]) -> tuple[Any, ...]:
        return tuple(idmap.IdRange(m["containerID"], m["hostID"], m["size"]) for m in items)

    if os.geteuid() == 0:
        # Root of this namespace (rootless podman runs its runtime so, and runtime-tools
        # may run under `unshare -r`): any id of it may be mapped by writing the maps.
        return idmap.IdMapping(uid_map=ranges(uids), gid_map=ranges(gids), mode="direct"), None
    own_uid, own_gid = os.getuid(), os.getgid()
    single = (len(uids) == len(gids) == 1 and uids[0]["size"] == gids[0]["size"] == 1
              and uids[0]["hostID"] == own_uid and gids[0]["hostID"] == own_gid)
    helpers = None if single else idmap.find_helpers()
    if not single and helpers is None:
        raise fail("linux.uidMappings", "mapping ids other than your own needs newuidmap and "
                                        "newgidmap (Debian: apt-get install uidmap)")
    mode = "single" if single else "subid"
    return idmap.IdMapping(uid_map=ranges(uids), gid_map=ranges(gids), mode=mode), helpers


def identity_mode(mapping: Any) -> str:
    """How PID 1 switches to the process's user: "single" skips setgroups(2), which the
    kernel refuses when setgroups is "deny" (a direct single-id map; newgidmap writes "deny"
    too when the gid map holds only the user's own gid)."""
    gids = mapping.gid_map
    if mapping.mode == "single" or (len(gids) == 1 and gids[0].count == 1
                                    and gids[0].outside == os.getgid()):
        return "single"
    return str(mapping.mode)


# -- mounts ----------------------------------------------------------------------------------

def parse_options(options: list[str], field: str) -> tuple[int, int, str, bool, bool]:
    """(flags, propagation, data, bind, recursive) of a mount's options."""
    flags, propagation, data = 0, 0, []
    bind = recursive = False
    for opt in options:
        if opt in MOUNT_FLAGS:
            on, off = MOUNT_FLAGS[opt]
            flags = (flags | on) & ~off
        elif opt in ("bind", "rbind"):
            bind, recursive = True, recursive or opt == "rbind"
        elif opt.lstrip("r") in PROPAGATION:
            propagation = PROPAGATION[opt.lstrip("r")] | (k.MS_REC if opt.startswith("r") else 0)
        elif opt in ("tmpcopyup", "notmpcopyup") or opt.startswith("x-"):
            continue  # crun's extension / userspace helper options: nothing for the kernel
        elif opt in ("idmap", "ridmap") or (opt[:1] == "r" and opt[1:] in MOUNT_FLAGS):
            raise fail(field, f"{opt!r} is not supported by rl-oci")
        else:
            data.append(opt)
    return flags, propagation, ",".join(data), bind, recursive


def plan_mounts(config: dict[str, Any], bundle: str, ns: Namespaces, mapping: Any,
                cgroup_dir: str | None = None) -> list[MountOp]:
    """The config's mounts in order, then what the spec says every container has (default
    devices and /dev symlinks, linux.devices), sysctls, masked and read-only paths.
    `cgroup_dir`: the container's own cgroup directory on the host, when it will have one."""
    ops: list[MountOp] = []
    dev_is_bound = False
    sys_is_bound = False
    devpts = False
    for i, m in enumerate(config.get("mounts") or []):
        field = f"mounts[{i}]"
        dest = m["destination"]
        kind = m.get("type") or ""
        flags, propagation, data, bind, recursive = parse_options(m.get("options") or [],
                                                                 f"{field}.options")
        if kind in ("bind", "rbind") or bind:
            source = m.get("source") or ""
            if not source:
                raise fail(f"{field}.source", "a bind mount needs a source")
            source = source if os.path.isabs(source) else os.path.join(bundle, source)
            if not os.path.exists(source):
                raise fail(f"{field}.source", f"{source}: no such file or directory")
            ops.append(MountOp("bind", dest, source, flags=flags, recursive=recursive or kind == "rbind",
                               propagation=propagation))
            dev_is_bound = dev_is_bound or os.path.normpath(dest) == "/dev"
            sys_is_bound = sys_is_bound or os.path.normpath(dest) == "/sys"
            continue
        if kind in ("cgroup", "cgroup2") and sys_is_bound:
            # Below a /sys bound from the host, the host's cgroup2 mount is already there and
            # locked (a less privileged mount namespace cannot unmount it: EINVAL), and the
            # kernel refuses the same filesystem again on that mount point (EBUSY). As runc
            # does rootless: the container's own cgroup directory on top, or the host's view.
            if cgroup_dir is not None:
                ops.append(MountOp("bind", dest, cgroup_dir, flags=flags))
            continue
        host_view = host_fallback(kind, ns)
        if host_view is not None:
            # What the kernel refuses to mount from a user namespace that does not own the
            # namespace behind it is bound from the host instead (runc and crun do the same).
            # (A host without it, e.g. no /dev/mqueue mounted: the container goes without.)
            ops.append(MountOp("bind", dest, host_view, flags=flags, propagation=propagation,
                               skip_on=(errno.ENOENT,)))
            continue
        if kind == "cgroup":
            kind = "cgroup2"  # cgroup v1 cannot be mounted in a user namespace; v2 can
            data = ""
        if kind == "devpts":
            devpts = True
            data = devpts_options(data, mapping)
        ops.append(MountOp("mount", dest, m.get("source") or kind, kind, flags, data or None,
                           propagation=propagation))
    if not dev_is_bound:
        for dev in DEFAULT_DEVICES:
            ops.append(MountOp("file", f"/dev/{dev}"))
            ops.append(MountOp("bind", f"/dev/{dev}", f"/dev/{dev}", flags=k.MS_NOSUID | k.MS_NOEXEC))
        if devpts:
            ops.append(MountOp("symlink", "/dev/ptmx", "pts/ptmx"))
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            ops.append(MountOp("symlink", f"/dev/{name}", target))
    linux = config.get("linux") or {}
    for i, dev in enumerate(linux.get("devices") or []):
        ops += plan_device(dev, f"linux.devices[{i}]")
    for key, value in (linux.get("sysctl") or {}).items():
        check_sysctl(key, ns)
        ops.append(MountOp("write", "/proc/sys/" + key.replace(".", "/"), data=value))
    for path in linux.get("maskedPaths") or []:
        ops.append(MountOp("mask", path, skip_on=(errno.ENOENT,)))
    for path in linux.get("readonlyPaths") or []:
        ops.append(MountOp("remount", path, flags=k.MS_RDONLY, skip_on=(errno.ENOENT,)))
    return ops


def host_fallback(kind: str, ns: Namespaces) -> str | None:
    """The host directory to bind for a mount this user namespace may not make: sysfs needs
    the network namespace's owner, mqueue the IPC namespace's, proc a PID namespace of its
    own; cgroup2 needs a cgroup namespace and a unified host (cgroup v1 is never allowed)."""
    if kind == "sysfs" and "network" not in ns.owned:
        return "/sys"
    if kind == "mqueue" and "ipc" not in ns.owned:
        return "/dev/mqueue"
    if kind == "proc" and "pid" not in ns.owned:
        return "/proc"
    if kind in ("cgroup", "cgroup2"):
        unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        if "cgroup" not in ns.owned or not unified:
            return "/sys/fs/cgroup"
    return None


def devpts_options(data: str, mapping: Any) -> str:
    """devpts refuses gid=N (EINVAL) when N has no mapping: drop it then, as runc's rootless
    spec does (the ptys get the creating process's group)."""
    out = []
    for opt in data.split(","):
        name, _, value = opt.partition("=")
        if name == "gid" and value.isdigit() and mapping.uid_map and \
                mapping.container_gid_to_host(int(value)) is None:
            continue
        if opt:
            out.append(opt)
    return ",".join(out)


def plan_device(dev: dict[str, Any], field: str) -> list[MountOp]:
    """A FIFO is made; a character or block device is bound from the host's node with the
    same number at the same path (an unprivileged user cannot mknod(2) one)."""
    import stat

    path = dev["path"]
    mode = dev.get("fileMode")
    if dev["type"] == "p":
        return [MountOp("fifo", path, flags=0o666 if mode is None else mode)]
    want = stat.S_IFBLK if dev["type"] == "b" else stat.S_IFCHR
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is None or stat.S_IFMT(st.st_mode) != want or \
            (os.major(st.st_rdev), os.minor(st.st_rdev)) != (dev["major"], dev["minor"]):
        raise fail(field, f"{path} ({dev['type']} {dev['major']}:{dev['minor']}) is not a device "
                          "node of the host: an unprivileged runtime cannot create devices, only "
                          "bind-mount existing ones")
    return [MountOp("file", path), MountOp("bind", path, path, flags=k.MS_NOSUID | k.MS_NOEXEC)]


# sysctl prefixes a namespace isolates (runc's list), and which namespace it needs.
SYSCTL_NAMESPACES = (("kernel.msgmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.msgmni", "ipc"),
                     ("kernel.sem", "ipc"), ("kernel.shmall", "ipc"), ("kernel.shmmax", "ipc"),
                     ("kernel.shmmni", "ipc"), ("kernel.shm_rmid_forced", "ipc"),
                     ("fs.mqueue.", "ipc"), ("net.", "network"), ("kernel.hostname", "uts"),
                     ("kernel.domainname", "uts"))


def check_sysctl(key: str, ns: Namespaces) -> None:
    for prefix, kind in SYSCTL_NAMESPACES:
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            if kind not in ns.owned:
                raise fail(f"linux.sysctl[{key!r}]", f"needs a {kind} namespace of the "
                                                     "container's own (new, or joined and owned "
                                                     "by its user namespace)")
            return
    raise fail(f"linux.sysctl[{key!r}]", "not a namespaced sysctl: it would change the host")


# -- the process -----------------------------------------------------------------------------

def process_env(process: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process.get("env") or []:
        name, _, value = item.partition("=")
        env[name] = value
    if "PATH" not in env:
        env["PATH"] = DEFAULT_PATH  # only for the lookup of args[0]; runc does the same
    return env


def plan_rlimits(process: dict[str, Any]) -> list[tuple[int, int, int]]:
    import resource

    out = []
    for limit in process.get("rlimits") or []:
        res = getattr(resource, limit["type"], None)
        if res is None:
            raise fail("process.rlimits", f"{limit['type']} is not known to this kernel")
        # RLIM_INFINITY is -1 in Python's resource module; config.json says 2^64-1.
        soft, hard = (-1 if v >= 2**63 else v for v in (limit["soft"], limit["hard"]))
        out.append((res, soft, hard))
    return out


def plan_setup(config: dict[str, Any], rootfs: str, ns: Namespaces, mapping: Any, ops: list[MountOp],
               security: Any, hooks: Any, start_socket: str | None, opts: CreateOptions) -> ContainerSetup:
    process = config.get("process") or {}
    user = process.get("user") or {}
    size = process.get("consoleSize") or {}
    hostname = config.get("hostname") or None
    if hostname is not None and "uts" not in ns.owned:
        raise fail("hostname", "setting a hostname needs a uts namespace of the container's "
                               "own")
    domainname = config.get("domainname") or None
    if domainname is not None and "uts" not in ns.owned:
        raise fail("domainname", "setting a domain name needs a uts namespace of the "
                                 "container's own")
    propagation = (config.get("linux") or {}).get("rootfsPropagation") or ""
    return ContainerSetup(
        rootfs_data={"type": "bind", "source": rootfs},
        merged=rootfs,
        plan=ops,
        hostname=hostname,
        domainname=domainname,
        read_only=bool((config.get("root") or {}).get("readonly")),
        command=list(process["args"]),
        env=process_env(process),
        workdir=process.get("cwd") or "/",
        user=f"{user.get('uid', 0)}:{user.get('gid', 0)}",
        groups=list(user.get("additionalGids") or []),
        umask=user.get("umask"),
        tty=bool(process.get("terminal")),
        winsize=(size["height"], size["width"]) if size.get("height") and size.get("width") else None,
        interactive=True,  # stdin is the caller's (conmon's pipe, Slurm's), never /dev/null
        init=False,
        bring_up_lo="network" in ns.new,
        wait_for_go=False,
        security=security,
        preserve_fds=opts.preserve_fds or 0,
        mapping_mode=identity_mode(mapping),
        debug=bool(opts.debug),
        join_mntns=ns.mntns_fd,
        propagation=PROPAGATION.get(propagation.lstrip("r")) if propagation else None,
        no_pivot=bool(opts.no_pivot),
        rlimits=plan_rlimits(process),
        oom_score_adj=process.get("oomScoreAdj"),
        hooks=hooks,
        start_socket=start_socket,
    )


# -- the cgroup ------------------------------------------------------------------------------

def plan_limits(resources: dict[str, Any]) -> tuple[Any, list[str]]:
    """linux.resources -> rl's Limits (cgroup v2 values), and the fields no cgroup v2 file
    takes (v1-only settings), for the strict/best-effort decision."""
    from rootless.spec import Limits

    out: dict[str, Any] = {}
    unsupported: list[str] = []
    memory = resources.get("memory") or {}
    if memory.get("limit") not in (None, -1, 0):
        out["memory"] = int(memory["limit"])
    if memory.get("reservation") not in (None, -1, 0):
        out["memory_reservation"] = int(memory["reservation"])
    if memory.get("swap") not in (None, 0):
        out["memory_swap"] = int(memory["swap"])
    for key in ("kernel", "kernelTCP", "swappiness"):
        if memory.get(key) is not None:
            unsupported.append(f"linux.resources.memory.{key}")
    pids = resources.get("pids") or {}
    if pids.get("limit") not in (None, 0):
        out["pids"] = "max" if int(pids["limit"]) < 0 else int(pids["limit"])
    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        # runc's and crun's conversion of cgroup v1 shares to cgroup v2's weight.
        shares = max(2, min(262144, int(cpu["shares"])))
        out["cpu_weight"] = 1 + ((shares - 2) * 9999) // 262142
    if cpu.get("quota") not in (None, 0):
        quota = int(cpu["quota"])
        out["cpus"] = f"{'max' if quota < 0 else quota} {int(cpu.get('period') or 100000)}"
    if cpu.get("cpus"):
        out["cpuset_cpus"] = str(cpu["cpus"])
    if cpu.get("mems"):
        out["cpuset_mems"] = str(cpu["mems"])
    for key in ("realtimeRuntime", "realtimePeriod"):
        if cpu.get(key):
            unsupported.append(f"linux.resources.cpu.{key}")
    blkio = resources.get("blockIO") or {}
    if blkio.get("weight"):
        out["io_weight"] = 1 + ((max(10, min(1000, int(blkio["weight"]))) - 10) * 9999) // 990
    for key in ("leafWeight", "weightDevice", "throttleReadBpsDevice", "throttleWriteBpsDevice",
                "throttleReadIOPSDevice", "throttleWriteIOPSDevice"):
        if blkio.get(key):
            unsupported.append(f"linux.resources.blockIO.{key}")
    extra: dict[str, str] = {}
    for limit in resources.get("hugepageLimits") or []:
        extra[f"hugetlb.{limit['pageSize']}.max"] = str(limit["limit"])
    for key, value in (resources.get("unified") or {}).items():
        if "/" in key or key.startswith("."):
            raise fail(f"linux.resources.unified[{key!r}]", "not a cgroup file name")
        extra[key] = str(value)
    if extra:
        out["extra"] = extra
    if resources.get("network"):
        unsupported.append("linux.resources.network")
    # linux.resources.devices is not a limit here: the container reaches only the device
    # nodes bound into its /dev, and a user namespace can create none (crun ignores it too).
    return (Limits(**out) if out else None), unsupported


def cgroup_name(cid: str, path: str | None) -> str:
    """The container's cgroup, one level below the delegated one: linux.cgroupsPath's last
    part ("slice:prefix:name" -> prefix-name.scope, as systemd names a scope), or rl-oci-ID."""
    if not path:
        return f"rl-oci-{cid[:32]}"
    if ":" in path and "/" not in path:
        _, prefix, name = (path.split(":") + ["", ""])[:3]
        return f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if name in ("", ".", ".."):
        raise fail("linux.cgroupsPath", f"{path!r} names no cgroup")
    return name
