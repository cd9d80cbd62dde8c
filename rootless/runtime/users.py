"""Resolving `--user` against the container's own /etc/passwd and /etc/group.

Called after pivot_root, so the files read are the container's and no host path is involved.
"""

from __future__ import annotations

from rootless.errors import RlError


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
    except OSError:
        return []


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
