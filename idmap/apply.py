"""Writing a planned IdMapping into /proc/PID/{uid_map,gid_map} of a child that has just
unshared CLONE_NEWUSER. Runs in the parent, outside the new namespace (user_namespaces(7):
the writer must be in the parent namespace, or in the child namespace itself).
"""

from __future__ import annotations

import os

from idmap.errors import IdMapError
from idmap.plan import MODE_DIRECT, MODE_NESTED, MODE_SINGLE, MODE_SUBID, IdMapping, IdRange

# collections.abc for annotations only: importing it (and collections) costs ~1.5 ms of every
# container start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def find_helpers(path_env: str | None = None) -> tuple[str, str] | None:
    """(newuidmap, newgidmap) found on `path_env` (default $PATH), or None if either is missing."""
    uidmap = _which("newuidmap", path_env)
    gidmap = _which("newgidmap", path_env)
    if uidmap is None or gidmap is None:
        return None
    return uidmap, gidmap


def _which(name: str, path_env: str | None) -> str | None:
    # shutil.which, without importing shutil (~3 ms, it pulls in bz2/lzma) on every run.
    path = os.environ.get("PATH", os.defpath) if path_env is None else path_env
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def apply_mapping(pid: int, mapping: IdMapping, helpers: tuple[str, str] | None) -> None:
    """Install `mapping` for process `pid`; raise IdMapError saying what failed and why."""
    if mapping.mode == MODE_SINGLE:
        _write_proc(pid, "uid_map", _map_text(mapping.uid_map))
        # An unprivileged writer may set gid_map only once setgroups is "deny", or the
        # namespace's root could drop supplementary groups it was denied by (Linux 3.19,
        # CVE-2014-8989; user_namespaces(7), "The /proc/[pid]/setgroups file").
        _write_proc(pid, "setgroups", "deny")
        _write_proc(pid, "gid_map", _map_text(mapping.gid_map))
    elif mapping.mode == MODE_DIRECT:
        _write_proc(pid, "uid_map", _map_text(mapping.uid_map))
        _write_proc(pid, "gid_map", _map_text(mapping.gid_map))
    elif mapping.mode == MODE_SUBID:
        if helpers is None:
            raise IdMapError(
                "rl cannot write a subordinate-id map: newuidmap/newgidmap were not found.",
                hint="install them (Debian/Ubuntu: `sudo apt install uidmap`); see 'rl doctor uidmap'.",
            )
        _run_helpers(
            [
                [helpers[0], str(pid), *_map_args(mapping.uid_map)],
                [helpers[1], str(pid), *_map_args(mapping.gid_map)],
            ]
        )
    elif mapping.mode == MODE_NESTED:
        # The writer holds CAP_SETUID/CAP_SETGID in the parent namespace: setgroups may stay
        # "allow" (or "deny", inherited from a single-id parent).
        _write_proc(pid, "uid_map", _map_text(mapping.uid_map))
        _write_proc(pid, "gid_map", _map_text(mapping.gid_map))
    else:
        raise IdMapError(f"rl does not know the id mapping mode {mapping.mode!r}.")


def _map_text(ranges: Sequence[IdRange]) -> str:
    return "".join(f"{r.line()}\n" for r in ranges)


def _map_args(ranges: Sequence[IdRange]) -> list[str]:
    return [str(n) for r in ranges for n in (r.inside, r.outside, r.count)]


def _write_proc(pid: int, name: str, text: str) -> None:
    import errno

    path = f"/proc/{pid}/{name}"
    data = text.encode()
    try:
        # The kernel takes a map in one write(2) at offset 0; a second write gets EPERM.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as e:
        code = errno.errorcode.get(e.errno or 0, str(e.errno))
        shown = text.strip().replace("\n", "; ")
        hint = None
        if e.errno in (errno.ENOENT, errno.ESRCH):
            hint = "the process exited before its id map was written; see its own error above."
        elif e.errno == errno.EPERM:
            hint = ("the map was already written, or it names an id other than your own; "
                    "`rl doctor uidmap-works` checks the usual causes.")
        raise IdMapError(
            f"rl could not write '{shown}' to {path}: {e.strerror} ({code}).", hint=hint
        ) from e
    if written != len(data):
        raise IdMapError(f"rl wrote only {written} of {len(data)} bytes to {path}.")


def _run_helpers(argvs: list[list[str]]) -> None:
    """Run newuidmap and newgidmap at once (posix_spawn: no fork of this process's memory)
    and wait for both; collect each one's stderr through a pipe."""
    running: list[tuple[list[str], int, int]] = []  # argv, pid, read end of its pipe
    failure: IdMapError | None = None
    try:
        for argv in argvs:
            r, w = os.pipe2(os.O_CLOEXEC)
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, w, 1),
                (os.POSIX_SPAWN_DUP2, w, 2),
            ]
            try:
                pid = os.posix_spawn(argv[0], argv, dict(os.environ), file_actions=actions)
            except OSError as e:
                os.close(r)
                raise IdMapError(
                    f"rl could not start {argv[0]}: {e.strerror}.",
                    hint="reinstall the uidmap package (Debian/Ubuntu: "
                         "`sudo apt install --reinstall uidmap`).",
                ) from e
            finally:
                os.close(w)
            running.append((argv, pid, r))
    except IdMapError as e:
        failure = e
    outputs = _read_all([r for _, _, r in running])
    for (argv, pid, _), output in zip(running, outputs, strict=True):
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and failure is None:
            failure = _helper_error(argv, code, output)
    if failure is not None:
        raise failure


def _read_all(fds: list[int]) -> list[bytes]:
    """Read every pipe to EOF, polling so that neither writer can block on a full pipe."""
    import select

    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    open_fds = set(fds)
    try:
        while open_fds:
            for fd, _ in poller.poll():
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return [b"".join(chunks[fd]) for fd in fds]


def _helper_error(argv: list[str], code: int, output: bytes) -> IdMapError:
    import stat

    helper = argv[0]
    name = os.path.basename(helper)
    said = " ".join(output.decode(errors="replace").split()) or "no message"
    how = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
    files = "/etc/subuid" if "uid" in name else "/etc/subgid"
    try:
        privileged = bool(os.stat(helper).st_mode & stat.S_ISUID) or _has_file_caps(helper)
    except (FileNotFoundError, PermissionError):
        privileged = True  # removed or hidden meanwhile: cannot tell, so blame nothing
    if not privileged:
        hint = (f"{helper} is neither setuid root nor given file capabilities: run "
                f"`sudo chmod u+s {helper}`, or reinstall the uidmap package.")
    elif "not allowed" in said or "range" in said:
        hint = (f"check that {files} grants your user the ranges in the map "
                "(`rl doctor subids` shows them).")
    else:
        hint = (f"check {files}, and that {helper} is setuid root "
                "(Debian/Ubuntu: `sudo apt install --reinstall uidmap`).")
    return IdMapError(f"{' '.join(argv)} failed ({how}): {said}", hint=hint)


def _has_file_caps(path: str) -> bool:
    import errno

    try:
        os.getxattr(path, "security.capability")
    except OSError as e:
        # ENODATA: no capabilities; ENOTSUP: a file system without extended attributes.
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return False
        raise
    return True
