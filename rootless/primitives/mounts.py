"""Mount operations (plain data, each with a describe()) and the one loop that applies them.

Targets are paths *inside* the container (for example "/proc"). `apply_plan` resolves each one
under the new root without ever following a symlink out of it (see `secure_join`), creates the
mount point when missing, and mounts. Nothing here runs on the host's mount namespace: PID 1
unshares CLONE_NEWNS before the first step, and the first step makes every mount private so
nothing propagates back to the host.
"""

from __future__ import annotations

import errno
import os
import stat

from rootless.kernel import constants as k

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class MountOp:
    """One step of the plan. `kind` is one of:
    mount     mount(source, target, fstype, flags, data)
    bind      bind-mount host path `source` on target (recursive), then apply `flags` (ro...)
    file      create a regular file at target (mount point for a file bind)
    symlink   create symlink target -> source
    remount   remount target with flags (bind remount; keeps the mount's locked flags)
    mask      hide target: /dev/null over a file, an empty read-only tmpfs over a directory
    write     write `data` to the existing file target (a sysctl under /proc/sys)
    fifo      create a named pipe at target with mode `flags` (mknod(2) of a FIFO needs no
              privilege, unlike device nodes)

    `skip_on`: the errnos that skip this step (with a debug line) instead of failing the run,
    each one a known answer of a kernel or host that lacks the feature; any other is an error.
    `recursive` (bind): MS_REC, the whole tree below source (an OCI "rbind"; "bind" is not).
    `propagation`: MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (with MS_REC) set on the new
    mount afterwards: mount(2) takes a propagation change only as a call of its own.
    """

    __slots__ = ("kind", "source", "target", "fstype", "flags", "data", "skip_on", "recursive",
                 "propagation")

    def __init__(self, kind: str, target: str, source: str | None = None, fstype: str | None = None,
                 flags: int = 0, data: str | None = None, skip_on: tuple[int, ...] = (),
                 recursive: bool = True, propagation: int = 0) -> None:
        self.kind = kind
        self.source = source
        self.target = target
        self.fstype = fstype
        self.flags = flags
        self.data = data
        self.skip_on = skip_on
        self.recursive = recursive
        self.propagation = propagation

    def describe(self) -> str:
        names = [n for n, v in _FLAG_NAMES if self.flags & v]
        opts = ",".join(names + ([self.data] if self.data else []))
        if self.kind == "mount":
            return f"mount {self.fstype} on {self.target} ({opts})"
        if self.kind == "bind":
            return f"bind {self.source} on {self.target} ({opts or 'rw'})"
        if self.kind == "symlink":
            return f"symlink {self.target} -> {self.source}"
        if self.kind == "write":
            return f"write {self.data!r} to {self.target}"
        return f"{self.kind} {self.target}" + (f" ({opts})" if opts else "")

    def __repr__(self) -> str:
        return f"MountOp({self.describe()!r})"


_FLAG_NAMES = [
    ("ro", k.MS_RDONLY), ("nosuid", k.MS_NOSUID), ("nodev", k.MS_NODEV),
    ("noexec", k.MS_NOEXEC), ("rec", k.MS_REC), ("strictatime", k.MS_STRICTATIME),
]


# -- applying -------------------------------------------------------------------------------

class MountFailure(Exception):
    """A step of the plan failed; carries the step so the launcher can say which."""

    def __init__(self, op: MountOp, exc: OSError | str) -> None:
        self.op = op
        self.exc = exc
        reason = exc if isinstance(exc, str) else f"{os.strerror(exc.errno or 0)} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
        super().__init__(f"{op.describe()}: {reason}")


