"""Resolving `--user` against the container's own /etc/passwd and /etc/group, and the entries
`--userns=keep-id` adds to them.

Called after pivot_root, so the files read are the container's and no host path is involved.
"""

from __future__ import annotations

import errno
import os

from rootless.errors import RlError

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable


class ContainerUser:
    __slots__ = ("uid", "gid", "home", "groups", "name")

    def __init__(self, uid: int, gid: int, home: str, groups: list[int], name: str | None) -> None:
        self.uid = uid
        self.gid = gid
        self.home = home
        self.groups = groups
        self.name = name


def _read(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except (FileNotFoundError, NotADirectoryError):  # an image without the file: no entries
        return []
    except OSError as exc:
        from rootless.errors import describe_oserror

        raise RlError(describe_oserror(f"read the container's {path}", exc),
                      hint=f"{path} must be a readable file in the image") from None


def resolve_user(spec: str | None, passwd: str = "/etc/passwd", group: str = "/etc/group") -> ContainerUser:
    """`uid`, `name`, `uid:gid`, `name:group` -> ids, HOME and supplementary groups.
    HOME comes from passwd; "/" when the user has no entry (podman does the same)."""
    spec = spec or "0"
    user_part, _, group_part = spec.partition(":")
    users = _read(passwd)
    entry: list[str] | None = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((e for e in users if len(e) >= 7 and e[2] == user_part), None)
    else:
        entry = next((e for e in users if len(e) >= 7 and e[0] == user_part), None)
        if entry is None:
            raise RlError(
                f"unable to find user {user_part}: no matching entries in passwd file",
                hint="use a numeric uid, or a user that exists in the image's /etc/passwd",
                exit_code=126,
            )
        uid = int(entry[2])
    groups_db = _read(group)
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            g = next((e for e in groups_db if len(e) >= 3 and e[0] == group_part), None)
            if g is None:
                raise RlError(f"unable to find group {group_part}: no matching entries in group file",
                              exit_code=126)
            gid = int(g[2])
    else:
        # No passwd entry: gid 0, as docker and podman do.
        gid = int(entry[3]) if entry else 0
    home = entry[5] if entry and entry[5] else "/"
    name = entry[0] if entry else None
    # The primary group is always a supplementary group too, as podman, buildah and docker
    # set it since CVE-2022-2989/2990/36109: otherwise a setgid program sheds it and escapes
    # a "group may not" permission (mode 0707).
    # Memberships in /etc/group count only for the implicit form (`user`, not `user:group`),
    # as in runc's GetExecUser that docker and podman use.
    supplementary: list[int] = [gid]
    if name and not group_part:
        for g in groups_db:
            if len(g) >= 4 and name in g[3].split(",") and g[2].isdigit() and int(g[2]) != gid:
                supplementary.append(int(g[2]))
    return ContainerUser(uid, gid, home, supplementary, name)


class KeepIdUser:
    """The user who runs rl, as `--userns=keep-id` shows them inside (podman's entries):
    `NAME:*:UID:GID:GECOS:HOME:/bin/sh` in /etc/passwd, `GROUP:x:GID:NAME` in /etc/group."""

    __slots__ = ("name", "uid", "gid", "group", "gecos", "home")

    def __init__(self, name: str, uid: int, gid: int, group: str, gecos: str, home: str) -> None:
        self.name, self.uid, self.gid = name, uid, gid
        self.group, self.gecos, self.home = group, gecos, home

    def user_spec(self) -> str:
        """What the command runs as when neither --user nor the image's USER says otherwise."""
        return f"{self.uid}:{self.gid}"

    def passwd_line(self) -> str:
        return f"{self.name}:*:{self.uid}:{self.gid}:{self.gecos}:{self.home}:/bin/sh\n"

    def group_line(self) -> str:
        return f"{self.group}:x:{self.gid}:{self.name}\n"


def keep_id_user(mount_targets: Iterable[str], workdir: str | None) -> KeepIdUser:
    """The invoking user from the host's passwd and group databases (run before any namespace).

    HOME, as podman chooses it: the user's own home when the container mounts something there
    or on a directory above it (other than /), for `-v $HOME:$HOME` and the like; else the
    container's working directory, since the home of the host does not exist in the image."""
    import grp
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        entry = pwd.getpwuid(uid)
        name, gecos, own_home = entry.pw_name, entry.pw_gecos, entry.pw_dir
    except KeyError:
        name, gecos, own_home = str(uid), "", "/"
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return KeepIdUser(name, uid, gid, group, gecos, choose_home(own_home, mount_targets, workdir))


def choose_home(own_home: str, mount_targets: Iterable[str], workdir: str | None) -> str:
    """`own_home` when it or a directory above it (other than /) is a mount target, else the
    working directory (/ by default)."""
    targets = {os.path.normpath(t) for t in mount_targets}
    here = os.path.normpath(own_home) if own_home.startswith("/") else "/"
    while here != "/":
        if here in targets:
            return own_home
        here = os.path.dirname(here)
    return workdir or "/"


def add_keep_id_entries(user: KeepIdUser, etc: str = "/etc") -> None:
    """Append the user's entries to the container's /etc/passwd and /etc/group where the image
    has neither the name nor the id (run by PID 1 after pivot_root, as root of the container:
    the write lands in the container's upper directory, never in the image's layers).

    Only a regular file of the container's root filesystem is written: not a file or directory
    mounted over it (a volume the user gave, which podman leaves alone too), and not a symlink
    (it could lead into a volume). A missing file is not created, as in podman."""
    _append_entry(os.path.join(etc, "passwd"), user.passwd_line(), user.name, str(user.uid))
    _append_entry(os.path.join(etc, "group"), user.group_line(), user.group, str(user.gid))


def _append_entry(path: str, line: str, name: str, number: str) -> None:
    import stat

    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        # ENOENT: the image has no such file; ELOOP: a symlink; EISDIR: a directory.
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.EISDIR):
            return
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or _mount_id(fd) != _root_mount_id():
            return
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        for entry in text.splitlines():
            fields = entry.split(":")
            if len(fields) >= 3 and (fields[0] == name or fields[2] == number):
                return
        data = line if not text or text.endswith("\n") else "\n" + line
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _root_mount_id() -> int:
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _mount_id(fd)
    finally:
        os.close(fd)


def _mount_id(fd: int) -> int:
    """The id of the mount that holds the open file (proc(5): /proc/PID/fdinfo "mnt_id")."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for row in f:
            if row.startswith("mnt_id:"):
                return int(row.split()[1])
    raise OSError(errno.ENOTSUP, f"no mnt_id in /proc/self/fdinfo/{fd}")
