"""Resource limits through a delegated cgroup v2 subtree.

`prepare_cgroup` runs before any process exists: it finds a cgroup the user may manage (its own
cgroup when the init system delegated it, else a transient systemd scope with Delegate=yes),
decides which limits can be applied, removes stale container cgroups, and creates nothing.
`ContainerCgroup.create_and_attach` then makes `<delegated>/rl-<id>-<launcher pid>`, writes the
limits and moves the helper in, before PID 1 exists, so every container process inherits them.

Kernel rules this obeys (Documentation/admin-guide/cgroup-v2.rst):
- "no internal processes": a non-root cgroup can enable controllers for its children only
  while it has no processes of its own, so the delegated cgroup's processes move to a leaf
  first ("evacuation", as RootlessKit and moby's dind do);
- delegation containment: an unprivileged writer may move a process only between cgroups below
  a common ancestor whose cgroup.procs it can write;
- a delegated cgroup's own limit files belong to its parent's owner: limits go on a child.
"""

from __future__ import annotations

import errno
import os
import sys

from rootless.cgroups.plan import (
    Write,
    cgroup2_mount,
    cgroup_dir,
    format_size,
    needed_controllers,
    own_cgroup,
    parse_keyed,
    plan_writes,
    stale_owner,
)
from rootless.errors import CgroupError, describe_oserror
from rootless.fileio import read_or_empty, write_existing

# typing only for annotations: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Where the delegated cgroup's own processes go, so that it may enable controllers.
LEAF = "rl-leaf"

SYSTEMD_FIX = (
    "give your user manager the controllers (as root: mkdir -p /etc/systemd/system/user@.service.d"
    " && printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' >"
    " /etc/systemd/system/user@.service.d/delegate.conf && systemctl daemon-reload, then log in"
    " again; without a login session: loginctl enable-linger $USER), or run rl inside a delegated"
    " scope: systemd-run --user --scope -p Delegate=yes rl run ...; or pass --cgroups=best-effort"
    " to run without the limits"
)
V1_FIX = (
    "boot with the unified cgroup v2 hierarchy (kernel parameter systemd.unified_cgroup_hierarchy=1),"
    " then " + SYSTEMD_FIX
)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


_write = write_existing


def _writable(directory: str) -> bool:
    return all(os.access(p, os.W_OK) for p in (
        directory, directory + "/cgroup.procs", directory + "/cgroup.subtree_control"))


class Where:
    """Where the container's cgroup goes: a delegated directory (`base`), or a systemd scope to
    ask for (`base` None); `controllers` are the ones usable there."""

    __slots__ = ("base", "how", "mount", "controllers")

    def __init__(self, base: str | None, how: str, mount: tuple[str, str] | None,
                 controllers: set[str]) -> None:
        self.base, self.how, self.mount, self.controllers = base, how, mount, controllers


def locate(log: Any, needed: list[str], uid: int) -> tuple[Where | None, str, str]:
    """Find a delegated cgroup for controllers `needed`. Returns (where, reason, fix): reason
    is empty when everything needed is usable; else `where` (if any) has only some of them."""
    try:
        mount = cgroup2_mount(_read("/proc/self/mountinfo"))
        path = own_cgroup(_read("/proc/self/cgroup"))
    except OSError as exc:
        return None, describe_oserror("cannot read /proc/self", exc), V1_FIX
    if mount is None or path is None:
        return None, "no cgroup v2 hierarchy is mounted (a cgroup v1 host)", V1_FIX
    own = cgroup_dir(mount, path)
    if os.path.basename(own) == LEAF:
        own = os.path.dirname(own)  # evacuated by an earlier run: the delegated cgroup is above
    log(f"cgroup: own cgroup {own} (cgroup2 at {mount[0]})")
    available = _controllers(own)
    if mount[0] != "/sys/fs/cgroup":
        # The hybrid layout: cgroup2 beside the v1 hierarchies (at /sys/fs/cgroup/unified).
        on_v2 = _controllers(mount[0])
        missing = set(needed) - on_v2
        if missing:
            return None, ("{which} not on cgroup v2 here: a cgroup v1/v2 hybrid host"
                          f" (cgroup2 at {mount[0]} has {' '.join(sorted(on_v2)) or 'no controllers'});"
                          " cgroup v1 cannot be delegated to a user"), V1_FIX
    writable = _writable(own)
    if writable and set(needed) <= available:
        return Where(own, "current", mount, available), "", ""
    from rootless.cgroups import systemd

    manager = systemd.user_manager_cgroup(mount, uid)
    if manager is not None and systemd.reachable():
        offered = _controllers(manager)
        if set(needed) <= offered:
            return Where(None, "systemd", mount, offered), "", ""
        return Where(None, "systemd", mount, offered), (
            "{which} not delegated to your systemd user manager"
            f" (cgroup.controllers of {manager}: {' '.join(sorted(offered)) or 'none'})"
        ), SYSTEMD_FIX
    if not writable:
        return None, (f"your cgroup {path} is not delegated to you (its cgroup.procs and"
                      " cgroup.subtree_control are not writable) and no systemd user manager"
                      " is reachable"), SYSTEMD_FIX
    return Where(own, "current", mount, available), (
        "{which} not delegated to your cgroup " + path +
        f" (cgroup.controllers: {' '.join(sorted(available)) or 'none'})"), SYSTEMD_FIX


