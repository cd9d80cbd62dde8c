"""The creation record, name claims against it, unlink-on-release locks and the sweep of what
dead runs leave — deterministic, without privileges: a child process plays the `rl run` that
holds (or, once killed, no longer holds) the lock of a container's runtime directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rootless.errors import UsageError
from rootless.paths import Paths
from rootless.runtime import state as st
from rootless.runtime import sweep

CID_A, CID_B = "a" * 64, "b" * 64


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    p.containers.mkdir(parents=True)
    return p


def creator(paths: Paths, cid: str) -> subprocess.Popen:
    """A process that made cid's runtime record and holds its lock until killed."""
    code = (
        "import sys, time\n"
        "from rootless.paths import Paths\n"
        "from rootless.runtime import state\n"
        f"p = Paths({str(paths.data)!r}, {str(paths.runtime)!r}, '/nonexistent')\n"
        f"fd = state.create_record(p, {cid!r})\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_the_record_appears_whole_with_its_lock_held_and_frees_with_its_creator(paths):
    proc = creator(paths, CID_A)
    rdir = Path(st.runtime_dir(paths, CID_A))
    assert json.loads((rdir / "state.json").read_text())["status"] == "created"
    assert not list(paths.runtime.glob(".new-*"))
    assert st.creator_alive(paths, CID_A)
    assert st.creator_alive(paths, CID_A)  # probing never takes it away
    kill(proc)
    assert not st.creator_alive(paths, CID_A)
    assert not st.creator_alive(paths, CID_B)  # no record at all


def test_a_name_whose_owner_is_still_being_created_is_not_taken(paths):
    """Item 1's cause: the link existed, its config did not yet, and the claim was judged
    stale. Now the creator's lock decides."""
    proc = creator(paths, CID_A)
    try:
        st.reserve_name(paths, "web", CID_A)
        with pytest.raises(UsageError, match="already in use"):
            st.reserve_name(paths, "web", CID_B)
    finally:
        kill(proc)
    # Its creator died before writing the config: the claim is stale now.
    st.reserve_name(paths, "web", CID_B)
    assert st.lookup_name(paths, "web") == CID_B


def test_a_dead_rm_container_gives_its_name_to_the_next_run(paths):
    """Item 5, seen by `rl run`: config written, start never recorded, creator gone."""
    proc = creator(paths, CID_A)
    (paths.containers / CID_A).mkdir()
    (paths.containers / CID_A / "config.json").write_text(json.dumps(
        {"id": CID_A, "name": "job", "boot_id": st.boot_id(), "spec": {"remove": True}}))
    st.reserve_name(paths, "job", CID_A)
    c = st.load(paths, CID_A)
    assert c is not None and c.status == "created" and not c.stale
    kill(proc)
    c = st.load(paths, CID_A)
    assert c is not None and c.status == "created" and c.stale
    st.reserve_name(paths, "job", CID_B)
    assert st.lookup_name(paths, "job") == CID_B
    assert not (paths.containers / CID_A).exists()
    assert not Path(st.runtime_dir(paths, CID_A)).exists()


def test_a_dead_plain_container_stays_created_and_keeps_its_name(paths):
    proc = creator(paths, CID_A)
    (paths.containers / CID_A).mkdir()
    (paths.containers / CID_A / "config.json").write_text(json.dumps(
        {"id": CID_A, "name": "keep", "boot_id": st.boot_id(), "spec": {}}))
    st.reserve_name(paths, "keep", CID_A)
    kill(proc)
    left = sweep.remove_dead_rm_containers(paths, st.list_containers(paths))
    assert [c.cid for c in left] == [CID_A]
    assert st.load(paths, CID_A).status == "created"  # type: ignore[union-attr]
    assert not st.load(paths, CID_A).stale  # type: ignore[union-attr]  (repaired)
    with pytest.raises(UsageError, match="already in use"):
        st.reserve_name(paths, "keep", CID_B)


def test_sweep_removes_orphans_and_spares_what_is_being_created(paths):
    alive = creator(paths, CID_A)
    dead = creator(paths, CID_B)
    try:
        for cid in (CID_A, CID_B):
            (paths.containers / cid / "upper").mkdir(parents=True)
            (paths.containers / cid / "config.json.tmp").write_text("{")
        st.reserve_name(paths, "alive", CID_A)
        st.reserve_name(paths, "dead", CID_B)
        kill(dead)
        gone = "c" * 64
        (paths.runtime / f".new-{gone}").mkdir()  # killed while making its record
        old = time.time() - 60
        os.utime(paths.runtime / f".new-{gone}", (old, old))
        # Between its mkdir and its flock a live creator's directory is unlocked too: a fresh
        # one is left alone (the race a sweep lost to 50 runs in a row).
        fresh = "d" * 64
        (paths.runtime / f".new-{fresh}").mkdir()
        (paths.runtime / "seccomp").mkdir()  # not a container's: untouched
        st.reserve_name(paths, "ghost", "e" * 64)  # a name whose container never existed
        (paths.containers / f".removing-{'f' * 64}" / "x").mkdir(parents=True)
        sweep.sweep(paths)
        assert sorted(p.name for p in paths.containers.iterdir()) == [CID_A]
        assert sorted(p.name for p in paths.runtime.iterdir() if len(p.name) > 8) == \
            sorted([CID_A, f".new-{fresh}"])
        (paths.runtime / f".new-{fresh}").rmdir()
        assert sorted(os.listdir(st.names_dir(paths))) == ["alive"]
        assert (paths.runtime / "seccomp").exists()
    finally:
        kill(alive)
    sweep.sweep(paths)
    assert list(paths.containers.iterdir()) == []
    assert os.listdir(st.names_dir(paths)) == []


def test_locks_leave_no_files_and_still_exclude(paths):
    """Item 10: the lock file is removed on release; a waiter that wakes on a removed file
    starts again, so two holders never overlap."""
    inside = []
    overlaps = []

    def worker() -> None:
        for _ in range(50):
            with st.container_lock(paths, CID_A):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.0002)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert os.listdir(paths.runtime / "locks") == []
    st.reserve_name(paths, "n", CID_A)
    st.release_name(paths, "n", CID_A)
    assert os.listdir(paths.runtime / "locks") == []


def test_the_records_descriptor_stays_above_the_preserved_ones(paths):
    """--preserve-fds N hands descriptors 3..N+2 to the container: rl's own must not be there
    (the lock would reach the container, or hide that a preserved descriptor is not open)."""
    fd = st.create_record(paths, CID_A, 3 + 5)
    try:
        assert fd >= 8
    finally:
        os.close(fd)
