"""What dead rl processes leave behind, found and removed by the next rl that looks: `rl ps`,
`rl rm`, `rl container prune` and `rl system prune`, and `rl run` when the name it wants is
held by a `--rm` container whose owner died.

A SIGKILL can stop `rl run` between any two steps of its start-up (rootless.runtime.state
describes the order). What it leaves is one of:

    containers/<id>/ with config.json       a container: listed, removed by rm and prune;
                                            a dead `--rm` one is removed by the next `rl ps`
    containers/<id>/ without config.json    storage of a run that died before its config;
                                            an orphan once its creator's lock is free
    containers/.removing-<id>/              an interrupted removal
    runtime <id>/ without storage           an interrupted removal, or a run that died
                                            before making its storage; orphan when unlocked
    runtime .new-<id>/                      a run that died while making its runtime dir
    names/<name> -> <id> with no container  a claim whose container is gone

Nothing is removed while a process that could still use it is alive: the creator's lock
(rootless.runtime.state.creator_alive) or the owner's pid and start time say so.
"""

from __future__ import annotations

import os
import re

from rootless.errors import RlError
from rootless.runtime import state as st

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rootless.runtime.state import Container

CID = re.compile(r"[0-9a-f]{64}")


def remove_dead(paths: Any, c: Container) -> bool:
    """Remove a container nobody runs or creates (storage, runtime record, name), under its
    lock; False when it turned out to be running or owned again."""
    st.repair(paths, c)  # a dead owner's leftovers are killed and the record says so
    with st.container_lock(paths, c.cid):
        now = st.load(paths, c.cid)
        if now is None:
            return True  # removed meanwhile
        if now.running or (st.in_creation(now.state) and not now.stale):
            return False
        remove_files(paths, now)
    return True


def remove_files(paths: Any, c: Container) -> None:
    """The removal itself (the caller holds the container's lock and knows it is not running)."""
    remove_storage(paths, c.cid, c.config)
    st.remove_runtime(paths, c.cid)
    st.release_name(paths, c.name or None, c.cid)


def remove_storage(paths: Any, cid: str, config: dict[str, Any]) -> None:
    """Rename the storage out of the listing first (atomic: the container is gone for every
    reader at once), then delete it; files of subordinate ids are deleted as root of a user
    namespace with the container's own mapping."""
    src = f"{paths.containers_dir}/{cid}"
    doomed = f"{paths.containers_dir}/.removing-{cid}"
    try:
        os.rename(src, doomed)
    except FileNotFoundError:
        return
    delete_tree(doomed, config)


def delete_tree(path: str, config: dict[str, Any]) -> None:
    import shutil

    try:
        shutil.rmtree(path)
        return
    except PermissionError:
        pass  # files of subordinate ids (or overlay's mode-000 work/work): below
    except FileNotFoundError:
        return
    from rootless.primitives.userns import default_mapping, run_in_userns
    from rootless.runtime.storage import remove_tree_as_root

    spec = config.get("spec") or {}
    mapping, helpers = default_mapping(spec.get("userns") or "", spec.get("uidmaps") or [],
                                       spec.get("gidmaps") or [])
    run_in_userns(lambda: remove_tree_as_root(path), mapping=mapping, helpers=helpers,
                  name="rl:[rm]")


def remove_dead_rm_containers(paths: Any, containers: list[Container]) -> list[Container]:
    """Stale records become "exited" (or plain "created"); `--rm` containers whose owner or
    creator died are removed, as their owner would have done. Returns the rest."""
    out = []
    for c in containers:
        if c.stale:
            if (c.config.get("spec") or {}).get("remove"):
                try:
                    if remove_dead(paths, c):
                        continue
                except RlError as exc:
                    # Its files stay; the container stays listed for `rl rm`.
                    _warn(c.cid[:12], exc.message)
            else:
                st.repair(paths, c)
        out.append(c)
    return out


