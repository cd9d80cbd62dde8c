"""Container lifecycle end to end: rl run -d, ps, logs, stop, kill, rm, start, restart, rename,
wait, top, inspect, prune, --cidfile, --restart, --log-opt — the real rl, unprivileged, on a
busybox rootfs."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import container_processes

pytestmark = pytest.mark.integration

LOOP = "i=0; while true; do echo out $i; echo err $i >&2; i=$((i+1)); sleep 0.2; done"


@pytest.fixture
def bb(rl, busybox_rootfs):
    """bb(*cmd, opts=[...]) -> rl run --network none [opts] --rootfs BUSYBOX cmd..."""

    def run(*cmd: str, opts: list[str] | tuple[str, ...] = (), **kw):
        return rl("run", "--network", "none", *opts, "--rootfs", str(busybox_rootfs), *cmd, **kw)

    yield run
    # Nothing may outlive a test: remove whatever it left.
    rl("rm", "-f", "-a", timeout=60)


def until(pred, timeout: float = 15.0, step: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def state_of(rl, ref: str) -> dict:
    r = rl("inspect", ref)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"]


def test_detached_logs_follow_stop_rm(rl, bb):
    r = bb("sh", "-c", LOOP, opts=["-d", "--name", "looper"])
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert len(cid) == 64 and all(c in "0123456789abcdef" for c in cid)
    ps = rl("ps", "--format", "{{.ID}} {{.Names}} {{.State}}")
    assert f"{cid[:12]} looper running" in ps.stdout
    assert until(lambda: "out 2" in rl("logs", "looper").stdout)
    logs = rl("logs", "looper")
    assert "out 0\nout 1\n" in logs.stdout and "err 0\n" in logs.stderr
    follower = rl.popen("logs", "-f", "looper", text=True)
    time.sleep(0.5)
    assert follower.poll() is None  # still following a running container
    stop = rl("stop", "-t", "1", "looper")
    assert stop.returncode == 0 and stop.stdout.strip() == "looper"
    out, _ = follower.communicate(timeout=15)  # -f ends when the container stops
    assert follower.returncode == 0 and "out 0\n" in out
    st = state_of(rl, "looper")
    # sh as PID 1 of its namespace ignores SIGTERM (no handler): the timeout's SIGKILL ends it.
    assert st["Status"] == "exited" and st["ExitCode"] == 137 and not st["Running"]
    assert "Exited (137)" in rl("ps", "-a").stdout
    assert rl("ps", "-q").stdout == ""
    assert rl("rm", "looper").returncode == 0
    assert rl("ps", "-a", "-q").stdout == ""
    assert not (rl.data / "containers" / cid).exists()
    assert not (rl.runtime / cid).exists()
    assert container_processes(LOOP) == []


def test_stop_signal_that_the_command_traps(bb, rl):
    trap = "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done"
    cid = bb("sh", "-c", trap, opts=["-d"]).stdout.strip()
    assert rl("stop", cid[:12]).returncode == 0
    assert state_of(rl, cid)["ExitCode"] == 3
    assert "got-term" in rl("logs", cid).stdout
    # --stop-signal is used by stop.
    cid = bb("sh", "-c", "trap 'exit 5' USR1; while true; do sleep 0.1; done",
             opts=["-d", "--stop-signal", "USR1"]).stdout.strip()
    assert rl("stop", "-t", "5", cid).returncode == 0
    assert state_of(rl, cid)["ExitCode"] == 5


def test_kill_signals_and_errors(bb, rl):
    cid = bb("sh", "-c", "trap 'exit 42' USR2; while true; do sleep 0.1; done", opts=["-d"]).stdout.strip()
    for bad in ("BOGUS", "SIGNOPE", "0", "99"):
        r = rl("kill", "-s", bad, cid)
        assert r.returncode == 125 and "invalid signal" in r.stderr, (bad, r.stderr)
    assert rl("kill", "-s", "usr2", cid).returncode == 0
    assert until(lambda: state_of(rl, cid)["Status"] == "exited")
    assert state_of(rl, cid)["ExitCode"] == 42
    r = rl("kill", cid)
    assert r.returncode == 125 and "can only kill running containers" in r.stderr
    cid = bb("sleep", "1000", opts=["-d"]).stdout.strip()
    assert rl("kill", "-s", "9", cid).returncode == 0
    assert rl("wait", cid).stdout.strip() == "137"


def test_unknown_container_errors(rl):
    for cmd, code in (("rm", 1), ("stop", 1), ("kill", 125), ("inspect", 125), ("logs", 125),
                      ("start", 125), ("wait", 125), ("top", 125)):
        r = rl(cmd, "no-such-container")
        assert r.returncode == code, (cmd, r.returncode, r.stderr)
        assert 'no container with name or ID "no-such-container" found' in r.stderr
    r = rl("exec", "no-such-container", "true")
    assert r.returncode == 125
    assert rl("rm", "-i", "no-such-container").returncode == 0


def test_rm_running_needs_force_and_force_kills_a_foreground_run(bb, rl, busybox_rootfs):
    cid = bb("sleep", "1000", opts=["-d", "--name", "sleeper"]).stdout.strip()
    r = rl("rm", "sleeper")
    assert r.returncode == 2 and "cannot remove container" in r.stderr and "without force" in r.stderr
    assert rl("rm", "-f", "-v", "sleeper").returncode == 0
    assert not (rl.data / "containers" / cid).exists()
    # A foreground `rl run` whose container is removed with -f exits 137, leaving nothing.
    fg = rl.popen("run", "--name", "fg", "--network", "none", "--rootfs", str(busybox_rootfs),
                  "sleep", "1000")
    assert until(lambda: rl("ps", "-q", "--filter", "name=^fg$").stdout.strip())
    assert rl("rm", "-f", "fg").returncode == 0
    assert fg.wait(timeout=15) == 137
    assert rl("ps", "-a", "-q").stdout == ""
    assert list((rl.data / "containers").iterdir()) == []


def test_exited_container_start_attach_restart_rename(bb, rl):
    r = bb("sh", "-c", "echo run; cat /data 2>/dev/null; echo x >> /data; exit 4", opts=["--name", "again"])
    assert r.returncode == 4 and r.stdout == "run\n"
    assert "Exited (4)" in rl("ps", "-a", "--filter", "name=again").stdout
    # start -a runs it again in the foreground, in the same storage (the file persists).
    r = rl("start", "-a", "again")
    assert r.returncode == 4 and r.stdout == "run\nx\n"
    # start (detached) prints the name and the monitor records the exit.
    r = rl("start", "again")
    assert r.returncode == 0 and r.stdout.strip() == "again"
    assert rl("wait", "again").stdout.strip() == "4"
    assert "run\nx\nx\n" in rl("logs", "again").stdout
    assert rl("rename", "again", "renamed").returncode == 0
    assert rl("inspect", "--format", "{{.Name}}", "renamed").stdout.strip() == "renamed"
    assert rl("inspect", "again").returncode == 125
    r = rl("rename", "renamed", "bad/name")
    assert r.returncode == 125
    # The old name is free again.
    assert bb("true", opts=["--name", "again"]).returncode == 0
    r = rl("rename", "renamed", "again")
    assert r.returncode == 125 and "already in use" in r.stderr
    # restart a running container: same id, new PID 1.
    cid = bb("sleep", "1000", opts=["-d", "--name", "rs"]).stdout.strip()
    pid_before = state_of(rl, "rs")["Pid"]
    r = rl("restart", "-t", "0", "rs")
    assert r.returncode == 0, r.stderr
    st = state_of(rl, "rs")
    assert st["Running"] and st["Pid"] != pid_before
    assert rl("inspect", "--format", "{{.Id}}", "rs").stdout.strip() == cid


def test_name_rules_and_cidfile(bb, rl, tmp_path):
    assert bb("true", opts=["--name", "-bad"]).returncode == 125
    assert bb("true", opts=["--name", "a b"]).returncode == 125
    cidfile = tmp_path / "cid"
    r = bb("true", opts=["--cidfile", str(cidfile), "--name", "cf"])
    assert r.returncode == 0
    cid = cidfile.read_text()
    assert rl("inspect", "--format", "{{.Id}}", "cf").stdout.strip() == cid
    r = bb("true", opts=["--cidfile", str(cidfile)])
    assert r.returncode == 125 and "container id file exists" in r.stderr
    # A refused run (name taken) leaves neither a cidfile nor storage behind.
    other = tmp_path / "cid2"
    r = bb("true", opts=["--cidfile", str(other), "--name", "cf"])
    assert r.returncode == 125 and "already in use" in r.stderr
    assert not other.exists()
    assert len(list((rl.data / "containers").iterdir())) == 1


def test_run_d_errors_are_reported_by_the_foreground(bb, rl):
    r = bb("no-such-command", opts=["-d"])
    assert r.returncode == 127 and "not found" in r.stderr
    r = bb("/etc", opts=["-d", "--rm"])
    assert r.returncode == 126
    assert rl("ps", "-a", "-q", "--filter", "status=running").stdout == ""
    r = bb("true", opts=["-d", "--rm", "--restart", "always"])
    assert r.returncode == 125 and "conflicts" in r.stderr
    for bad in (["--restart", "sometimes"], ["--restart", "on-failure:x"],
                ["--log-opt", "max-size=lots"], ["--log-opt", "colour=blue"]):
        r = bb("true", opts=["-d", *bad])
        assert r.returncode == 125, (bad, r.stderr)


def test_rm_d_removes_itself(bb, rl):
    cid = bb("sh", "-c", "echo bye", opts=["-d", "--rm"]).stdout.strip()
    assert until(lambda: not (rl.data / "containers" / cid).exists())
    assert until(lambda: not (rl.runtime / cid).exists())
    assert rl("ps", "-a", "-q").stdout == ""


def test_restart_on_failure_counts(bb, rl):
    cid = bb("sh", "-c", "echo try; exit 1", opts=["-d", "--restart", "on-failure:2"]).stdout.strip()
    assert until(lambda: rl("logs", cid).stdout.count("try") == 3 and
                 state_of(rl, cid)["Status"] == "exited", timeout=20)
    time.sleep(1)
    assert rl("logs", cid).stdout.count("try") == 3
    r = rl("inspect", "--format", "{{.RestartCount}} {{.State.ExitCode}} "
           "{{.HostConfig.RestartPolicy.Name}}", cid)
    assert r.stdout.split() == ["2", "1", "on-failure"]
    # A command that succeeds is not restarted.
    cid = bb("sh", "-c", "echo once", opts=["-d", "--restart", "on-failure"]).stdout.strip()
    assert rl("wait", cid).stdout.strip() == "0"
    time.sleep(0.5)
    assert rl("logs", cid).stdout == "once\n"


def test_monitor_killed_shows_exited_and_rm_cleans(bb, rl):
    cid = bb("sleep", "1000", opts=["-d", "--name", "orphan"]).stdout.strip()
    state = json.loads((rl.runtime / cid / "state.json").read_text())
    monitor = state["owner"]
    assert Path(f"/proc/{monitor}/comm").read_text().strip() == "rl:[monitor]"
    os.kill(monitor, signal.SIGKILL)
    assert until(lambda: not Path(f"/proc/{state['pid']}").exists())  # PID 1 died with it
    r = rl("ps", "-a", "--format", "{{.Names}} {{.State}} {{.Status}}")
    assert "orphan exited Exited (unknown)" in r.stdout
    st = state_of(rl, "orphan")
    assert st["Status"] == "exited" and not st["Running"] and st["ExitCode"] == -1
    assert "died" in st["Error"]
    r = rl("exec", "orphan", "true")
    assert r.returncode == 125 and "running containers" in r.stderr
    assert rl("rm", "orphan").returncode == 0
    assert not (rl.data / "containers" / cid).exists()
    assert rl("ps", "-a", "-q").stdout == ""


def test_reboot_empties_runtime_dir(bb, rl):
    cid = bb("sleep", "1000", opts=["-d"]).stdout.strip()
    rl("kill", cid)
    rl("wait", cid)
    # Simulate a reboot: the runtime tmpfs is empty and the boot id differs.
    cfg_path = rl.data / "containers" / cid / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["boot_id"] = "an-earlier-boot"
    cfg_path.write_text(json.dumps(cfg))
    for p in (rl.runtime / cid).iterdir():
        p.unlink()
    (rl.runtime / cid).rmdir()
    assert "exited" in rl("ps", "-a", "--format", "{{.State}}").stdout
    assert rl("rm", cid).returncode == 0


def test_ps_formats_and_filters(bb, rl):
    bb("sh", "-c", "exit 3", opts=["--name", "three", "--label", "team=a"])
    bb("sleep", "1000", opts=["-d", "--name", "up"])
    r = rl("ps")
    header = r.stdout.splitlines()[0].split("  ")
    assert [h.strip() for h in header if h.strip()] == [
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    assert "up" in r.stdout and "three" not in r.stdout
    data = json.loads(rl("ps", "-a", "--format", "json").stdout)
    by_name = {d["Names"][0]: d for d in data}
    assert by_name["three"]["ExitCode"] == 3 and by_name["three"]["State"] == "exited"
    assert by_name["up"]["State"] == "running" and by_name["up"]["Pid"] > 0
    assert rl("ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}").stdout == "three\n"
    assert rl("ps", "-a", "--filter", "name=thr", "-q").stdout.strip() == by_name["three"]["Id"][:12]
    assert rl("ps", "-a", "--filter", "label=team=a", "--format", "{{.Names}}").stdout == "three\n"
    assert rl("ps", "-a", "--filter", "status=bogus").returncode == 125
    assert rl("ps", "--format", "{{.Nope}}").returncode == 125
    r = rl("ps", "--format", "table {{.Names}}\\t{{.Status}}")
    assert r.stdout.splitlines()[0].split() == ["NAMES", "STATUS"]


def test_inspect_shape_has_no_secrets(bb, rl):
    bb("sleep", "1000", opts=["-d", "--name", "insp", "-e", "TOKEN=hunter2", "--pids-limit", "50",
                              "--cgroups", "disabled", "-v", "/tmp:/hosttmp:ro", "--stop-timeout", "3"])
    r = rl("inspect", "insp")
    assert r.returncode == 0
    assert "hunter2" not in r.stdout
    data = json.loads(r.stdout)[0]
    assert data["Name"] == "insp" and data["Path"] == "sleep" and data["Args"] == ["1000"]
    assert data["State"]["Running"] and data["State"]["Pid"] > 0
    assert data["Mounts"][0]["Destination"] == "/hosttmp" and data["Mounts"][0]["RW"] is False
    assert data["Config"]["StopTimeout"] == 3
    assert data["HostConfig"]["NetworkMode"] == "none"
    assert data["HostConfig"]["PidsLimit"] == 50
    assert rl("inspect", "--format", "{{json .State.Running}}", "insp").stdout.strip() == "true"


def test_top_lists_the_containers_processes(bb, rl):
    bb("sh", "-c", "sleep 1000 & sleep 1001; true", opts=["-d", "--name", "topper"])
    assert until(lambda: "sleep 1001" in rl("top", "topper").stdout)
    lines = rl("top", "topper").stdout.splitlines()
    assert lines[0].split()[:3] == ["USER", "PID", "PPID"]
    rows = {ln.split(None, 7)[7]: ln.split() for ln in lines[1:]}
    assert rows["sh -c sleep 1000 & sleep 1001; true"][1] == "1"
    assert rows["sleep 1000"][2] == "1" and rows["sleep 1000"][0] == "root"
    rl("rm", "-f", "topper")
    assert rl("top", "topper").returncode == 125


def test_container_prune_and_system_prune(bb, rl):
    bb("true", opts=["--name", "done1"])
    bb("true", opts=["--name", "done2"])
    bb("sleep", "1000", opts=["-d", "--name", "alive"])
    r = rl("container", "prune", "-f")
    assert r.returncode == 0 and len(r.stdout.split()) == 2
    assert rl("ps", "-a", "--format", "{{.Names}}").stdout == "alive\n"
    bb("true", opts=["--name", "done3"])
    r = rl("system", "prune", "-f")
    assert r.returncode == 0 and "Deleted Containers" in r.stdout
    assert rl("container", "ls", "-a", "--format", "{{.Names}}").stdout == "alive\n"


def test_log_cap_keeps_newest_lines_whole(bb, rl):
    # 1 MiB of numbered lines; without a cap all of it comes back intact.
    gen = "i=0; while [ $i -lt 16384 ]; do printf '%063d\\n' $i; i=$((i+1)); done"
    cid = bb("sh", "-c", gen, opts=["-d"]).stdout.strip()
    assert rl("wait", cid, timeout=120).stdout.strip() == "0"
    out = rl("logs", cid).stdout
    expected = "".join(f"{i:063d}\n" for i in range(16384))
    assert len(expected) == 1 << 20 and out == expected
    assert rl("logs", "--tail", "2", cid).stdout == expected[-128:]
    assert rl("logs", "--tail", "0", cid).stdout == ""
    assert rl("logs", "--since", "1h", cid).stdout == expected
    assert rl("logs", "--since", str(int(time.time()) + 3600), cid).stdout == ""
    # With a 256k cap: only the newest output, within the cap, every line whole.
    cid = bb("sh", "-c", gen, opts=["-d", "--log-opt", "max-size=256k"]).stdout.strip()
    assert rl("wait", cid, timeout=120).stdout.strip() == "0"
    out = rl("logs", cid).stdout
    lines = out.splitlines()
    assert lines[-1] == f"{16383:063d}"
    first = int(lines[0])
    assert lines == [f"{i:063d}" for i in range(first, 16384)]
    files = list((rl.data / "containers" / cid).glob("ctr.log*"))
    assert sum(f.stat().st_size for f in files) <= 256 * 1024
    assert len(out) >= 64 * 1024


def test_partial_lines_and_binary_output_round_trip(bb, rl):
    cid = bb("sh", "-c", "printf 'a\\tb\\r\\n'; printf 'no newline'", opts=["-d"]).stdout.strip()
    rl("wait", cid)
    r = rl("logs", cid, text=False)
    assert r.stdout == b"a\tb\r\nno newline"


def test_foreground_rm_exits_with_the_code_after_sigterm(rl, busybox_rootfs):
    trap = "trap 'echo trapped; exit 7' TERM; echo ready; while true; do sleep 0.1; done"
    p = rl.popen("run", "--rm", "--network", "none", "--init", "--rootfs", str(busybox_rootfs),
                 "sh", "-c", trap, text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    assert p.returncode == 7 and "trapped" in out
    p = rl.popen("run", "--rm", "--network", "none", "--init", "--rootfs", str(busybox_rootfs),
                 "sh", "-c", "echo ready; sleep 1000", text=True)
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=15)
    assert p.returncode == 143
    assert rl("ps", "-a", "-q").stdout == ""
    assert list((rl.data / "containers").iterdir()) == []
