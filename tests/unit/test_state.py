"""Container state without privileges: name claims, liveness by start time, the status a
record implies, stale-state repair."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from rootless.errors import UsageError
from rootless.paths import Paths
from rootless.runtime import state as st


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    (p.containers).mkdir(parents=True)
    return p


def make_container(paths: Paths, cid: str, **config) -> None:
    d = paths.containers / cid
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"id": cid, "boot_id": st.boot_id(), **config}))


def test_start_time_is_field_22_and_rules_out_other_processes():
    mine = st.start_time(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert st.alive(os.getpid(), mine)
    assert not st.alive(os.getpid(), mine + 1)  # same pid, another start: a reused pid
    p = subprocess.Popen(["true"])
    p.wait()
    assert st.start_time(p.pid) is None and not st.alive(p.pid, None)


def test_start_time_survives_parentheses_in_the_command_name(tmp_path):
    script = tmp_path / "a) b ("
    script.write_text("#!/bin/sh\nsleep 5\n")
    script.chmod(0o755)
    p = subprocess.Popen([str(script)])
    try:
        assert st.start_time(p.pid) is not None
    finally:
        p.kill()
        p.wait()


def test_one_of_many_concurrent_name_claims_wins(paths):
    cids = [f"{i:064x}" for i in range(16)]
    for cid in cids:
        make_container(paths, cid)
    wins, losses = [], []
    barrier = threading.Barrier(len(cids))

    def claim(cid: str) -> None:
        barrier.wait()
        try:
            st.reserve_name(paths, "x", cid)
            wins.append(cid)
        except UsageError as exc:
            assert "already in use" in exc.message
            losses.append(cid)

    threads = [threading.Thread(target=claim, args=(c,)) for c in cids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 15
    assert st.lookup_name(paths, "x") == wins[0]


def test_stale_name_is_reclaimed_and_release_only_drops_ones_own(paths):
    make_container(paths, "a" * 64)
    st.reserve_name(paths, "n", "b" * 64)  # b has no storage: the claim is stale
    st.reserve_name(paths, "n", "a" * 64)
    assert st.lookup_name(paths, "n") == "a" * 64
    st.release_name(paths, "n", "b" * 64)
    assert st.lookup_name(paths, "n") == "a" * 64
    st.release_name(paths, "n", "a" * 64)
    assert st.lookup_name(paths, "n") is None


def test_cidfile_is_exclusive_and_released_with_the_name(paths, tmp_path):
    make_container(paths, "a" * 64)
    cidfile = tmp_path / "cid"
    st.reserve_name(paths, "n", "a" * 64, str(cidfile))
    assert cidfile.read_text() == "a" * 64
    with pytest.raises(UsageError, match="container id file exists"):
        st.reserve_name(paths, None, "c" * 64, str(cidfile))
    other = tmp_path / "cid2"
    with pytest.raises(UsageError, match="already in use"):
        st.reserve_name(paths, "n", "c" * 64, str(other))
    assert not other.exists()  # a refused claim leaves no cidfile


class FakePrepared:
    def __init__(self, paths: Paths, cid: str, remove: bool = False, name: str | None = None):
        self.paths = paths
        self.cid = cid
        self.spec = type("S", (), {"remove": remove, "name": name})()


def test_running_then_exited_records(paths):
    cid = "d" * 64
    make_container(paths, cid)
    c = st.load(paths, cid)
    assert c.status == "created"
    p = FakePrepared(paths, cid)
    st.record_running(p, os.getpid(), os.getpid())
    c = st.load(paths, cid)
    assert c.status == "running" and c.pid == os.getpid() and c.exit_code is None
    st.record_exited(p, 3)
    c = st.load(paths, cid)
    assert c.status == "exited" and c.exit_code == 3 and c.state["started"] <= c.state["finished"]


def test_record_exited_with_rm_leaves_no_runtime_state(paths):
    cid = "e" * 64
    make_container(paths, cid)
    st.reserve_name(paths, "gone", cid)
    p = FakePrepared(paths, cid, remove=True, name="gone")
    st.record_running(p, os.getpid(), os.getpid())
    st.record_exited(p, 0)
    assert not Path(st.runtime_dir(paths, cid)).exists()
    assert st.lookup_name(paths, "gone") is None


def test_dead_owner_reads_exited_unknown_and_repair_writes_it(paths):
    cid = "f" * 64
    make_container(paths, cid)
    dead = subprocess.Popen(["true"])
    dead.wait()
    rdir = Path(st.runtime_dir(paths, cid))
    rdir.mkdir(parents=True)
    st.write_json(str(rdir / "state.json"), {
        "status": "running", "pid": dead.pid, "pid_start": 1, "owner": dead.pid,
        "owner_start": 1, "started": 1.0})
    c = st.load(paths, cid)
    assert c.status == "exited" and c.stale and c.exit_code is None and c.pid == 0
    st.repair(paths, c)
    data = json.loads((rdir / "state.json").read_text())
    assert data["status"] == "exited" and data["exit_code"] is None and "died" in data["error"]


def test_reused_owner_pid_is_not_running(paths):
    cid = "1" * 64
    make_container(paths, cid)
    rdir = Path(st.runtime_dir(paths, cid))
    rdir.mkdir(parents=True)
    # This process's pid, with another start time: the owner died and its pid was reused.
    st.write_json(str(rdir / "state.json"), {
        "status": "running", "pid": os.getpid(), "owner": os.getpid(),
        "owner_start": st.start_time(os.getpid()) - 1, "started": 1.0})
    assert st.load(paths, cid).status == "exited"


def test_after_a_reboot_containers_read_exited(paths):
    make_container(paths, "2" * 64)
    cfg = paths.containers / ("2" * 64) / "config.json"
    data = json.loads(cfg.read_text())
    data["boot_id"] = "another-boot"
    cfg.write_text(json.dumps(data))
    assert st.load(paths, "2" * 64).status == "exited"


def test_listing_skips_half_created_and_removed_storage(paths):
    make_container(paths, "3" * 64, created=2.0)
    make_container(paths, "4" * 64, created=1.0)
    (paths.containers / ("5" * 64)).mkdir()  # no config.json yet
    (paths.containers / (".removing-" + "6" * 64)).mkdir()
    assert [c.cid for c in st.list_containers(paths)] == ["3" * 64, "4" * 64]


def test_write_json_does_not_resurrect_a_removed_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.write_json(str(tmp_path / "gone" / "state.json"), {})
    assert not (tmp_path / "gone").exists()


def zombie() -> int:
    """A child that has exited and that nobody reaped yet (the caller reaps it): what a killed
    `rl run -d` monitor or helper is until init reaps it, which on some hosts takes seconds."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    while (st.stat_fields(pid) or [b"Z"])[0] != b"Z":
        time.sleep(0.001)
    return pid


def test_a_dead_process_not_yet_reaped_is_not_alive():
    """A killed monitor stays a zombie until its new parent reaps it: `rl ps` said "Up" and
    `rl rm` waited on it for that long (the fault campaign's monitor kills)."""
    pid = zombie()
    try:
        started = st.start_time(pid)
        assert started is not None  # /proc still has it...
        assert not st.alive(pid, started)  # ...but it runs nothing and holds no lock
        assert not st.alive(pid, None)
    finally:
        os.waitpid(pid, 0)


def test_a_removal_in_progress_is_not_listed(paths):
    """`rl rm` renames the storage to .removing-<id> first, then deletes it: meanwhile its
    config.json is still there, and `rl ps -a` listed a container with the id
    ".removing-<id>" (the fault campaign: ps while a killed run's --rm monitor removed it)."""
    make_container(paths, "a" * 64)
    make_container(paths, ".removing-" + "b" * 64)
    assert [c.cid for c in st.list_containers(paths)] == ["a" * 64]
