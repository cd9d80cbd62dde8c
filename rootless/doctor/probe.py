"""Real attempts, not guesses: create a user namespace, mount overlayfs with `userxattr`
inside it, unshare time and cgroup namespaces, and map ids with newuidmap/newgidmap.

Each attempt runs in a forked child through rootless.primitives.userns.run_in_userns, the same
path `rl run` takes, so a pass here means the launcher's first steps work too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rootless.doctor import FAILURE, OK, WARNING, Check, Host

_OVERLAY_FIX = ("use Linux 5.11 or later (overlayfs with userxattr in a user namespace), or "
                "install fuse-overlayfs (Debian/Ubuntu: sudo apt install fuse-overlayfs)")


def check_userns(host: Host) -> list[Check]:
    """userns (creation), overlay (userxattr inside it), namespaces (time, cgroup)."""
    scratch, elsewhere = _scratch_dir(host)
    try:
        checks = _probe_userns(host, scratch)
    finally:
        left = _remove(scratch)
    overlay = next(c for c in checks if c.id == "overlay")
    if elsewhere:
        overlay.found += f" (in {scratch.parent}: {elsewhere})"
    if left:
        overlay.found += f"; {left}"
        overlay.status = FAILURE if overlay.status == FAILURE else WARNING
        overlay.fix = (overlay.fix + "\n" if overlay.fix else "") + f"rm -rf {scratch}"
    return checks


def _probe_userns(host: Host, scratch: Path) -> list[Check]:
    import idmap
    from rootless.errors import RlError
    from rootless.primitives.userns import run_in_userns

    # The single-id map needs no helper, so this isolates the kernel's answer.
    mapping = idmap.plan_mapping(uid=host.uid, gid=host.gid, user=host.user, subuids=[],
                                 subgids=[], helpers_available=False)
    read_fd, write_fd = os.pipe()
    try:
        try:
            run_in_userns(lambda: _inside(scratch, write_fd), mapping=mapping, helpers=None,
                          name="rl:[doctor]")
        except RlError as exc:
            fix = exc.hint or "see the failure of user namespace sysctls above"
            return [Check("userns", "user namespaces", FAILURE, exc.message, fix),
                    Check("overlay", "overlay in a user namespace", FAILURE,
                          "not tried: no user namespace", fix),
                    Check("namespaces", "time and cgroup namespaces", FAILURE,
                          "not tried: no user namespace", fix)]
        os.close(write_fd)
        write_fd = -1
        with os.fdopen(read_fd, "rb") as f:
            read_fd = -1
            result: dict[str, Any] = json.loads(f.read() or b"{}")
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    checks = [Check("userns", "user namespaces", OK,
                    f"created a user namespace as uid {host.uid}")]
    if result.get("overlay") is None:
        checks.append(Check("overlay", "overlay in a user namespace", OK,
                            f"mounted overlayfs with userxattr in {scratch.parent} "
                            "and created a whiteout"))
    else:
        checks.append(Check("overlay", "overlay in a user namespace", FAILURE,
                            f"overlay mount in {scratch.parent}: {result['overlay']}",
                            _OVERLAY_FIX))
    missing = [f"{ns} ({err})" for ns, err in (("time", result.get("time")),
                                                 ("cgroup", result.get("cgroup"))) if err]
    if missing:
        checks.append(Check("namespaces", "time and cgroup namespaces", WARNING,
                            f"cannot unshare {', '.join(missing)}",
                            "use Linux 5.6 or later (time) and 4.6 or later (cgroup)"))
    else:
        checks.append(Check("namespaces", "time and cgroup namespaces", OK,
                            "time and cgroup namespaces can be created"))
    return checks


def _scratch_dir(host: Host) -> tuple[Path, str]:
    """A directory on the storage filesystem (where container overlays will live), or in /tmp
    when storage does not exist yet and cannot be made; then also why, for the finding (any
    errno: the probe still runs, and the storage check says what is wrong with storage)."""
    from rootless.errors import describe_oserror

    base, why = host.paths.data / "tmp", ""
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = describe_oserror(f"cannot create {base}", exc)
        base = Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="doctor-", dir=base))
    for name in ("lower", "upper", "work", "merged"):
        (root / name).mkdir()
    (root / "lower" / "file").write_text("lower\n")
    return root, why


def _inside(scratch: Path, out_fd: int) -> None:
    """Runs as root of the new user namespace; reports each attempt's errno on out_fd."""
    from rootless.errors import describe_oserror
    from rootless.kernel import constants as k
    from rootless.kernel import libc

    lib = libc()
    result: dict[str, str | None] = {}
    try:
        lib.unshare(k.CLONE_NEWNS)
        lib.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        opts = (f"lowerdir={scratch}/lower,upperdir={scratch}/upper,"
                f"workdir={scratch}/work,userxattr")
        lib.mount("overlay", scratch / "merged", "overlay", 0, opts)
        (scratch / "merged" / "new").write_text("upper\n")
        # Deleting a lower file makes a whiteout (a 0:0 character device) in upper.
        (scratch / "merged" / "file").unlink()
        st = os.lstat(scratch / "upper" / "file")
        lib.umount2(scratch / "merged")
        result["overlay"] = None if st.st_rdev == 0 and (st.st_mode & 0o170000) == 0o020000 \
            else "deleting a file did not leave a whiteout in the upper directory"
    except OSError as exc:
        result["overlay"] = describe_oserror("mount", exc)
    for name, flag in (("time", k.CLONE_NEWTIME), ("cgroup", k.CLONE_NEWCGROUP)):
        try:
            lib.unshare(flag)
            result[name] = None
        except OSError as exc:
            result[name] = describe_oserror(f"unshare CLONE_NEW{name.upper()}", exc)
    os.write(out_fd, json.dumps(result).encode())