def _names(controllers: set[str]) -> str:
    """{'memory', 'pids'} -> 'the memory and pids controllers are'."""
    names = sorted(c for c in controllers if c)
    if not names:
        return "a delegated cgroup is"
    if len(names) == 1:
        return f"the {names[0]} controller is"
    return f"the {', '.join(names[:-1])} and {names[-1]} controllers are"


def _reason(template: str, writes: list[Write]) -> str:
    return template.replace("{which}", _names({w.controller or "" for w in writes}))


def _controllers(directory: str) -> set[str]:
    """The controllers offered to `directory`; none when it is not there (ENOENT: our cgroup
    is not visible in this cgroup2 mount, e.g. from inside a cgroup namespace)."""
    try:
        return set(_read(directory + "/cgroup.controllers").split())
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise CgroupError(describe_oserror(f"cannot read {directory}/cgroup.controllers",
                                           exc)) from None


def prepare_cgroup(spec: Any, cid: str, log: Any, name: str | None = None,
                   labels: dict[str, str] | None = None) -> ContainerCgroup | None:
    """Decide where the container's cgroup goes and which limits it gets; create nothing.

    Raises CgroupError (exit 125) for a limit that cannot be applied, naming the limit, the
    reason and the fix; with --cgroups=best-effort prints one warning per dropped limit.
    An OCI bundle gives its cgroup's `name` (from linux.cgroupsPath) and `labels`: how each
    limit is named in its messages (linux.resources.memory.limit rather than --memory)."""
    writes = plan_writes(spec.limits)
    for w in writes:
        w.flag = (labels or {}).get(w.flag, w.flag)
    if not writes:
        return None
    where, reason, fix = locate(log, needed_controllers(writes), os.getuid())
    if reason:
        usable = where.controllers if where is not None else set()
        dropped = [w for w in writes if where is None or (
            w.controller is not None and w.controller not in usable)]
        if spec.cgroups != "best-effort":
            labels = ", ".join(w.label() for w in dropped)
            raise CgroupError(f"cannot apply {labels}: {_reason(reason, dropped)}", hint=fix)
        for w in dropped:
            sys.stderr.write(f"rl: warning: {w.label()} not applied: {_reason(reason, [w])}\n")
        writes = [w for w in writes if w not in dropped]
        if not writes or where is None:
            return None
    assert where is not None
    cg = ContainerCgroup(where, name or f"rl-{cid[:12]}-{os.getpid()}", writes, cid, spec.cgroups,
                         log)
    if where.base is not None and name is None:
        remove_stale(where.base, log)
    return cg


