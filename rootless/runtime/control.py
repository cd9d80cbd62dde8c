"""What rl does to a container through its recorded state: find, stop, kill, start, rename,
remove, wait, repair, prune. `rl stop/kill/rm/start/restart/rename/wait` and `container prune`
call these (rootless.cli keeps only their arguments and output), and so will rl-oci's
kill/delete. Errors are raised as RlError; the caller prints them.
"""

from __future__ import annotations

import os

from rootless.errors import RlError, StateError
from rootless.paths import Paths
from rootless.runtime import state as st
from rootless.runtime.state import Container

STOP_WAIT_AFTER_KILL = 10.0


# -- finding containers ----------------------------------------------------------------------

def resolve(paths: Paths, ref: str, exit_code: int = 125) -> Container:
    """A full id, a name, or an unambiguous id prefix (podman's lookup order)."""
    import re  # ~1.5 ms: only name lookups need it, not rl-oci's kill/delete

    boot = st.boot_id()
    if re.fullmatch(r"[0-9a-f]{64}", ref):
        c = st.load(paths, ref, boot)
        if c is not None:
            return c
    cid = st.lookup_name(paths, ref)
    if cid:
        c = st.load(paths, cid, boot)
        if c is not None:
            return c
    if re.fullmatch(r"[0-9a-f]{1,63}", ref):
        try:
            matches = [n for n in os.listdir(paths.containers) if n.startswith(ref)]
        except FileNotFoundError:  # no container was ever made
            matches = []
        found = [c for c in (st.load(paths, m, boot) for m in matches) if c is not None]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StateError(f'more than one result for container ID "{ref}": container already '
                             "exists", exit_code=exit_code)
    raise StateError(f'no container with name or ID "{ref}" found: no such container',
                     exit_code=exit_code)


def refresh(paths: Paths, c: Container) -> Container:
    """The container's record as it is now on disk (c itself when it is gone)."""
    return st.load(paths, c.cid) or c


# -- waiting and signalling ------------------------------------------------------------------

def wait_for_process(pid: int | None, started: int | None, timeout: float | None) -> bool:
    """True once the process is gone (or was never that process); False on timeout. A pidfd
    turns readable when its process exits (pidfd_open(2))."""
    import select

    from rootless.kernel import libc

    if not st.alive(pid, started):
        return True
    assert pid is not None
    try:
        fd = libc().pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone between the check and the open
    try:
        if not st.alive(pid, started):  # the pid was reused before pidfd_open
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def signal_pid1(c: Container, sig: int) -> None:
    signal_process(c.state.get("pid"), c.state.get("pid_start"), sig)


def signal_process(pid: int | None, started: int | None, sig: int) -> None:
    """Signal a container's process through a pidfd opened after checking its start time,
    so a recycled pid can never receive it (rl's PID 1, rl-oci's container process)."""
    from rootless.kernel import libc

    if not st.alive(pid, started):
        return
    try:
        fd = libc().pidfd_open(int(pid))  # type: ignore[arg-type]
    except ProcessLookupError:
        return  # gone between the check and the open
    try:
        if st.alive(pid, started):
            libc().pidfd_send_signal(fd, sig)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def kill_container(c: Container, sig: int) -> None:
    """Send sig to the container's PID 1 (podman refuses a container that is not running)."""
    if not c.running:
        raise StateError(f"can only kill running containers. {c.cid} is in state "
                         f"{c.status}: container state improper")
    signal_pid1(c, sig)


# -- stopping, starting, renaming, removing ----------------------------------------------------

def _mark_stopping(paths: Paths, c: Container) -> None:
    """Tell the monitor not to apply the restart policy: the user stopped the container."""
    from rootless.runtime.monitor import STOP_MARKER

    try:
        with open(f"{st.runtime_dir(paths, c.cid)}/{STOP_MARKER}", "w"):
            pass
    except FileNotFoundError:
        pass  # no runtime directory: it never ran in this boot, nothing to restart