def _remove(root: Path) -> str | None:
    """Remove the scratch directory; what could not be removed, for the finding, or None."""
    from rootless.errors import describe_oserror

    # overlayfs leaves work/work mode 000; make everything ours and writable first.
    for dirpath, dirnames, _files in os.walk(root):
        for d in dirnames:
            try:
                os.chmod(os.path.join(dirpath, d), 0o700)
            except FileNotFoundError:
                continue  # ENOENT: gone already (the kernel removes overlay's work/index)
    failures: list[str] = []

    def record(_fn: Any, path: str, exc: Any) -> None:
        error = exc[1] if isinstance(exc, tuple) else exc
        if not isinstance(error, FileNotFoundError) and not failures:
            failures.append(describe_oserror(f"cannot remove {path}", error))

    if sys.version_info >= (3, 12):
        shutil.rmtree(root, onexc=record)
    else:
        shutil.rmtree(root, onerror=record)
    if failures:
        return f"the scratch directory {root} was left behind: {failures[0]}"
    return None


def check_uidmap_works(host: Host, helpers: tuple[str, str], subuids: list[Any],
                       subgids: list[Any]) -> Check:
    """A real newuidmap/newgidmap call on a child that has just unshared its user namespace."""
    import idmap
    from rootless.errors import RlError
    from rootless.primitives.userns import run_in_userns

    mapping = idmap.plan_mapping(uid=host.uid, gid=host.gid, user=host.user, subuids=subuids,
                                 subgids=subgids, helpers_available=True)
    try:
        run_in_userns(lambda: None, mapping=mapping, helpers=helpers, name="rl:[doctor]")
    except RlError as exc:
        return Check("uidmap-works", "id mapping with newuidmap", FAILURE, exc.message,
                     exc.hint or "check /etc/subuid, /etc/subgid and the uidmap package")
    uids = " ".join(r.line().replace(" ", ":") for r in mapping.uid_map)
    return Check("uidmap-works", "id mapping with newuidmap", OK,
                 f"newuidmap/newgidmap mapped a child (uids {uids})")