def secure_join(root: str, path: str, *, max_links: int = 40) -> str:
    """Resolve `path` as if `root` were "/": symlinks (absolute or relative) are followed
    *inside* root and ".." never climbs above it. Returns a host path below root. The last
    component is resolved too when it is a symlink. Nothing is created."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, f"too many symlinks resolving {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _ensure(root: str, target: str, want_dir: bool) -> str:
    """Resolve target under root and create it (dir or empty file) when missing."""
    host = secure_join(root, target)
    if not os.path.lexists(host):
        parent = os.path.dirname(host)
        if not os.path.isdir(parent):
            # Recreate the parents component by component, each resolved safely again.
            rel = os.path.relpath(parent, root)
            _ensure(root, "/" + rel, True)
        if want_dir:
            os.mkdir(host, 0o755)
        else:
            fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            os.close(fd)
    return host


def apply_plan(root: str, plan: list[MountOp], lib: Any, log: Any = None) -> None:
    """Execute the plan under `root` (the future "/"). Raises MountFailure."""
    for op in plan:
        if log:
            log(op.describe())
        try:
            _apply_one(root, op, lib)
        except OSError as exc:
            if exc.errno not in op.skip_on:
                raise MountFailure(op, exc) from None
            if log:
                log(f"skipped: {op.describe()}: {errno.errorcode.get(exc.errno or 0)}")


def _apply_one(root: str, op: MountOp, lib: Any) -> None:
    if op.kind == "symlink":
        host = secure_join(root, os.path.dirname(op.target))
        link = os.path.join(host, os.path.basename(op.target))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(op.source or "", link)
        return
    if op.kind == "file":
        host = secure_join(root, op.target)
        if not os.path.lexists(host):
            _ensure(root, op.target, want_dir=False)
        return
    if op.kind == "write":
        # O_NOFOLLOW and no O_CREAT: only an existing file of the new /proc is written.
        fd = os.open(secure_join(root, op.target), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, (op.data or "").encode())
        finally:
            os.close(fd)
        return
    if op.kind == "fifo":
        host = secure_join(root, op.target)
        if os.path.lexists(host):
            os.unlink(host)
        _ensure(root, os.path.dirname(op.target) or "/", want_dir=True)
        os.mkfifo(host, op.flags & 0o7777)
        os.chmod(host, op.flags & 0o7777)  # mkfifo's mode is cut by the umask
        return
    if op.kind == "mask":
        host = secure_join(root, op.target)
        if not os.path.lexists(host):
            return
        if os.path.isdir(host):
            lib.mount("tmpfs", host, "tmpfs", k.MS_RDONLY | k.MS_NOSUID | k.MS_NODEV | k.MS_NOEXEC, "size=0,mode=000")
        else:
            lib.mount("/dev/null", host, None, k.MS_BIND)
        return
    if op.kind == "remount":
        host = secure_join(root, op.target)
        if not os.path.lexists(host):
            return
        lib.mount(host, host, None, k.MS_BIND | k.MS_REC)
        remount_bind(host, op.flags, lib)
        return
    if op.kind == "bind":
        source = op.source or ""
        is_dir = os.path.isdir(source)
        host = secure_join(root, op.target)
        if not os.path.lexists(host):
            host = _ensure(root, op.target, want_dir=is_dir)
        lib.mount(source, host, None, k.MS_BIND | (k.MS_REC if op.recursive else 0))
        if op.flags:
            remount_bind(host, op.flags, lib)
        if op.propagation:
            lib.mount(None, host, None, op.propagation)
        return
    # plain mount
    host = secure_join(root, op.target)
    if not os.path.isdir(host):
        host = _ensure(root, op.target, want_dir=True)
    lib.mount(op.source, host, op.fstype, op.flags, op.data)
    if op.propagation:
        lib.mount(None, host, None, op.propagation)


_ST_FLAGS = [
    (os.ST_RDONLY, k.MS_RDONLY), (os.ST_NOSUID, k.MS_NOSUID), (os.ST_NODEV, k.MS_NODEV),
    (os.ST_NOEXEC, k.MS_NOEXEC), (os.ST_NOATIME, k.MS_NOATIME), (os.ST_NODIRATIME, k.MS_NODIRATIME),
    (os.ST_RELATIME, k.MS_RELATIME),
]


_ATIME = k.MS_NOATIME | k.MS_NODIRATIME | k.MS_RELATIME | k.MS_STRICTATIME


def remount_bind(path: str, flags: int, lib: Any) -> None:
    """Add flags to a bind mount. In a user namespace the flags the mount already has
    (nosuid, nodev, noexec, atime) are locked (mount_namespaces(7)): keep them or EPERM."""
    current = os.statvfs(path).f_flag
    keep = 0
    for st_flag, ms_flag in _ST_FLAGS:
        if current & st_flag:
            keep |= ms_flag
    try:
        lib.mount(None, path, None, k.MS_REMOUNT | k.MS_BIND | keep | flags)
    except PermissionError:
        if not flags & _ATIME:
            raise
        # The atime flags are locked too (MNT_LOCK_ATIME): a strictatime asked for over a
        # relatime mount is refused. Keep the mount's own atime setting, as runc and crun do.
        lib.mount(None, path, None, k.MS_REMOUNT | k.MS_BIND | keep | (flags & ~_ATIME))