def stop_container(paths: Paths, c: Container, timeout: float | None) -> None:
    """The stop signal (the image's StopSignal, --stop-signal, or SIGTERM), SIGKILL after the
    timeout, then wait for the owner to record the exit."""
    from rootless.runtime.proc import parse_signal

    if not c.running:
        return
    if timeout is None:
        timeout = float((c.config.get("spec") or {}).get("stop_timeout") or 10)
    owner, owner_start = c.state.get("owner"), c.state.get("owner_start")
    _mark_stopping(paths, c)
    try:
        sig = parse_signal(c.config.get("stop_signal") or "SIGTERM")
    except ValueError:
        sig = 15
    signal_pid1(c, sig)
    if not wait_for_process(owner, owner_start, timeout):
        signal_pid1(c, 9)
        _wait_owner_or_kill(owner, owner_start)


def _wait_owner_or_kill(owner: int | None, owner_start: int | None) -> None:
    if not wait_for_process(owner, owner_start, STOP_WAIT_AFTER_KILL) and owner:
        # The owner is stuck: kill it; its helper and PID 1 die with it (PDEATHSIG) and the
        # state reads "exited, status unknown".
        try:
            os.kill(owner, 9)
        except ProcessLookupError:
            pass  # it ended after all
        wait_for_process(owner, owner_start, STOP_WAIT_AFTER_KILL)


def start_container(paths: Paths, c: Container) -> None:
    """Start a stopped container again (under its lock: a concurrent start is a no-op)."""
    from rootless.runtime.detach import start_existing

    with st.container_lock(paths, c.cid):
        c = refresh(paths, c)
        if not c.running:
            start_existing(paths, c.cid, c.config)


def rename_container(paths: Paths, c: Container, new: str) -> None:
    """Give the container the name `new` (already checked by the caller); the old is freed."""
    with st.container_lock(paths, c.cid):
        c = refresh(paths, c)
        if c.name == new:
            return
        st.reserve_name(paths, new, c.cid)
        cfg = dict(c.config, name=new)
        st.write_json(f"{paths.containers}/{c.cid}/config.json", cfg)
        st.release_name(paths, c.name or None, c.cid)


def remove_container(paths: Paths, c: Container, force: bool) -> None:
    from rootless.runtime.sweep import remove_files

    with st.container_lock(paths, c.cid):
        c = refresh(paths, c)
        if c.running:
            if not force:
                raise StateError(
                    f"cannot remove container {c.cid} as it is running - running or paused "
                    "containers cannot be removed without force: container state improper",
                    hint=f"stop it first or use 'rl rm -f {c.name or c.cid[:12]}'", exit_code=2)
            _mark_stopping(paths, c)
            signal_pid1(c, 9)
            _wait_owner_or_kill(c.state.get("owner"), c.state.get("owner_start"))
        elif c.stale:
            st.repair(paths, c)
        remove_files(paths, c)


def clean_leftovers(paths: Paths) -> None:
    """What dead runs and interrupted removals left behind (rootless.runtime.sweep)."""
    from rootless.runtime.sweep import sweep

    sweep(paths)


# -- waiting for the exit, tidying ---------------------------------------------------------------

def wait_exit(paths: Paths, c: Container) -> int | None:
    while True:
        c = refresh(paths, c)
        if not c.running:
            return c.exit_code
        wait_for_process(c.state.get("owner"), c.state.get("owner_start"), None)


def listing(paths: Paths, full: bool = True) -> list[Container]:
    """Every container, after the clean-up any reader does: dead `--rm` containers are
    removed, stale records repaired, and what dead runs left behind is swept
    (rootless.runtime.sweep; `full=False`: not the names, for `rl ps`)."""
    from rootless.runtime.sweep import remove_dead_rm_containers, sweep

    containers = st.list_containers(paths)
    sweep(paths, {c.cid for c in containers}, names=full)
    return remove_dead_rm_containers(paths, containers)


def prune_containers(paths: Paths) -> list[str]:
    removed = []
    for c in listing(paths):
        if c.running or (st.in_creation(c.state) and not c.stale):
            continue  # running, or being created by a live `rl run`
        try:
            remove_container(paths, c, force=False)
            removed.append(c.cid)
        except RlError:
            continue  # started meanwhile
    return removed
