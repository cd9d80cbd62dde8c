"""What rl does to a container through its recorded state: find, stop, kill, start, rename,
remove, wait, repair, prune. `rl stop/kill/rm/start/restart/rename/wait` and `container prune`
call these (rootless.cli keeps only their arguments and output), and so will rl-oci's
kill/delete. Errors are raised as RlError; the caller prints them.
"""

from __future__ import annotations

import os
import re

from rootless.errors import RlError, StateError
from rootless.paths import Paths
from rootless.runtime import state as st
from rootless.runtime.state import Container

# typing is imported for annotations only: `rl ps` (a CI runner polls it) imports this module.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STOP_WAIT_AFTER_KILL = 10.0


# -- finding containers ----------------------------------------------------------------------

def resolve(paths: Paths, ref: str, exit_code: int = 125) -> Container:
    """A full id, a name, or an unambiguous id prefix (podman's lookup order)."""
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
        except OSError:
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
    except OSError:
        return True
    try:
        if not st.alive(pid, started):  # the pid was reused before pidfd_open
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def signal_pid1(c: Container, sig: int) -> None:
    """Signal the container's PID 1 through a pidfd opened after checking its start time,
    so a recycled pid can never receive it."""
    from rootless.kernel import libc

    pid, started = c.state.get("pid"), c.state.get("pid_start")
    if not st.alive(pid, started):
        return
    try:
        fd = libc().pidfd_open(int(pid))  # type: ignore[arg-type]
    except OSError:
        return
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
    except OSError:
        pass


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
        except OSError:
            pass
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
        remove_storage(paths, c)
        st.remove_runtime(paths, c.cid)
        st.release_name(paths, c.name or None, c.cid)


def remove_storage(paths: Paths, c: Container) -> None:
    """Rename the storage out of the listing first (atomic: the container is gone for every
    reader at once), then delete it; files of subordinate ids are deleted as root of a user
    namespace with the container's own mapping."""
    src = f"{paths.containers}/{c.cid}"
    doomed = f"{paths.containers}/.removing-{c.cid}"
    try:
        os.rename(src, doomed)
    except FileNotFoundError:
        return
    _delete_tree(doomed, c.config)


def _delete_tree(path: str, config: dict[str, Any]) -> None:
    import shutil

    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass
    except FileNotFoundError:
        return
    from rootless.primitives.userns import default_mapping, run_in_userns
    from rootless.runtime.storage import remove_tree_as_root

    spec = config.get("spec") or {}
    mapping, helpers = default_mapping(spec.get("userns") or "", spec.get("uidmaps") or [],
                                       spec.get("gidmaps") or [])
    run_in_userns(lambda: remove_tree_as_root(path), mapping=mapping, helpers=helpers,
                  name="rl:[rm]")


def clean_leftovers(paths: Paths) -> None:
    """Storage of removals that were interrupted (.removing-*)."""
    try:
        names = os.listdir(paths.containers)
    except OSError:
        return
    for name in names:
        if name.startswith(".removing-"):
            try:
                _delete_tree(f"{paths.containers}/{name}", {})
            except RlError:
                pass


# -- waiting for the exit, tidying ---------------------------------------------------------------

def wait_exit(paths: Paths, c: Container) -> int | None:
    while True:
        c = refresh(paths, c)
        if not c.running:
            return c.exit_code
        wait_for_process(c.state.get("owner"), c.state.get("owner_start"), None)


def repair_all(paths: Paths, containers: list[Container]) -> list[Container]:
    """Stale records become "exited"; --rm containers whose owner died are removed, as
    their owner would have done."""
    out = []
    for c in containers:
        if c.stale:
            st.repair(paths, c)
            if (c.config.get("spec") or {}).get("remove"):
                try:
                    remove_container(paths, c, force=True)
                    continue
                except RlError:
                    pass
        out.append(c)
    return out


def prune_containers(paths: Paths) -> list[str]:
    removed = []
    for c in repair_all(paths, st.list_containers(paths)):
        if c.running:
            continue
        try:
            remove_container(paths, c, force=False)
            removed.append(c.cid)
        except RlError:
            continue  # started meanwhile
    clean_leftovers(paths)
    return removed
