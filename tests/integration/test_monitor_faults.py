"""A detached container's helpers die under it (issue 13 item 9): a killed logger is restarted
on the same pipes, so the container's output is kept, and the restart is said in the log and
in `rl inspect`; a killed pasta leaves the container running without network, which `rl ps`,
`rl inspect`, the log (detached) and stderr (foreground) now say."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.integration.test_lifecycle import until

pytestmark = pytest.mark.integration

COUNT = 300
TALKER = (f"i=0; while [ $i -lt {COUNT} ]; do echo line$i; i=$((i+1)); sleep 0.01; done; "
          "echo done >&2; sleep 1000")


def children(pid: int, name: str) -> list[int]:
    """Children of pid named `name` by their comm (rl:[logger]) or their argv[0] (pasta
    re-executes itself as passt.avx2, a comm of its own)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == pid and name in (comm, os.path.basename(argv0)):
            out.append(int(entry))
    return out


def monitor_of(rl, cid: str) -> int:
    state = json.loads((rl.runtime / cid / "state.json").read_text())
    return int(state["owner"])


def inspect_state(rl, ref: str) -> dict:
    r = rl("inspect", ref)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["State"]


def test_a_killed_logger_is_restarted_and_the_output_is_kept(rl, busybox_rootfs):
    r = rl("run", "-d", "--name", "talker", "--network", "none", "--rootfs",
           str(busybox_rootfs), "sh", "-c", TALKER)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        monitor = monitor_of(rl, cid)
        assert until(lambda: "line20\n" in rl("logs", "talker").stdout)
        loggers = children(monitor, "rl:[logger]")
        assert len(loggers) == 1, loggers
        os.kill(loggers[0], signal.SIGKILL)
        # The container keeps writing; a new logger keeps what it writes.
        logs = until(lambda: (lambda x: x if "done" in x.stderr else None)(rl("logs", "talker")))
        assert logs, "the container's output after the logger died was lost"
        lines = logs.stdout.splitlines()
        assert lines == [f"line{i}" for i in range(COUNT)]
        assert "rl: the logger" in logs.stderr and "restarted" in logs.stderr
        assert "logger" in inspect_state(rl, "talker")["Error"]
        assert len(children(monitor, "rl:[logger]")) == 1
    finally:
        assert rl("rm", "-f", "talker").returncode == 0


@pytest.mark.parametrize("helper", ["pasta", "slirp4netns"])
def test_a_killed_network_helper_is_reported(rl, busybox_rootfs, helper):
    need_tool(helper)
    r = rl("run", "-d", "--name", "netless", "--network", helper, "--rootfs", str(busybox_rootfs), "sleep", "1000")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    try:
        monitor = monitor_of(rl, cid)
        pastas = children(monitor, helper)
        assert len(pastas) == 1, pastas
        assert "no network" not in rl("ps").stdout
        os.kill(pastas[0], signal.SIGKILL)
        assert until(lambda: "(no network)" in rl("ps").stdout), rl("ps").stdout
        st = inspect_state(rl, "netless")
        assert st["Running"] and helper in st["Error"] and "no network" in st["Error"]
        assert f"rl: {helper}" in rl("logs", "netless").stderr
    finally:
        assert rl("rm", "-f", "netless").returncode == 0

    # In the foreground, rl says it on its stderr and the run goes on to its end.
    proc = rl.popen("run", "--rm", "--network", helper, "--rootfs", str(busybox_rootfs), "sh", "-c",
                    "echo up; sleep 1; echo still-here", text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"  # the command runs
    pastas = children(proc.pid, helper)
    assert len(pastas) == 1, pastas
    os.kill(pastas[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == "still-here\n", err
    assert f"rl: {helper}" in err and "no network" in err
