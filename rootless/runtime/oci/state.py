"""The OCI runtime's state directory (`--root`, default $XDG_RUNTIME_DIR/rl-oci):

    <root>/<id>/              mkdir(2) is the claim: of two `create` with one id exactly one
                              succeeds (EEXIST for the other)
    <root>/<id>/creating      the creating process's pid and start time, until state.json
    <root>/<id>/state.json    pid + start time of the container's process, bundle, times,
                              annotations, cgroup; written whole (temp + rename) so that a
                              `state` running beside `create` reads all of it or nothing
    <root>/<id>/config.json   the bundle's config as created (exec's defaults, the hooks)
    <root>/<id>/start         PID 1's socket while it waits for `start`: "created" until
                              `start` connects and removes it, "running" after

A pid alone is never trusted: a process is the container's only if its start time (field 22
of /proc/PID/stat) is the recorded one, and a zombie counts as stopped (proc(5)).
"""

from __future__ import annotations

import os
import time

from rootless.errors import RlError
from rootless.runtime.state import read_json, start_time, stat_fields, write_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


class OciStateError(RlError):
    exit_code = 1


def default_root(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env  # type: ignore[assignment]
    base = env.get("XDG_RUNTIME_DIR")
    if base:
        return os.path.join(base, "rl-oci")
    return f"/tmp/rl-oci-{os.getuid()}"


def check_id(cid: str) -> None:
    """runc's rule for ids (^[\\w+-.]+$), which also keeps them safe as one path component."""
    if not cid or cid in (".", "..") or not set(cid) <= ID_CHARS or len(cid) > 1024:
        raise OciStateError(f"invalid container id {cid!r}: use letters, digits, '_', '+', '-' "
                            "and '.'")


class Record:
    """One container's files under --root, and what they say."""

    __slots__ = ("root", "cid", "dir", "state")

    def __init__(self, root: str, cid: str) -> None:
        self.root = root
        self.cid = cid
        self.dir = os.path.join(root, cid)
        self.state: dict[str, Any] | None = None

    @property
    def start_socket(self) -> str:
        return os.path.join(self.dir, "start")

    @property
    def config_file(self) -> str:
        return os.path.join(self.dir, "config.json")

    # -- writing ---------------------------------------------------------------------------
    def claim(self) -> None:
        """mkdir the container's directory: the atomic claim of the id."""
        ensure_root(self.root)
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            raise OciStateError(f"container with id {self.cid} already exists") from None
        me = os.getpid()
        write_json(os.path.join(self.dir, "creating"), {"pid": me, "pid_start": start_time(me)})

    def save(self, state: dict[str, Any]) -> None:
        write_json(os.path.join(self.dir, "state.json"), state)
        self.state = state
        try:
            os.unlink(os.path.join(self.dir, "creating"))
        except FileNotFoundError:
            pass

    def save_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_file, config)

    def remove(self) -> None:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self.dir)
        except FileNotFoundError:
            pass

    # -- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isdir(self.dir)

    def load(self) -> Record:
        if not self.exists():
            raise OciStateError(f"container {self.cid} does not exist")
        self.state = read_json(os.path.join(self.dir, "state.json"))
        return self

    def config(self) -> dict[str, Any]:
        return read_json(self.config_file) or {}

    @property
    def pid(self) -> int:
        return int((self.state or {}).get("pid") or 0)

    def status(self) -> str:
        """creating, created, running, paused or stopped (runtime.md "State")."""
        if self.state is None:
            creator = read_json(os.path.join(self.dir, "creating")) or {}
            if process_alive(creator.get("pid"), creator.get("pid_start")):
                return "creating"
            return "stopped"  # the creating process died: nothing runs, `delete` cleans up
        if not process_alive(self.pid, self.state.get("pid_start")):
            return "stopped"
        if os.path.exists(self.start_socket):
            return "created"
        if self.frozen():
            return "paused"
        return "running"

    def frozen(self) -> bool:
        cgroup = (self.state or {}).get("cgroup")
        if not cgroup:
            return False
        try:
            with open(os.path.join(cgroup, "cgroup.freeze")) as f:
                return f.read().strip() == "1"
        except OSError:
            return False

    def oci_state(self) -> dict[str, Any]:
        """The state as runtime.md defines it (plus runc's rootfs/created/owner)."""
        state = self.state or {}
        status = self.status()
        config = self.config() if state else {}
        return {
            "ociVersion": config.get("ociVersion") or "1.1.0",
            "id": self.cid,
            "status": status,
            "pid": self.pid if status in ("created", "running", "paused") else 0,
            "bundle": state.get("bundle", ""),
            "rootfs": state.get("rootfs", ""),
            "created": state.get("created", ""),
            "owner": "",
            "annotations": config.get("annotations") or {},
        }


def ensure_root(root: str) -> None:
    """--root exists, is ours and nobody else may write to it: a state directory someone else
    prepared (a predictable /tmp path) could feed us pids and cgroups to act on."""
    os.makedirs(root, 0o700, exist_ok=True)
    st = os.stat(root)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise OciStateError(f"--root {root} belongs to another user or is writable by others: "
                            "refusing to keep container state there")


def act_as_owner(rec: Record) -> None:
    """Called by root on a container another user created (Slurm's slurmstepd runs the
    RunTime* clean-up commands as root): become that user first, so that its state file can
    make us signal or remove only what the user could."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(rec.dir)
    except FileNotFoundError:
        return
    if st.st_uid == 0:
        return
    os.setgroups([])
    os.setresgid(st.st_gid, st.st_gid, st.st_gid)
    os.setresuid(st.st_uid, st.st_uid, st.st_uid)


def process_alive(pid: int | None, started: int | None) -> bool:
    """pid runs (not a zombie) and is the process that had start time `started`."""
    if not pid:
        return False
    rest = stat_fields(pid)
    if not rest or rest[0] in (b"Z", b"X"):
        return False
    try:
        return started is None or int(rest[19]) == started
    except (IndexError, ValueError):
        return False


def rfc3339(now: float | None = None) -> str:
    now = time.time() if now is None else now
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def list_records(root: str) -> list[Record]:
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    out = []
    for name in names:
        rec = Record(root, name)
        if os.path.isdir(rec.dir):
            out.append(rec.load())
    return out


class DirLock:
    """flock(2) on the container's directory: start, kill --all, delete, pause, resume and
    update of one container go one at a time (state and list never wait)."""

    def __init__(self, rec: Record) -> None:
        self.rec = rec
        self.fd = -1

    def __enter__(self) -> DirLock:
        import fcntl

        try:
            self.fd = os.open(self.rec.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OciStateError(f"container {self.rec.cid} does not exist") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def dump(data: Any) -> str:
    """Indented JSON for the user (state, list, features): off the start-up path."""
    import json

    return json.dumps(data, indent=2)
