"""Container state: names, the running/exited record, and the truth about both.

    data:    containers/<id>/config.json   what was run (written once by prepare)
             names/<name> -> <id>          a symlink: creating it is the atomic name claim
    runtime: <id>/                         made first, with its creator's lock held (below)
             <id>/state.json               created, then pids (with start times), status,
                                           exit code, times
             locks/<id>, locks/name-<name> flock for rm/start/rename/stop/prune and for a
                                           name's stale-claim check (a launcher never takes
                                           its own container's); removed on release, so
                                           locks/ is empty at rest

`rl run` makes the runtime directory before anything else: under a temporary name, with an
flock(2) held on the directory itself, then renamed into place, so the directory is never
visible without its lock. The lock is held by the creating `rl run` and, through fork, by the
monitor of `rl run -d` for as long as they live: "the directory's lock is free" means "nobody
is creating this container any more", with no pid to trust and no moment of hand-over. The
storage directory and the name are made after it, so everything a SIGKILL leaves behind is
either a container with config.json or storage whose creator is provably gone (the sweep in
rootless.runtime.sweep removes it).

`rl run` writes state.json with write-to-temp + rename, so a reader sees a whole file or none.
Nothing here trusts a pid alone: every pid is stored with its start time (/proc/PID/stat field
22, in clock ticks since boot), and a pid whose start time differs is a different process
(proc(5)). The process that collects the exit status (the foreground `rl run` or the monitor of
`rl run -d`) is the "owner": while it lives, the container may be running; once it is gone
without writing "exited", the container is exited with an unknown status, whatever the file
says. The runtime directory is a tmpfs: after a reboot it is empty, and containers of an
earlier boot (config.json carries the boot id) read as exited.

This module is imported by `rl run`: only os, time and rootless.jsonc at module level.
"""

from __future__ import annotations

import os
import time

import rootless.jsonc as json  # json's C half: importing json costs ~5 ms (re)

# typing for annotations only: this module is on every `rl run`'s start-up path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


# -- small pieces --------------------------------------------------------------------------

def boot_id() -> str:
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip()
    except FileNotFoundError:  # a kernel without CONFIG_SYSCTL: every container is this boot's
        return ""


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state) on; None when the process does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        # No such process (ESRCH when it exits between the open and the read).
        return None
    # comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    return data[data.rfind(b")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None when the process does not exist."""
    rest = stat_fields(pid)
    try:
        return int(rest[19])  # type: ignore[index]
    except (IndexError, ValueError, TypeError):
        return None


def alive(pid: int | None, started: int | None) -> bool:
    """The process pid exists and is the one that had start time `started` (not a reuse)."""
    if not pid:
        return False
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def write_json(path: str, data: dict[str, Any]) -> None:
    """Whole file or nothing: write a temporary name, then rename over the old one. The
    temporary is created in the same directory, so a removed directory makes this fail
    (ENOENT) rather than resurrect it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())  # type: ignore[no-any-return]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:  # not JSON: a file rl did not write whole (every write is atomic)
        return None


def runtime_dir(paths: Any, cid: str) -> str:
    return f"{paths.runtime_dir}/{cid}"


def state_file(paths: Any, cid: str) -> str:
    return f"{paths.runtime_dir}/{cid}/state.json"


def names_dir(paths: Any) -> str:
    return f"{paths.data_dir}/names"


# -- the creation record -----------------------------------------------------------------------

def create_record(paths: Any, cid: str, min_fd: int = 3) -> int:
    """Make the container's runtime directory with a "created" state.json, visible at once and
    with its lock held; return the lock's descriptor (close-on-exec; keep it open for as long
    as this process or the monitor it forks owns the container), numbered min_fd or above:
    below are the descriptors `--preserve-fds` passes to the container, which must be the
    user's."""
    import fcntl

    from rootless.errors import SetupError, describe_oserror

    tmp = f"{paths.runtime_dir}/.new-{cid}"
    fd = -1
    try:
        try:
            os.mkdir(tmp, 0o700)
        except FileNotFoundError:
            os.makedirs(paths.runtime_dir, mode=0o700, exist_ok=True)
            os.mkdir(tmp, 0o700)
        low = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = fcntl.fcntl(low, fcntl.F_DUPFD_CLOEXEC, min_fd)
        finally:
            os.close(low)
        # Taken before the directory has its real name: nobody can see it unlocked.
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_json(f"{tmp}/state.json", {"status": "created", "creator": os.getpid()})
        os.rename(tmp, runtime_dir(paths, cid))
    except BaseException as exc:
        remove_runtime(paths, cid, f".new-{cid}")
        if fd >= 0:
            os.close(fd)
        if isinstance(exc, OSError):
            raise SetupError(describe_oserror(f"creating the container's state in {tmp}", exc),
                             hint="check that $XDG_RUNTIME_DIR is writable") from None
        raise
    return fd


