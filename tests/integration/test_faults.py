"""Faults at random moments, the way podman's and runc's stress tests inject them: one winner
per name, nothing that no rl command can see after a SIGKILL, clean endings for SIGTERM, SIGHUP
and SIGINT during set-up, no signal lost before the command runs, no `--rm` container left
"Created". Each test loops: the races they guard against show up in a few rounds out of many.

The real rl, unprivileged, on a busybox rootfs. Delays are spread over the whole start-up
(planning, set-up, the command's start), with jitter, so every phase is hit in every run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import need_tool

pytestmark = pytest.mark.integration

# Entries of the runtime directory that are not per-container (shared caches and directories).
SHARED_RUNTIME = {"net", "seccomp", "locks"}


def leftovers(rl, marker: str | None = None) -> list[str]:
    """Everything a container may leave: storage, names, runtime records and files, locks,
    network helper files, and processes (by a marker in their command line or environment)."""
    found: list[str] = []
    for sub in ("containers", "names"):
        d = rl.data / sub
        if d.exists():
            found += [f"{sub}/{p.name}" for p in d.iterdir()]
    if rl.runtime.exists():
        for p in rl.runtime.iterdir():
            if p.name not in SHARED_RUNTIME:
                found.append(f"runtime/{p.name}")
        for sub in ("locks", "net"):
            d = rl.runtime / sub
            if d.exists():
                found += [f"runtime/{sub}/{p.name}" for p in d.iterdir()]
    if marker:
        found += [f"process {pid}" for pid in processes_with(marker)]
    return found


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line or environment holds marker (rl's XDG dirs are in the
    environment of rl, its helper, PID 1 before exec and pasta)."""
    pids = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry}/{part}").read_bytes()
            except OSError:
                continue
            if needle in data:
                pids.append(int(entry))
                break
    return pids


def settle(rl, marker: str, timeout: float = 10.0) -> list[str]:
    """Leftovers once the processes that die with rl (PR_SET_PDEATHSIG) had time to go."""
    end = time.monotonic() + timeout
    while True:
        left = leftovers(rl, marker)
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


def delays(rounds: int, span: float, seed: int) -> list[float]:
    """Delays spread evenly over [0, span) with jitter, shuffled (a fixed seed per test)."""
    rnd = random.Random(seed)
    return rnd.sample([span * (i + rnd.random()) / rounds for i in range(rounds)], rounds)


def python_was_starting(code: int, sig: int, err: str) -> bool:
    """The signal came while the interpreter was still starting, before rl's first line could
    install a handler: nothing of a container exists yet. Its default action then ends the
    process (the shell shows 128+N); a SIGINT there is Python's own KeyboardInterrupt (rl's
    handler raises Interrupted), which the interpreter's start-up and import machinery report
    as fatal (exit 1) or print and drop."""
    return code == -sig or (sig == signal.SIGINT and "KeyboardInterrupt" in err)


@pytest.fixture
def bb(rl, busybox_rootfs):
    """bb([opts], *cmd) -> the argv of `rl run OPTS --rootfs BUSYBOX CMD`, for Popen."""

    def argv(opts: list[str], *cmd: str) -> list[str]:
        return [rl.exe, "run", *opts, "--rootfs", str(busybox_rootfs), *cmd]

    yield argv
    rl("rm", "-f", "-a", timeout=60)


def test_ten_concurrent_claims_of_one_name_have_one_winner_every_round(rl, busybox_rootfs):
    """Item 1: a claimant must never take a name whose owner has not written its config yet
    (two containers with one name, and `rl rm NAME` removing only one of them)."""
    for rnd in range(12):
        name = f"same{rnd}"

        def one(_i: int, name: str = name) -> subprocess.CompletedProcess:
            return rl("run", "-d", "--name", name, "--network", "none", "--rootfs",
                      str(busybox_rootfs), "sleep", "1000", timeout=120)

        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(one, range(10)))
        winners = [r.stdout.strip() for r in results if r.returncode == 0]
        losers = [r for r in results if r.returncode != 0]
        listed = json.loads(rl("ps", "-a", "--filter", f"name=^{name}$", "--format", "json").stdout)
        assert len(winners) == 1, (rnd, [r.stderr for r in results], listed)
        assert all(r.returncode == 125 and "already in use" in r.stderr for r in losers), rnd
        assert [c["Id"] for c in listed] == winners, rnd
    assert rl("rm", "-f", "-a").returncode == 0
    assert leftovers(rl) == []


