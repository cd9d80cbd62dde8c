"""The OCI lifecycle through the real rl-oci: create, state, start, kill, delete, run, with the
concurrency and pid-reuse guarantees runtime.md and the engines expect."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.oci.conftest import cid

pytestmark = pytest.mark.integration


def test_run_returns_the_status_and_the_output(oci, bundle):
    b = bundle(["sh", "-c", "echo out; echo err >&2; exit 3"])
    r = oci("run", "--bundle", str(b), cid())
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    assert os.listdir(oci.root) == []  # run deletes the container it ran


def test_create_waits_for_start_and_state_follows(oci, bundle, tmp_path):
    out = tmp_path / "out"
    out.mkdir()

    def bind_out(config):
        config["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                                 "options": ["bind", "rw"]})

    b = bundle(["sh", "-c", "echo started > /out/file; exec sleep 30"], bind_out)
    name, pid_file = cid(), tmp_path / "pid"
    r = oci("create", "--bundle", str(b), "--pid-file", str(pid_file), name)
    assert r.returncode == 0, r.stderr
    state = oci.state(name)
    assert state["status"] == "created"
    assert state["id"] == name and state["bundle"] == str(b)
    assert pid_file.read_text() == str(state["pid"])  # no newline: runc's format
    time.sleep(0.2)
    assert not (out / "file").exists(), "the process ran before start"

    r = oci("start", name)
    assert r.returncode == 0, r.stderr
    assert oci.state(name)["status"] == "running"
    deadline = time.monotonic() + 5
    while not (out / "file").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (out / "file").read_text() == "started\n"
    assert oci("start", name).returncode == 1  # not "created" any more

    r = oci("delete", name)
    assert r.returncode == 1 and "not stopped" in r.stderr
    assert oci.state(name)["status"] == "running"  # no effect

    assert oci("kill", name, "KILL").returncode == 0
    assert oci.wait_status(name, "stopped")["status"] == "stopped"
    r = oci("kill", name, "TERM")
    assert r.returncode == 1, "a stopped container must refuse signals"
    assert oci("delete", name).returncode == 0
    r = oci("state", name)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_kill_of_a_created_container_ends_it(oci, bundle):
    name = cid()
    assert oci("create", "--bundle", str(bundle(["true"])), name).returncode == 0
    assert oci("kill", name).returncode == 0  # SIGTERM by default
    assert oci.wait_status(name, "stopped")["status"] == "stopped"
    assert oci("delete", name).returncode == 0


def test_run_reports_a_signal_as_128_plus_n(oci, bundle):
    name = cid()
    proc = oci.popen("run", "--bundle", str(bundle(["sleep", "30"])), name,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert oci.wait_status(name, "running")["status"] == "running"
    assert oci("kill", name, "9").returncode == 0
    assert proc.wait(timeout=10) == 128 + signal.SIGKILL


def test_delete_force_kills_and_removes(oci, bundle):
    name = cid()
    assert oci("run", "--detach", "--bundle", str(bundle(["sleep", "30"])), name).returncode == 0
    pid = oci.state(name)["pid"]
    assert oci("delete", "--force", name).returncode == 0
    assert oci("state", name).returncode == 1
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1][0] in "ZX"


def test_two_creates_with_one_id_exactly_one_wins(oci, bundle, tmp_path):
    name = cid()
    b = str(bundle(["true"]))
    errs = [tmp_path / f"err{i}" for i in range(2)]
    procs = [oci.popen("create", "--bundle", b, name, stdout=subprocess.DEVNULL,
                       stderr=open(err, "w")) for err in errs]
    results = [(p.wait(timeout=30), err.read_text()) for p, err in zip(procs, errs, strict=True)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    assert any("already exists" in err for code, err in results if code == 1)
    assert oci.state(name)["status"] == "created"


def test_state_while_create_runs_says_creating(oci, bundle, tmp_path):
    """Engines poll state while create runs (Slurm does): a createRuntime hook that takes a
    while shows the container "creating", then "created"."""

    def slow_hook(config):
        config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "1"]}]}

    name = cid()
    proc = oci.popen("create", "--bundle", str(bundle(["true"], slow_hook)), name,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        r = oci("state", name)
        if r.returncode == 0:
            seen.add(json.loads(r.stdout)["status"])
        time.sleep(0.05)
    assert proc.wait() == 0
    assert "creating" in seen, seen
    assert oci.state(name)["status"] == "created"


def test_a_reused_pid_is_not_the_container(oci, bundle):
    """state.json keeps the pid with its start time: once the container has stopped, a new
    process with that pid (here: a live process of ours, swapped in) is not the container,
    and kill must not signal it."""
    name = cid()
    assert oci("create", "--bundle", str(bundle(["true"])), name).returncode == 0
    assert oci("kill", name, "KILL").returncode == 0
    oci.wait_status(name, "stopped")
    victim = subprocess.Popen(["sleep", "30"])
    try:
        state_file = oci.root / name / "state.json"
        state = json.loads(state_file.read_text())
        state["pid"] = victim.pid  # the same pid, another process: its start time differs
        state_file.write_text(json.dumps(state))
        assert oci.state(name)["status"] == "stopped"
        assert oci("kill", name, "KILL").returncode == 1
        assert victim.poll() is None, "kill signalled a process that is not the container"
    finally:
        victim.kill()
        victim.wait()


def test_concurrent_state_reads_never_see_half_a_file(oci, bundle):
    name = cid()
    b = str(bundle(["true"]))
    errors: list[str] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            r = oci("state", name)
            if r.returncode == 0:
                try:
                    json.loads(r.stdout)
                except ValueError as exc:
                    errors.append(f"{exc}: {r.stdout!r}")
            elif "does not exist" not in r.stderr:
                errors.append(r.stderr)

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        assert oci("create", "--bundle", b, name).returncode == 0
        assert oci("delete", "--force", name).returncode == 0
    finally:
        stop.set()
        thread.join()
    assert errors == []


def test_list_ps_exec_and_the_informational_commands(oci, bundle):
    name = cid()
    assert oci("run", "-d", "--bundle", str(bundle(["sleep", "30"])), name).returncode == 0
    listed = json.loads(oci("list", "--format", "json").stdout)
    assert [(s["id"], s["status"]) for s in listed] == [(name, "running")]
    assert oci("list", "-q").stdout == name + "\n"
    pids = json.loads(oci("ps", "--format", "json", name).stdout)
    assert oci.state(name)["pid"] in pids
    r = oci("exec", name, "sh", "-c", "echo in:$(cat /proc/1/comm); exit 4")
    assert (r.returncode, r.stdout) == (4, "in:sleep\n")
    assert oci("delete", "--force", name).returncode == 0

    features = json.loads(oci("features").stdout)
    assert features["ociVersionMax"].startswith("1.") and "createRuntime" in features["hooks"]
    assert "user" in features["linux"]["namespaces"]
    assert oci("--version").stdout.startswith("rl-oci version ")
    assert oci("version").returncode == 0


def test_pause_without_a_cgroup_is_a_clear_error(oci, bundle):
    name = cid()
    assert oci("run", "-d", "--bundle", str(bundle(["sleep", "30"])), name).returncode == 0
    r = oci("pause", name)
    assert r.returncode == 1 and "has no cgroup of its own" in r.stderr
    assert oci("update", "--pids-limit", "10", name).returncode == 1
    assert oci.state(name)["status"] == "running"