def creator_alive(paths: Any, cid: str, name: str | None = None) -> bool:
    """Whether a process still holds the lock of the container's runtime directory (or of
    `name`, a `.new-<id>` directory): its `rl run` or monitor is alive. A shared, non-blocking
    probe: probers never keep each other out, and never wait."""
    import fcntl

    try:
        fd = os.open(f"{paths.runtime_dir}/{name or cid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def in_creation(state: dict[str, Any] | None) -> bool:
    """A "created" record written by create_record: its creator's lock says whether it lives."""
    return bool(state) and state.get("status") == "created" and "creator" in state  # type: ignore[union-attr]


# -- names -----------------------------------------------------------------------------------

class NameInUse(Exception):
    def __init__(self, name: str, owner: str) -> None:
        super().__init__(name)
        self.name = name
        self.owner = owner


def reserve_name(paths: Any, name: str | None, cid: str, cidfile: str | None = None) -> None:
    """Claim `name` for cid (and create --cidfile); UsageError 125 when either is taken.

    symlink(2) creates the link or fails with EEXIST, atomically: of many concurrent claims
    exactly one succeeds (claim_name says when an existing link may be taken over).
    """
    from rootless.errors import SetupError, UsageError, describe_oserror

    if cidfile:
        _create_cidfile(cidfile, cid)
    if not name:
        return
    try:
        claim_name(paths, name, cid)
    except NameInUse as exc:
        if cidfile:
            _unlink(cidfile)
        raise UsageError(
            f'creating container storage: the container name "{name}" is already in use by '
            f"{exc.owner}. You have to remove that container to be able to reuse that name: "
            "that name is already in use",
            hint=f"remove it ('rl rm {name}') or choose another --name",
        ) from None
    except OSError as exc:
        if cidfile:
            _unlink(cidfile)
        raise SetupError(describe_oserror(f'claiming the name "{name}" in {names_dir(paths)}',
                                          exc)) from None


def claim_generated_name(paths: Any, cid: str) -> str | None:
    """A free adjective_noun name for a container started without --name (None when the
    first tries all collide: the container then has no name, which is allowed)."""
    from rootless.errors import SetupError, describe_oserror
    from rootless.runtime.names import random_name

    for _ in range(8):
        name = random_name()
        try:
            claim_name(paths, name, cid)
            return name
        except NameInUse:
            continue
        except OSError as exc:
            raise SetupError(describe_oserror(f"claiming a name in {names_dir(paths)}", exc)) from None
    return None


def claim_name(paths: Any, name: str, cid: str) -> None:
    """Take `name` for cid, or raise NameInUse.

    An existing link is taken over only when its container is provably gone: it has no
    config.json and the lock of its runtime directory is free (its creator died before
    writing the config: between the claim and the config there is always a live lock
    holder), or it is a `--rm` container whose owner died (it would have removed itself; the
    next rl that sees it does so, as `rl ps` does). The check and the unlink happen under the
    name's lock, and only lock holders unlink a name they did not create, so a link cannot
    change between the readlink and the unlink.
    """
    link = f"{names_dir(paths)}/{name}"
    for _ in range(5):
        try:
            os.symlink(cid, link)
            return
        except FileNotFoundError:
            os.makedirs(names_dir(paths), mode=0o700, exist_ok=True)
            continue
        except FileExistsError:
            pass
        dead = None
        with _name_lock(paths, name):
            owner = _readlink(link)
            if owner is None:
                continue
            if owner == cid:
                return
            c = load(paths, owner)
            if c is None:
                if creator_alive(paths, owner):
                    raise NameInUse(name, owner)
                _unlink(link)  # stale: the storage, if any, is an orphan for the sweep
                continue
            if not (c.stale and (c.config.get("spec") or {}).get("remove")):
                raise NameInUse(name, owner)
            dead = c
        # Outside the name's lock: the removal takes the container's lock, then the name's.
        from rootless.runtime.sweep import remove_dead

        remove_dead(paths, dead)
    raise NameInUse(name, _readlink(link) or "another container")


def release_name(paths: Any, name: str | None, cid: str) -> None:
    """Drop the name if (and only if) it still points at cid."""
    if not name:
        return
    link = f"{names_dir(paths)}/{name}"
    if _readlink(link) != cid:
        return
    with _name_lock(paths, name):
        if _readlink(link) == cid:
            _unlink(link)


def _name_lock(paths: Any, name: str) -> _flock:
    return _flock(f"{paths.runtime_dir}/locks/name-{name}")


def lookup_name(paths: Any, name: str) -> str | None:
    return _readlink(f"{names_dir(paths)}/{name}")


def _create_cidfile(path: str, cid: str) -> None:
    from rootless.errors import UsageError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise UsageError(
            f"container id file exists. Ensure another container is not using it or delete {path}",
        ) from None
    except OSError as exc:
        from rootless.errors import describe_oserror

        raise UsageError(describe_oserror(f"creating --cidfile {path}", exc)) from None
    with os.fdopen(fd, "w") as f:
        f.write(cid)


def release_reservations(paths: Any, spec: Any, cid: str) -> None:
    """Undo reserve_name after prepare failed."""
    release_name(paths, spec.name, cid)
    if spec.cidfile and _read_text(spec.cidfile) == cid:
        _unlink(spec.cidfile)


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return None


def _unlink(path: str) -> None:
    """Remove a file that may already be gone (a concurrent removal got there first)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


class _flock:
    """An exclusive flock(2) on a lock file, held for the `with` block. The holder removes the
    file before it unlocks, so lock files do not pile up (one per container and name ever
    used, otherwise). That is safe with one rule: whoever acquires the lock checks that the
    path still names the file it locked, and starts again if not. A waiter that wakes on a
    removed file sees that; a newcomer creates a fresh file, which nobody else can be holding,
    since a file is only removed while locked and never reappears under the name."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _flock:
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            held = os.fstat(fd)
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                self.fd = fd
                return self
            os.close(fd)  # removed (and perhaps re-created) while we waited: try again

    def __exit__(self, *exc: object) -> None:
        try:
            _unlink(self.path)
        finally:
            os.close(self.fd)


def container_lock(paths: Any, cid: str) -> _flock:
    """The per-container lock of rm/start/stop/rename/prune (the launcher never takes it)."""
    return _flock(f"{paths.runtime_dir}/locks/{cid}")


# -- the launcher's records ---------------------------------------------------------------

def record_running(prepared: Any, pid1: int, helper_pid: int) -> None:
    """One write: the container's PID 1 exists. The caller (this process) is the owner."""
    paths = prepared.paths
    rdir = runtime_dir(paths, prepared.cid)
    try:
        os.mkdir(rdir, 0o700)
    except FileNotFoundError:
        os.makedirs(rdir, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a restart or `rl start` of an existing container
    me = os.getpid()
    write_json(f"{rdir}/state.json", {
        "status": "running",
        "pid": pid1, "pid_start": start_time(pid1),
        "helper": helper_pid, "helper_start": start_time(helper_pid),
        "owner": me, "owner_start": start_time(me),
        "started": time.time(),
    })


def record_exited(prepared: Any, exit_code: int | None) -> None:
    """One write (or a removal with --rm): the container ended with exit_code (None: the
    launcher is unwinding an error; its exit code, when it carries one, is recorded)."""
    import sys

    paths = prepared.paths
    cid = prepared.cid
    error = None
    if exit_code is None:
        # Called from a `finally:` while an error propagates: record what the user saw.
        exc = sys.exc_info()[1]
        if exc is not None:
            error = str(exc)
            exit_code = getattr(exc, "exit_code", None)
    if prepared.spec.remove:
        remove_runtime(paths, cid)
        release_name(paths, prepared.spec.name, cid)
        return
    path = state_file(paths, cid)
    old = read_json(path) or {}
    data = {
        "status": "exited", "exit_code": exit_code,
        "started": old.get("started"), "finished": time.time(),
        "restarts": old.get("restarts", 0),
    }
    if error:
        data["error"] = error
    try:
        write_json(path, data)
    except FileNotFoundError:
        # PID 1 never started (or `rl rm -f` removed the directory): write only while the
        # container still exists.
        if os.path.isdir(f"{paths.containers_dir}/{cid}"):
            os.makedirs(runtime_dir(paths, cid), mode=0o700, exist_ok=True)
            write_json(path, data)


def note_problem(prepared: Any, text: str, network_lost: bool = False) -> None:
    """Something went wrong around a running container (its network helper or its logger
    died): kept in state.json for `rl inspect` (State.Error) and `rl ps`. Written by the
    owner, the only writer of a running container's record."""
    path = state_file(prepared.paths, prepared.cid)
    data = read_json(path)
    if data is None or data.get("status") != "running":
        return
    data["problems"] = [*data.get("problems", []), text]
    if network_lost:
        data["network_lost"] = True
    write_json(path, data)


def remove_runtime(paths: Any, cid: str, name: str | None = None) -> None:
    """Remove the container's runtime directory (or `name`, a `.new-<id>` one)."""
    import errno

    rdir = f"{paths.runtime_dir}/{name or cid}"
    for _ in range(3):
        try:
            names = os.listdir(rdir)
        except FileNotFoundError:
            return
        for entry in names:
            _unlink(f"{rdir}/{entry}")
        try:
            os.rmdir(rdir)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
            # The owner wrote a file meanwhile (a state.json on its way out): list again.


# -- reading -------------------------------------------------------------------------------

class Container:
    """One container as the commands see it: its config, its state and the status they imply."""

    __slots__ = ("cid", "config", "state", "status", "stale")

    def __init__(self, cid: str, config: dict[str, Any], state: dict[str, Any] | None,
                 boot: str, creator_alive: bool = False) -> None:
        self.cid = cid
        self.config = config
        self.state = state or {}
        self.stale = False
        self.status = self._status(state, boot, creator_alive)

    def _status(self, state: dict[str, Any] | None, boot: str, creator_alive: bool) -> str:
        if state is None or state.get("status") == "created":
            # Never started in this boot: "created", or "exited" after a reboot. A creator
            # that died before the start record leaves a container nobody will start.
            if in_creation(state) and not creator_alive:
                self.stale = True
            return "created" if self.config.get("boot_id", boot) == boot else "exited"
        if state.get("status") == "running":
            if alive(state.get("owner"), state.get("owner_start")):
                return "running"
            self.stale = True
            return "exited"
        return str(state.get("status") or "exited")

    @property
    def name(self) -> str:
        return str(self.config.get("name") or "")

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def exit_code(self) -> int | None:
        if self.stale or self.status != "exited":
            return None
        code = self.state.get("exit_code")
        return None if code is None else int(code)

    @property
    def pid(self) -> int:
        return int(self.state.get("pid") or 0) if self.running else 0


def load(paths: Any, cid: str, boot: str | None = None) -> Container | None:
    config = read_json(f"{paths.containers_dir}/{cid}/config.json")
    if config is None:
        return None
    state = read_json(state_file(paths, cid))
    alive = in_creation(state) and creator_alive(paths, cid)
    return Container(cid, config, state, boot or boot_id(), alive)


def list_containers(paths: Any) -> list[Container]:
    try:
        cids = os.listdir(paths.containers_dir)
    except FileNotFoundError:
        return []
    boot = boot_id()
    out = []
    for cid in cids:
        c = load(paths, cid, boot)
        if c is not None:  # no config.json: being created or removed right now
            out.append(c)
    out.sort(key=lambda c: c.config.get("created") or 0, reverse=True)
    return out


def repair(paths: Any, c: Container) -> None:
    """A container whose owner died: make the files say so. PID 1 and the helper die with
    their parent (PR_SET_PDEATHSIG), but make sure: kill them if they are still the same
    processes."""
    import signal

    if not c.stale:
        return
    with container_lock(paths, c.cid):
        path = state_file(paths, c.cid)
        state = read_json(path)
        if in_creation(state):
            if creator_alive(paths, c.cid):
                return
            # Its `rl run` died before starting it: a plain "created" container now.
            write_json(path, {"status": "created"})
            c.state = {"status": "created"}
            return
        if not state or state.get("status") != "running":
            return  # the owner wrote "exited" after all
        if alive(state.get("owner"), state.get("owner_start")):
            return
        for key in ("pid", "helper"):
            if alive(state.get(key), state.get(f"{key}_start")):
                try:
                    os.kill(int(state[key]), signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it died between the check and the kill
        data = {"status": "exited", "exit_code": None, "started": state.get("started"),
                "finished": time.time(), "restarts": state.get("restarts", 0),
                "error": "the process that watched the container died; exit status unknown"}
        try:
            write_json(path, data)
        except FileNotFoundError:
            return  # removed meanwhile (`rl rm` of a container is not under this lock's care)
        c.state = data


def images_in_use(paths: Any) -> set[str]:
    """Image ids that containers (of any state) use: `rl rmi`/image prune must keep them."""
    return {str(c.config.get("image_id")) for c in list_containers(paths) if c.config.get("image_id")}