def test_sigkill_during_start_up_leaves_nothing_that_ps_rm_and_prune_cannot_see(rl, bb,
                                                                              busybox_rootfs):
    """Items 2 and 5: whatever a SIGKILL leaves, the next rl finds; `--rm` containers whose
    launcher is gone are removed by the next `rl ps` (and by `rl run` wanting their name),
    the rest by `rm -a` or `system prune`."""
    marker = str(rl.base)
    kinds = [["--rm"], [], ["--rm", "--name", "dead"], ["-d"]]
    times = delays(40, 0.15, seed=2)
    for rnd in range(10):
        procs = [subprocess.Popen(bb([*opts, "--network", "none"], "true"), env=rl.env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for opts in kinds]
        start = time.monotonic()
        # Each killed at its own moment (in order: the kinds change places across rounds),
        # so one round hits several phases at once.
        moments = times[rnd * len(kinds):(rnd + 1) * len(kinds)]
        order = sorted(range(len(kinds)), key=lambda k: moments[k])
        for k in order:
            time.sleep(max(0.0, start + moments[k] - time.monotonic()))
            procs[k].kill()
        for proc in procs:
            proc.wait()
        # Whatever the kills left is seen: a new run takes the name of a dead --rm container
        # (before any other rl tidied up)...
        r = rl("run", "--rm", "--name", "dead", "--network", "none", "--rootfs",
               str(busybox_rootfs), "true")
        assert r.returncode == 0, (rnd, r.stderr)
        # ...ps lists what is left and drops the dead --rm ones...
        listed = json.loads(rl("ps", "-a", "--format", "json").stdout)
        assert all(not c["AutoRemove"] for c in listed), (rnd, listed)
        # ...and rm -a or system prune removes the rest.
        clean = ("rm", "-a", "-f") if rnd % 2 else ("system", "prune", "-f")
        assert rl(*clean).returncode == 0
        assert settle(rl, marker) == [], (rnd, clean)


@pytest.mark.parametrize("network", ["none", "pasta"])
def test_signals_during_start_up_end_the_run_cleanly_and_are_never_lost(rl, bb, network):
    """Items 3 and 4: SIGTERM, SIGHUP and SIGINT at any moment of `rl run` end it with
    128+N: before the command runs, rl stops the start-up, cleans up and says so; once it
    runs, the container gets the signal (--init forwards it to `sleep`, which dies of it).
    Never a run that ignores it, never rl killed without its clean-up."""
    if network == "pasta":
        need_tool("pasta")
    marker = str(rl.base)
    sigs = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]
    for i, delay in enumerate(delays(24, 0.2 if network == "pasta" else 0.15, seed=3)):
        sig = sigs[i % len(sigs)]
        start = time.monotonic()
        proc = subprocess.Popen(bb(["--rm", "--init", "--network", network], "sleep", "5"),
                                env=rl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(delay)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - start
        if not python_was_starting(proc.returncode, sig, err):
            assert proc.returncode == 128 + sig, (i, delay, sig.name, proc.returncode, err)
            assert "Traceback" not in err, err
            assert took < 4, (i, delay, sig.name, "the signal was lost", err)
        assert settle(rl, marker) == [], (i, delay, sig.name, err)


def test_signals_to_run_d_before_its_verdict_stop_the_start_up(rl, bb):
    """Items 3 and 4 for `rl run -d`: a signal before the container's command runs is relayed
    to the monitor, which stops the start-up: 128+N and nothing left, as in the foreground.
    After the verdict `rl run -d` has printed the id and the container runs."""
    marker = str(rl.base)
    outcomes = set()
    for i, delay in enumerate(delays(16, 0.15, seed=4)):
        proc = subprocess.Popen(bb(["-d", "--rm", "--network", "none"], "sleep", "30"),
                                env=rl.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        if python_was_starting(proc.returncode, signal.SIGTERM, err):
            outcomes.add("python")
        elif proc.returncode == 0:
            outcomes.add("started")
            assert len(out.strip()) == 64, (i, delay, out, err)
            assert rl("rm", "-f", out.strip()).returncode == 0
        else:
            outcomes.add("stopped")
            assert proc.returncode == 143 and "interrupted by SIGTERM" in err, (i, delay, err)
            assert "Traceback" not in err, err
        assert settle(rl, marker) == [], (i, delay, proc.returncode, err)
    assert "stopped" in outcomes, outcomes  # the delays reach into the start-up