def sweep(paths: Any, known: set[str] | None = None, names: bool = True) -> None:
    """Remove what no container owns (the table above). `known`: ids the caller already found
    with a config.json (saves re-reading them). `names=False` (for `rl ps`, which a CI runner
    polls) leaves dangling names and helpers' files to rm and prune: they hide nothing, and a
    claim takes a dangling name over anyway. A leftover that cannot be removed is named on
    stderr and kept for the next sweep: it must not stop the command that found it."""
    known = known or set()
    for name in _listdir(paths.containers_dir):
        if name.startswith(".removing-"):
            _try(name, delete_tree, f"{paths.containers_dir}/{name}", {})
        elif CID.fullmatch(name) and name not in known:
            _try(name, _sweep_storage, paths, name)
    for name in _listdir(paths.runtime_dir):
        if name.startswith(".new-") and CID.fullmatch(name[5:]):
            if not st.creator_alive(paths, name[5:], name) and \
                    _older_than(f"{paths.runtime_dir}/{name}", NEW_DIR_GRACE):
                _try(name, st.remove_runtime, paths, name[5:], name)
        elif CID.fullmatch(name) and name not in known:
            _try(name, _sweep_runtime, paths, name)
    if not names:
        return
    for name in _listdir(st.names_dir(paths)):
        cid = st.lookup_name(paths, name)
        if cid is not None and cid not in known:
            _try(f"names/{name}", _sweep_name, paths, name, cid)
    # The pid and log files of network helpers whose rl was killed.
    from rootless.network.spawn import sweep_stale

    sweep_stale(f"{paths.runtime_dir}/net")


# A `.new-<id>` directory exists unlocked for the instant between its mkdir and its creator's
# flock (state.create_record): a sweep must not take it then. A creator that was killed in that
# instant leaves it unlocked for good; one still alive has taken the lock long before this.
NEW_DIR_GRACE = 10.0


def _older_than(path: str, seconds: float) -> bool:
    import time

    try:
        return time.time() - os.stat(path).st_mtime > seconds
    except FileNotFoundError:  # ENOENT: its creator renamed it into place, or removed it
        return False


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _try(what: str, fn: Any, *args: Any) -> None:
    from rootless.errors import describe_oserror

    try:
        fn(*args)
    except RlError as exc:
        _warn(what, exc.message)
    except OSError as exc:
        _warn(what, describe_oserror(f"removing {exc.filename or what}", exc))


def _warn(what: str, why: str) -> None:
    import sys

    sys.stderr.write(f"rl: leaving {what} for later: {why}\n")


def _orphan(paths: Any, cid: str) -> bool:
    """No config.json and no live creator or owner."""
    if os.path.exists(f"{paths.containers_dir}/{cid}/config.json"):
        return False
    if st.creator_alive(paths, cid):
        return False
    state = st.read_json(st.state_file(paths, cid)) or {}
    # A `--rm` run's helper removes the storage before its owner removes the record.
    return not (state.get("status") == "running"
                and st.alive(state.get("owner"), state.get("owner_start")))


def _sweep_storage(paths: Any, cid: str) -> None:
    with st.container_lock(paths, cid):
        if _orphan(paths, cid):
            remove_storage(paths, cid, {})
            st.remove_runtime(paths, cid)


def _sweep_runtime(paths: Any, cid: str) -> None:
    if os.path.exists(f"{paths.containers_dir}/{cid}"):
        return  # a container (or storage the first pass judged)
    with st.container_lock(paths, cid):
        if not os.path.exists(f"{paths.containers_dir}/{cid}") and _orphan(paths, cid):
            st.remove_runtime(paths, cid)


def _sweep_name(paths: Any, name: str, cid: str) -> None:
    if os.path.isdir(f"{paths.containers_dir}/{cid}") or st.creator_alive(paths, cid):
        return  # a container, or one being created (its storage may come later)
    st.release_name(paths, name, cid)
