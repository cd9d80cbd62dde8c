"""The user's subordinate id ranges and the setuid helpers that map them.

Without ranges (or helpers) rl still runs, mapping only the user's own id: images whose files
belong to other users (most of them) then fail to unpack or run. Hence warnings, not failures,
unless the helpers are there but broken, which `rl run` cannot work around.
"""

from __future__ import annotations

import errno
import os
import stat

from rootless.doctor import FAILURE, OK, WARNING, Check, Host

SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"


def _files(host: Host) -> tuple[str, str]:
    # The same variables rootless.primitives.userns honours, so the check sees what rl run sees.
    return (host.env.get("RL_SUBUID_FILE", SUBUID_FILE),
            host.env.get("RL_SUBGID_FILE", SUBGID_FILE))


def _ranges(host: Host) -> tuple[list, list, str | None]:  # type: ignore[type-arg]
    import idmap

    uid_file, gid_file = _files(host)
    try:
        return (idmap.read_subids(uid_file, host.user, host.uid),
                idmap.read_subids(gid_file, host.user, host.gid), None)
    except idmap.IdMapError as exc:
        return [], [], f"{exc}; {exc.hint}" if getattr(exc, "hint", None) else str(exc)


def check_subids(host: Host) -> list[Check]:
    subuids, subgids, error = _ranges(host)
    uid_file, gid_file = _files(host)
    if error:
        return [Check("subids", "subordinate ids", FAILURE, error,
                      f"fix the line named above in {uid_file} or {gid_file}")]
    missing = [f for f, r in ((uid_file, subuids), (gid_file, subgids)) if not r]
    if missing:
        return [Check(
            "subids", "subordinate ids", WARNING,
            f"no ranges for {host.user} in {' and '.join(missing)}: rl maps only your own id, "
            "so images with files owned by other users cannot be used",
            f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {host.user}\n"
            f"(or add the line '{host.user}:100000:65536' to /etc/subuid and /etc/subgid; "
            "pick a range no other user has)")]

    def show(ranges: list) -> str:  # type: ignore[type-arg]
        return ", ".join(f"{r.start}-{r.end - 1}" for r in ranges)

    count = min(sum(r.count for r in subuids), sum(r.count for r in subgids))
    status, fix = OK, ""
    if count < 65536:
        status = WARNING
        fix = (f"give {host.user} 65536 ids: sudo usermod --add-subuids 100000-165535 "
               f"--add-subgids 100000-165535 {host.user}")
    return [Check("subids", "subordinate ids", status,
                  f"{host.user}: uids {show(subuids)}, gids {show(subgids)} ({count} ids)"
                  + (" — fewer than the 65536 most images need" if status != OK else ""), fix)]


def _privileged(path: str) -> str | None:
    """How the helper gets its privilege ("setuid root", "file capabilities"), or None."""
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and st.st_uid == 0:
        return "setuid root"
    try:
        os.getxattr(path, "security.capability")
        return "file capabilities"
    except OSError as exc:
        # ENODATA: no capabilities; ENOTSUP: a filesystem without xattrs cannot hold any.
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
        return None


def check_helpers(host: Host) -> list[Check]:
    """uidmap (present and privileged) and uidmap-works (a real mapping)."""
    from rootless.doctor.probe import check_uidmap_works

    found = {name: host.which(name) for name in ("newuidmap", "newgidmap")}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        return [Check("uidmap", "newuidmap/newgidmap", WARNING,
                      f"{' and '.join(missing)} not found on PATH: rl maps only your own id",
                      "sudo apt install uidmap   (Fedora: sudo dnf install shadow-utils)"),
                Check("uidmap-works", "id mapping with newuidmap", WARNING,
                      "not tried: the helpers are missing", "sudo apt install uidmap")]
    paths = {n: p for n, p in found.items() if p}
    how = {n: _privileged(p) for n, p in paths.items()}
    bad = [paths[n] for n, h in how.items() if h is None]
    subuids, subgids, _error = _ranges(host)
    if bad:
        fixes = "\n".join(f"sudo chmod u+s {p}   (or: sudo setcap cap_setuid+ep {p})"
                          .replace("cap_setuid", "cap_setgid" if "gid" in p else "cap_setuid")
                          for p in bad)
        status = FAILURE if subuids and subgids else WARNING
        return [Check("uidmap", "newuidmap/newgidmap", status,
                      f"{', '.join(bad)} neither setuid root nor with file capabilities",
                      fixes + "\nor reinstall: sudo apt install --reinstall uidmap"),
                Check("uidmap-works", "id mapping with newuidmap", status,
                      "not tried: the helpers have no privilege", fixes)]
    checks = [Check("uidmap", "newuidmap/newgidmap", OK,
                    ", ".join(f"{paths[n]} ({h})" for n, h in how.items()))]
    if not (subuids and subgids):
        checks.append(Check("uidmap-works", "id mapping with newuidmap", WARNING,
                            "not tried: no subordinate id ranges (see subids)",
                            "add ranges as the subids check says"))
    else:
        checks.append(check_uidmap_works(host, (paths["newuidmap"], paths["newgidmap"]),
                                         subuids, subgids))
    return checks