def remove_stale(base: str, log: Any) -> None:
    """Remove empty container cgroups whose launcher is gone (it was SIGKILLed, so its
    `remove()` never ran; the container's processes died with it by PDEATHSIG)."""
    # Best effort: a sweep that fails must not stop the run, so errors become log lines.
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return  # ENOENT: the delegated cgroup (a systemd scope) is gone already
    except OSError as exc:
        log(describe_oserror(f"cgroup: cannot list {base} for stale cgroups", exc))
        return
    for name in names:
        owner = stale_owner(name)
        if owner is None or owner == os.getpid() or _alive(owner):
            continue
        path = f"{base}/{name}"
        try:
            if parse_keyed(_read(path + "/cgroup.events")).get("populated", 1):
                continue
            os.rmdir(path)
            log(f"cgroup: removed stale {path}")
        except OSError as exc:
            # ENOENT: another rl swept it first. EBUSY: a process or a child cgroup (the
            # container may make its own below its cgroup namespace) arrived meanwhile.
            if exc.errno not in (errno.ENOENT, errno.EBUSY):
                log(describe_oserror(f"cgroup: cannot remove stale {path}", exc))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ContainerCgroup:
    """One container's cgroup: created before PID 1, read after exit, removed at clean-up."""

    def __init__(self, where: Where, name: str, writes: list[Write], cid: str, mode: str,
                 log: Any) -> None:
        self.where = where
        self.name = name
        self.writes = writes
        self.cid = cid
        self.mode = mode
        self.log = log
        self.path: str | None = None
        self.oom_base = 0
        self.scope: Any = None

    def create_and_attach(self, helper_pid: int) -> None:
        """mkdir, write the limits, move the helper in. On failure nothing is left behind."""
        if self.where.base is None:
            from rootless.cgroups import systemd

            assert self.where.mount is not None
            self.scope = systemd.start_scope(self.where.mount, f"rl-{self.cid[:12]}", helper_pid,
                                             self.log)
            self.where.base = self.scope.path
        base = self.where.base
        enable_controllers(base, needed_controllers(self.writes), self.log)
        path = f"{base}/{self.name}"
        try:
            os.mkdir(path)
        except OSError as exc:
            raise CgroupError(describe_oserror(f"cannot create the cgroup {path}", exc)) from None
        self.path = path
        try:
            for w in self.writes:
                self._apply(w)
            try:
                _write(path + "/cgroup.procs", str(helper_pid))
            except OSError as exc:
                raise CgroupError(describe_oserror(
                    f"cannot move the container into {path}", exc)) from None
        except BaseException:
            self.remove()
            raise
        self.oom_base = self._oom_kills()

    def _apply(self, w: Write) -> None:
        assert self.path is not None
        target = f"{self.path}/{w.file}"
        if w.file == "io.weight" and not os.path.exists(target):
            # Without the io.cost model the weight is BFQ's (what crun does too).
            target = f"{self.path}/io.bfq.weight"
        try:
            _write(target, w.value)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                reason = f"this kernel has no cgroup file {w.file}"
            else:
                reason = describe_oserror(f"writing {w.value!r} to {w.file}", exc)
            if self.mode == "best-effort" and exc.errno in (errno.ENOENT, errno.EACCES,
                                                            errno.EPERM, errno.EOPNOTSUPP):
                sys.stderr.write(f"rl: warning: {w.label()} not applied: {reason}\n")
                return
            raise CgroupError(f"cannot apply {w.label()}: {reason}",
                              hint="check the value; cgroup v2 files are described in"
                              " https://docs.kernel.org/admin-guide/cgroup-v2.html") from None

    def describe(self) -> str:
        where = self.path or f"{self.where.base or 'a systemd scope'}/{self.name}"
        return f"{where}: " + ", ".join(w.describe() for w in self.writes)

    def oom_killed(self) -> bool:
        return self.path is not None and self._oom_kills() > self.oom_base

    def _oom_kills(self) -> int:
        """memory.events' oom_kill; 0 without the memory controller (the file exists only when
        it is enabled for this cgroup: ENOENT). Other errnos are logged: a kill would go
        unreported, which must not fail the run."""
        events = f"{self.path}/memory.events"
        try:
            return parse_keyed(_read(events)).get("oom_kill", 0)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            self.log(describe_oserror(f"cgroup: cannot read {events}", exc)
                     + "; an OOM kill would not be reported")
            return 0

    def memory_limit_text(self) -> str:
        for w in self.writes:
            if w.file == "memory.max" and w.value.isdigit():
                return f"memory limit {format_size(int(w.value))}"
        return "memory limit"

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove it; safe to call twice."""
        path, self.path = self.path, None
        if path is not None:
            remove_cgroup(path, self.log)
        if self.scope is not None:
            self.scope.release()
            self.scope = None


def enable_controllers(base: str, needed: list[str], log: Any) -> None:
    """Make `needed` available to `base`'s children; `base` keeps no processes of its own.

    Evacuating first, not on EBUSY: threaded controllers (pids, cpu) may be enabled beside
    processes, but that makes `base` a thread root, below which a new domain child refuses
    processes with EOPNOTSUPP."""
    if _read_file(base + "/cgroup.procs").split():
        evacuate(base, log)
    enabled = set(_read_file(base + "/cgroup.subtree_control").split())
    missing = [c for c in needed if c not in enabled]
    if not missing:
        return
    request = " ".join("+" + c for c in missing)
    for attempt in range(3):
        try:
            _write(base + "/cgroup.subtree_control", request)
            log(f"cgroup: enabled {request} in {base}")
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 2:
                raise CgroupError(describe_oserror(
                    f"cannot enable {request} in {base}/cgroup.subtree_control", exc),
                    hint="the cgroup must be delegated to you; " + SYSTEMD_FIX) from None
        # EBUSY: a process arrived in `base` meanwhile (no-internal-processes rule).
        evacuate(base, log)


def evacuate(base: str, log: Any) -> None:
    """Move every process of `base` (rl itself, the shell or test runner that started it) into
    the leaf `base/rl-leaf`."""
    leaf = f"{base}/{LEAF}"
    try:
        os.mkdir(leaf)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CgroupError(describe_oserror(f"cannot create {leaf}", exc)) from None
    moved = 0
    for _ in range(10):  # processes may fork while we move them
        pids = _read_file(base + "/cgroup.procs").split()
        if not pids:
            break
        for pid in pids:
            try:
                _write(leaf + "/cgroup.procs", pid)
                moved += 1
            except OSError as exc:
                if exc.errno != errno.ESRCH:  # already gone is fine
                    raise CgroupError(describe_oserror(
                        f"cannot move process {pid} from {base} to {leaf}", exc)) from None
    log(f"cgroup: moved {moved} processes from {base} to {leaf}")


def remove_cgroup(path: str, log: Any) -> None:
    """Remove a container cgroup; if processes remain, cgroup.kill (Linux 5.14) or SIGKILL to
    each, then rmdir once it is empty (rmdir fails with EBUSY while it is populated)."""
    try:
        os.rmdir(path)  # the usual case: the container has ended and its cgroup is empty
        log(f"cgroup: removed {path}")
        return
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            log(describe_oserror(f"cgroup: cannot remove {path}", exc))
            return
    import time

    try:
        _write(path + "/cgroup.kill", "1")
    except OSError as exc:
        if exc.errno != errno.ENOENT:  # ENOENT: Linux < 5.14 has no cgroup.kill
            log(describe_oserror(f"cgroup: cannot write {path}/cgroup.kill", exc))
        _kill_each(path, log)
    delay = 0.001
    deadline = time.monotonic() + 5
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
        try:
            os.rmdir(path)
            log(f"cgroup: removed {path} (after killing what was left)")
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log(describe_oserror(f"cgroup: cannot remove {path}", exc))
                return


def _kill_each(path: str, log: Any) -> None:
    """SIGKILL every process of the cgroup at `path` (clean-up: errors are logged)."""
    try:
        pids = read_or_empty(path + "/cgroup.procs").split()  # ENOENT: the cgroup is gone
    except OSError as exc:
        log(describe_oserror(f"cgroup: cannot read {path}/cgroup.procs", exc))
        return
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except ProcessLookupError:
            continue  # ESRCH: it exited after cgroup.procs was read
        except OSError as exc:
            log(describe_oserror(f"cgroup: cannot kill process {pid} of {path}", exc))


def _read_file(path: str) -> str:
    """A cgroup file rl needs to go on: any error is a CgroupError naming it."""
    try:
        return _read(path)
    except OSError as exc:
        raise CgroupError(describe_oserror(f"cannot read {path}", exc)) from None


__all__ = ["prepare_cgroup", "ContainerCgroup", "remove_stale", "CgroupError"]
