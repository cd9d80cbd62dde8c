"""The user's session: systemd user manager and D-Bus, XDG_RUNTIME_DIR, and the storage
directory's filesystem."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path

from rootless.doctor import FAILURE, OK, WARNING, Check, Host
from rootless.fileio import read_or_empty

# Filesystems that cannot hold files owned by subordinate ids (the server sees one user, or
# chown is refused), or cannot be an overlay upper directory.
_BAD_STORAGE = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "afs", "ceph",
                "glusterfs", "fuse.glusterfs", "lustre", "gpfs", "fuse.rclone", "vboxsf"}


def mount_of(path: str | Path, mountinfo: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount holding `path` (longest matching point)."""
    real = os.path.realpath(path)
    best = ("/", "unknown")
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        # mountinfo escapes space, tab, newline and backslash as \\ooo (proc_pid_mountinfo(5)).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, right.split()[0])
    return best


def _mountinfo(host: Host) -> str:
    # Not there (ENOENT): no /proc, or a fixture proc root without it; mount_of then
    # answers ("/", "unknown"). Other errnos become the check's finding (run_checks).
    return read_or_empty(f"{host.proc_root}/self/mountinfo")


def check_user_session(host: Host) -> list[Check]:
    runtime = host.env.get("XDG_RUNTIME_DIR") or f"/run/user/{host.uid}"
    bus = host.env.get("DBUS_SESSION_BUS_ADDRESS")
    socket = f"{runtime}/bus"
    manager = os.path.exists(f"{runtime}/systemd/private")
    has_bus = bool(bus) or _is_socket(socket)
    if manager and has_bus:
        return [Check("user-session", "systemd user manager and D-Bus", OK,
                      f"systemd user manager running; D-Bus at {bus or socket}")]
    found = []
    if not manager:
        found.append(f"no systemd user manager ({runtime}/systemd/private missing)")
    if not has_bus:
        found.append(f"no user D-Bus (DBUS_SESSION_BUS_ADDRESS unset, no {socket})")
    return [Check("user-session", "systemd user manager and D-Bus", WARNING,
                  "; ".join(found) + ": rl works without them, but cannot ask systemd for a "
                  "delegated cgroup scope",
                  f"sudo loginctl enable-linger {host.user}   (starts user@{host.uid}.service)\n"
                  "sudo apt install dbus-user-session   (then log in again)")]


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError as exc:
        # ENOENT, ENOTDIR: no bus there. EACCES: a runtime directory we cannot search holds
        # no bus we could use (check_runtime_dir reports the directory itself).
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            raise
        return False


def check_runtime_dir(host: Host) -> list[Check]:
    value = host.env.get("XDG_RUNTIME_DIR")
    if not value:
        fallback = host.paths.runtime.parent
        return [Check("runtime-dir", "XDG_RUNTIME_DIR", WARNING,
                      f"XDG_RUNTIME_DIR is not set: rl keeps state in {fallback}, which "
                      "survives logout and reboot",
                      f"log in through a session that sets it (pam_systemd), or: "
                      f"sudo install -d -m 0700 -o {host.user} /run/user/{host.uid}; "
                      f"export XDG_RUNTIME_DIR=/run/user/{host.uid}")]
    try:
        st = os.stat(value)
    except OSError as exc:
        return [Check("runtime-dir", "XDG_RUNTIME_DIR", FAILURE,
                      f"XDG_RUNTIME_DIR={value}: {exc.strerror}",
                      f"sudo install -d -m 0700 -o {host.user} {value}")]
    problems, status = [], OK
    if st.st_uid != host.uid:
        problems.append(f"owned by uid {st.st_uid}, not {host.uid}")
        status = FAILURE
    if not os.access(value, os.W_OK | os.X_OK):
        problems.append(f"not writable by {host.user}")
        status = FAILURE
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        problems.append(f"mode {mode:04o}, not 0700")
        status = status if status == FAILURE else WARNING
    point, fstype = mount_of(value, _mountinfo(host))
    if fstype != "tmpfs":
        problems.append(f"on {fstype} ({point}), not tmpfs: stale state survives a reboot")
        status = status if status == FAILURE else WARNING
    if not problems:
        return [Check("runtime-dir", "XDG_RUNTIME_DIR", OK,
                      f"{value}: owned by {host.user}, mode 0700, on tmpfs")]
    fix = (f"sudo chown {host.user} {value}; sudo chmod 0700 {value}"
           if status == FAILURE or mode != 0o700 else "")
    if fstype != "tmpfs":
        fix = (fix + "\n" if fix else "") + (
            f"let pam_systemd create it (tmpfs /run/user/{host.uid}), or: "
            f"sudo mount -t tmpfs -o mode=0700,uid={host.uid},gid={host.gid} tmpfs {value}")
    return [Check("runtime-dir", "XDG_RUNTIME_DIR", status, f"{value}: {'; '.join(problems)}",
                  fix)]


def check_storage(host: Host) -> list[Check]:
    storage = host.paths.data
    existing = storage
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    point, fstype = mount_of(existing, _mountinfo(host))
    where = f"{storage} (on {fstype} at {point})"
    move = ("put the storage on a local disk: set [storage] path in "
            f"{host.paths.config_file} or RL_STORAGE, e.g. /var/tmp/{host.user}-rl")
    if fstype in _BAD_STORAGE or fstype.startswith("fuse.") and fstype != "fuse.fuse-overlayfs":
        return [Check("storage", "storage filesystem", FAILURE,
                      f"{where}: {fstype} cannot hold files owned by subordinate ids nor be "
                      "an overlay upper directory", move)]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [Check("storage", "storage filesystem", FAILURE,
                      f"{where}: {existing} is not writable by {host.user}",
                      f"sudo chown {host.user} {existing}, or " + move)]
    status, note = OK, ""
    if fstype in ("overlay", "tmpfs"):
        note = (" (tmpfs: images are lost at reboot)" if fstype == "tmpfs"
                else " (overlay: nested overlay mounts may fail; rl falls back to fuse-overlayfs)")
        status = WARNING if fstype == "overlay" else OK
    return [Check("storage", "storage filesystem", status, f"{where}{note}",
                  move if status != OK else "")]
