#!/usr/bin/env python3
"""The fault campaign of issue 13, re-runnable: rl under the faults its users and CI runners
meet, each kind in a loop, and after every fault a check that nothing is left.

Run it as the unprivileged user that runs containers (never as root), from a checkout with rl
installed (scripts/test.sh builds a venv; put its bin/ first on PATH or pass --rl):

    scripts/fault-campaign.py                      # every kind, ~10 minutes on 2 cores
    scripts/fault-campaign.py --scale 0.3          # fewer iterations per kind
    scripts/fault-campaign.py --only kill,names    # some kinds (prefixes of their names)
    scripts/fault-campaign.py --budget 300         # stop starting new iterations after 300 s

The kinds (the same kinds of fault as the issue's ~1,500 iterations, fewer of each):

    kill            SIGKILL of `rl run` at a random moment in 0-300 ms: foreground with and
                    without network, -d, --rm, -d --rm, --rm --name (several at once, each at
                    its own moment)
    signal-early    SIGTERM, SIGINT or SIGHUP at 0-150 ms (set-up or the command's start)
    signal-late     the same signals once the command runs (--init, and a trapping sh)
    parallel-20/50  20 and 50 parallel runs with the default network (and pasta)
    names           ten concurrent `rl run -d --name SAME`, and ten foreground `--rm --name`
    detached        SIGKILL of a detached container's monitor, logger, helper, PID 1,
                    slirp4netns and pasta
    full-fs         the data directory on a small tmpfs filled to a random few kB (in a user
                    namespace: `unshare --map-root-user --map-auto -m`), then runs of every kind
    malformed       bad flags and values, each with and without -d

After each fault: no process, mount, storage, name, runtime file, lock or cgroup of the
campaign is left once rl has tidied (`rl ps -a`, `rl rm -a -f` or `rl system prune`); `rl ps -a`
lists exactly the containers in storage and no dead `--rm` one; exit codes are the issue's
(128+N for a signal, 125 for rl's own errors, the command's code otherwise); no traceback.

Everything runs below a temporary directory of its own (its path is the marker that finds
its processes): other users' and other sessions' containers are never touched. Prints one
line per failure and a table; exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CID = re.compile(r"[0-9a-f]{64}")
# Runtime entries that are shared caches, not a container's.
SHARED_RUNTIME = {"net", "seccomp", "locks"}
IMAGE = "localhost/fault-campaign/busybox:latest"


@dataclass
class Kind:
    """One kind of fault: how many faults it injected in how many rounds (a round is one
    fault and its checks, or several faults at once), and what failed in which round."""

    name: str
    faults: int = 0
    rounds: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_rounds(self) -> int:
        return len({rnd for rnd, _ in self.failures})


class Campaign:
    """The rl under test, its isolated XDG directories and the checks after each fault."""

    def __init__(self, rl: str, base: Path, seed: int, verbose: bool) -> None:
        self.rl = rl
        self.base = base
        self.marker = str(base)
        self.rnd = random.Random(seed)
        self.verbose = verbose
        self.env = dict(os.environ)
        for name, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                          ("XDG_RUNTIME_DIR", "run")):
            (base / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            self.env[name] = str(base / sub)
        self.data = base / "data" / "rootless"
        self.runtime = base / "run" / "rootless"
        self.rootfs = base / "rootfs"
        self.kind: Kind | None = None
        self.round = 0
        self.new_dirs_waited = 0  # tidy() waited for a `.new-<id>` to be old enough to sweep
        self.cases: list[tuple[list[str], str]] | None = None  # the malformed inputs
        self.cgroups_before = cgroup_dirs()
        self.deadline = float("inf")

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    # -- running rl ----------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [self.rl, *args]

    def __call__(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None,
                 check_traceback: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=env or self.env,
                                stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"rl {' '.join(args)[:120]}: no answer within {timeout} s; "
                      f"{self.describe_stuck(proc.pid)}")
            proc.kill()
            out, err = proc.communicate()
            return subprocess.CompletedProcess(proc.args, -1, out, err)
        r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check_traceback:
            self.no_traceback(f"rl {' '.join(args)[:80]}", r.stderr)
        return r

    def describe_stuck(self, pid: int) -> str:
        """Where a process that does not answer waits, and the campaign's other processes."""
        def where(p: int) -> str:
            try:
                wchan = Path(f"/proc/{p}/wchan").read_text()
                fds = {fd: os.readlink(f"/proc/{p}/fd/{fd}") for fd in os.listdir(f"/proc/{p}/fd")}
            except OSError:
                return f"{p} gone"
            return f"{p} ({comm(p)}) in {wchan}, fds {fds}"
        others = [f"{p} {comm(p)} {'runs' if process_runs(p) else 'zombie'}"
                  for p in processes_with(self.marker) if p != pid]
        return f"{where(pid)}; others: {others}"

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                errors="replace")

    def run_bb(self, *opts: str) -> list[str]:
        """The args of `rl run OPTS --rootfs BUSYBOX` (the command follows)."""
        return ["run", *opts, "--rootfs", str(self.rootfs)]

    # -- verdicts ------------------------------------------------------------------------

    def fail(self, text: str) -> None:
        assert self.kind is not None
        self.kind.failures.append((self.round, text))
        print(f"  FAIL {self.kind.name} #{self.round}: {text}", flush=True)

    def expect(self, ok: bool, text: str) -> bool:
        if not ok:
            self.fail(text)
        return ok

    def no_traceback(self, what: str, stderr: str) -> None:
        if "Traceback" in stderr or "Exception ignored" in stderr:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            self.fail(f"{what}: traceback: {tail}")

    # -- what may be left ----------------------------------------------------------------

    def leftovers(self, data: Path | None = None, runtime: Path | None = None) -> list[str]:
        """Storage, names, runtime records, locks, helpers' files, processes, host mounts and
        cgroups of this campaign."""
        data = data or self.data
        runtime = runtime or self.runtime
        found: list[str] = []
        for sub in ("containers", "names"):
            d = data / sub
            if d.exists():
                found += [f"{sub}/{p.name}" for p in d.iterdir()]
        if runtime.exists():
            found += [f"runtime/{p.name}" for p in runtime.iterdir() if p.name not in SHARED_RUNTIME]
            for sub in ("locks", "net"):
                d = runtime / sub
                if d.exists():
                    found += [f"runtime/{sub}/{p.name}" for p in d.iterdir()]
        found += [f"process {pid} ({comm(pid)})" for pid in processes_with(self.marker)]
        mounts = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {line.split()[4]}" for line in mounts.splitlines()
                  if self.marker in line and "/small" not in line.split()[4]]
        found += [f"cgroup {d}" for d in cgroup_dirs() - self.cgroups_before]
        return found

    def settle(self, timeout: float = 10.0, **kw: Path) -> list[str]:
        """Leftovers once what dies with rl (PR_SET_PDEATHSIG) had time to go."""
        end = time.monotonic() + timeout
        while True:
            left = self.leftovers(**kw)
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.05)

    def ps(self) -> list[dict]:
        r = self("ps", "-a", "--format", "json")
        if not self.expect(r.returncode == 0, f"rl ps -a: {r.returncode} {r.stderr.strip()}"):
            return []
        try:
            return json.loads(r.stdout or "[]")
        except ValueError:
            self.fail(f"rl ps -a --format json: not JSON: {r.stdout[:200]!r}")
            return []

    def check_ps(self, what: str) -> list[dict]:
        """`rl ps -a` lists exactly the containers in storage, no dead --rm one, and no
        container "running" whose PID 1 is gone."""
        listed = self.ps()
        ids = {c["Id"] for c in listed}
        stored = {p.name for p in (self.data / "containers").glob("*") if CID.fullmatch(p.name)}
        self.expect(ids == stored, f"{what}: rl ps -a lists {sorted(i[:12] for i in ids)}, "
                                   f"storage holds {sorted(i[:12] for i in stored)}")
        for x in listed:
            running = x["State"] == "running"
            if x["AutoRemove"] and not running and not self.still_starting(x["Id"]):
                self.fail(f"{what}: a dead --rm container is listed: {x['ID']} {x['Status']}")
            if running and not process_runs(x["Pid"]):
                self.fail(f"{what}: {x['ID']} is listed running with PID 1 {x['Pid']} gone")
        return listed

    def still_starting(self, cid: str) -> bool:
        """A container listed "created" whose monitor is still starting it (rl run -d killed
        after it forked the monitor): running or gone within seconds."""
        return bool(until(lambda: not [x for x in self.ps() if x["Id"] == cid
                                        and x["State"] not in ("running",)], timeout=5))

    def tidy(self, what: str, prune: bool = False) -> None:
        """Remove every container the way a user would, then nothing may be left."""
        if prune:
            r = self("system", "prune", "-f")
            self.expect(r.returncode == 0, f"{what}: system prune: {r.returncode} {r.stderr.strip()}")
            running = [c for c in self.ps() if c["State"] in ("running", "created")]
            self.expect(all(c["State"] == "running" or not c["AutoRemove"] for c in running),
                        f"{what}: prune left {[c['ID'] for c in running]}")
        r = self("rm", "-a", "-f")
        self.expect(r.returncode == 0, f"{what}: rm -a -f: {r.returncode} {r.stderr.strip()}")
        left = self.settle()
        if left and all(x.startswith("runtime/.new-") for x in left):
            # A run killed while it made its runtime directory (mkdir, flock, rename) leaves
            # `.new-<id>`; a sweep may take it only when it is 10 s old, since a live creator's
            # is unlocked for an instant too (rootless.runtime.sweep.NEW_DIR_GRACE).
            self.new_dirs_waited += 1
            time.sleep(11)
            self("ps", "-a")
            left = self.leftovers()
        self.expect(not left, f"{what}: left behind: {left}")
        if left:  # start the next iteration clean, whatever this one left
            self.reset()

    def reset(self) -> None:
        """Kill what the campaign started that is still there, remove every container."""
        for pid in processes_with(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self("rm", "-a", "-f")


# -- host views ----------------------------------------------------------------------------

def processes_with(marker: str) -> list[int]:
    """Pids (not this one's) whose command line or environment holds marker: rl's XDG
    directories are in the environment of rl, its monitor, logger, helper, PID 1 before its
    exec and the network helpers; commands inside keep it in no variable, but die with PID 1."""
    needle = marker.encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in Path(f"/proc/{entry}/{part}").read_bytes():
                    out.append(int(entry))
                    break
            except OSError:
                continue
    return out


def process_runs(pid: int | None) -> bool:
    """pid exists and is not a zombie (a dead process its parent, or init, has not reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text() if pid else ""
    except OSError:
        return False
    return bool(stat) and stat[stat.rfind(")") + 2] not in "ZX"


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def cgroup_dirs() -> set[str]:
    """Directories named like rl's container cgroups (rl-<id>...) under the cgroup2 mount."""
    mount = next((line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if " - cgroup2 " in line), None)
    if mount is None:
        return set()
    out = set()
    for dirpath, dirnames, _ in os.walk(mount):
        out.update(os.path.join(dirpath, d) for d in dirnames if d.startswith("rl-"))
        if dirpath.count("/") - mount.count("/") > 6:
            dirnames.clear()
    return out


def children(pid: int) -> dict[int, str]:
    """Direct children of pid -> their name (comm, or argv[0]'s base name)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv0 = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
            out[int(entry)] = f"{comm(int(entry))} {os.path.basename(argv0)}"
    return out


def until(pred: Callable[[], object], timeout: float = 10.0) -> object:
    end = time.monotonic() + timeout
    while True:
        got = pred()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.05)


# -- the kinds -----------------------------------------------------------------------------

KILL_VARIANTS = [
    ("fg none", ["--network", "none"]),
    ("fg network", []),
    ("--rm none", ["--rm", "--network", "none"]),
    ("--rm network", ["--rm"]),
    ("-d", ["-d", "--network", "none"]),
    ("-d --rm network", ["-d", "--rm"]),
    ("--rm --name", ["--rm", "--name", "dead", "--network", "none"]),
]


def kill_round(c: Campaign, rnd: int) -> int:
    """Every variant at once, each SIGKILLed at its own moment in 0-300 ms; then the next rl
    must see all that is left. Two rounds in three: a run takes a dead --rm container's name,
    ps lists what is left (dead --rm ones gone), rm -a or system prune removes the rest; the
    third: `rl rm -a -f` at once, with no other rl having looked first."""
    moments = [c.rnd.uniform(0, 0.3) for _ in KILL_VARIANTS]
    start = time.monotonic()
    procs = [subprocess.Popen(c.argv(*c.run_bb(*opts), "sleep", "2"), env=c.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, errors="replace")
             for _, opts in KILL_VARIANTS]
    for k in sorted(range(len(procs)), key=lambda k: moments[k]):
        time.sleep(max(0.0, start + moments[k] - time.monotonic()))
        procs[k].kill()
    for (label, _), proc in zip(KILL_VARIANTS, procs, strict=True):
        _, err = proc.communicate(timeout=60)
        c.no_traceback(f"killed {label}", err)
    what = "round {} ({})".format(rnd, ", ".join(
        f"{label}@{m * 1000:.0f}ms" for (label, _), m in zip(KILL_VARIANTS, moments, strict=True)))
    if rnd % 3 == 2:
        c.tidy(what + " rm -a -f at once")
        return len(procs)
    # The dead --rm container's name is free for the next run, before anything tidied.
    r = c(*c.run_bb("--rm", "--name", "dead", "--network", "none"), "true")
    c.expect(r.returncode == 0, f"{what}: run --name dead after the kills: {r.returncode} "
                                f"{r.stderr.strip()}")
    c.check_ps(what)
    c.tidy(what, prune=bool(rnd % 2))
    return len(procs)


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


def python_was_starting(code: int, sig: int, err: str) -> bool:
    """The signal came before rl's first line installed its handlers: the default action ended
    the interpreter (-N), or Python's own KeyboardInterrupt during start-up (its site module,
    an editable install's finder). Nothing of a container exists yet then."""
    return code == -sig or (sig == signal.SIGINT and "KeyboardInterrupt" in err
                            and "/rootless/" not in err)


EARLY_VARIANTS = [["--rm", "--network", "none"], ["--rm"], ["--network", "none"], ["-d", "--rm"]]


def signal_early_round(c: Campaign, rnd: int) -> int:
    """A signal at 0-150 ms: rl ends with 128+N whether it stopped the start-up (Error:
    interrupted) or the command had the signal (--init forwards it to sleep); `rl run -d`
    either stops the start-up so or has printed the id of a running container."""
    sig = SIGNALS[rnd % 3]
    opts = EARLY_VARIANTS[(rnd // 3) % len(EARLY_VARIANTS)]
    delay = c.rnd.uniform(0, 0.15)
    what = f"{sig.name}@{delay * 1000:.0f}ms {' '.join(opts)}"
    t0 = time.monotonic()
    proc = c.popen(*c.run_bb(*opts, "--init"), "sleep", "5")
    time.sleep(delay)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    code = proc.returncode
    if python_was_starting(code, sig, err):
        pass  # (Python prints its KeyboardInterrupt there: not rl's traceback)
    elif "-d" in opts and code == 0:
        c.expect(bool(CID.fullmatch(out.strip())), f"{what}: rl run -d printed {out!r}")
        c.no_traceback(what, err)
    else:
        c.expect(code == 128 + sig, f"{what}: exit {code}, not {128 + sig}: {err.strip()}")
        c.expect(took < 4.5, f"{what}: the signal was lost (the run took {took:.1f} s)")
        c.no_traceback(what, err)
    if "--rm" not in opts or "-d" in opts:
        c.check_ps(what)
    c.tidy(what)
    return 1


TRAP = 'trap "exit 100" TERM INT HUP; echo up; i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done'


def signal_late_round(c: Campaign, rnd: int) -> int:
    """A signal once the command runs: the container gets it. With --init, sleep dies of it
    (128+N); without, PID 1 is a shell whose trap exits 100."""
    sig = SIGNALS[rnd % 3]
    init = (rnd // 3) % 2 == 0
    net = ["--network", "none"] if (rnd // 6) % 2 == 0 else []
    what = f"{sig.name} late {'--init' if init else 'trap'} {' '.join(net) or 'network'}"
    cmd = ["sh", "-c", "echo up; exec sleep 5"] if init else ["sh", "-c", TRAP]
    proc = c.popen(*c.run_bb("--rm", *(["--init"] if init else []), *net), *cmd)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not c.expect(line == "up\n", f"{what}: the command did not start: {line!r}"):
        proc.kill()
    time.sleep(c.rnd.uniform(0, 0.1))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    c.no_traceback(what, err)
    want = 128 + sig if init else 100
    c.expect(proc.returncode == want, f"{what}: exit {proc.returncode}, not {want}: {err.strip()}")
    c.tidy(what)
    return 1


def parallel_round(c: Campaign, rnd: int, width: int) -> int:
    """`width` runs at once with networking (the default, then pasta): each must see an
    interface with an address."""
    net = [] if rnd % 2 == 0 else ["--network", "pasta"]
    what = f"{width} parallel, {'pasta' if net else 'default network'}"

    def one(i: int) -> subprocess.CompletedProcess:
        return c(*c.run_bb("--rm", *net), "sh", "-c",
                 f"ip -o -4 addr | grep -v ' lo ' | grep -q inet && echo ok{i}", timeout=300)

    with ThreadPoolExecutor(width) as pool:
        results = list(pool.map(one, range(width)))
    bad = [(i, r.returncode, r.stderr.strip()[-200:]) for i, r in enumerate(results)
           if r.returncode != 0 or r.stdout != f"ok{i}\n"]
    c.expect(not bad, f"{what}: {len(bad)} failed: {bad[:3]}")
    c.check_ps(what)
    c.tidy(what)
    return width


def names_round(c: Campaign, rnd: int) -> int:
    """Ten concurrent claims of one name: one winner, nine `already in use` (125), ps lists
    the one, rm removes it and frees the name. Foreground --rm rounds: winners never overlap."""
    name = f"same{rnd}"
    detached = rnd % 3 != 2
    what = f"round {rnd} {'-d' if detached else '--rm foreground'}"
    if detached:
        args = c.run_bb("-d", "--name", name, "--network", "none") + ["sleep", "1000"]
    else:
        args = c.run_bb("--rm", "--name", name, "--network", "none") + [
            "sh", "-c", "cut -d' ' -f1 /proc/uptime; sleep 1; cut -d' ' -f1 /proc/uptime"]
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda _: c(*args), range(10)))
    winners = [r for r in results if r.returncode == 0]
    for r in results:
        if r.returncode != 0:
            c.expect(r.returncode == 125 and "already in use" in r.stderr,
                     f"{what}: a loser said {r.returncode} {r.stderr.strip()[-200:]}")
    if detached:
        c.expect(len(winners) == 1, f"{what}: {len(winners)} winners")
        listed = [x for x in c.check_ps(what) if name in x["Names"]]
        c.expect([x["Id"] for x in listed] == [w.stdout.strip() for w in winners],
                 f"{what}: ps lists {[x['ID'] for x in listed]} as {name}")
        r = c("rm", "-f", name)
        c.expect(r.returncode == 0, f"{what}: rm -f {name}: {r.stderr.strip()}")
        r = c("inspect", name)
        c.expect(r.returncode != 0, f"{what}: a second container answered to {name} after rm")
    else:
        spans = sorted(tuple(float(x) for x in w.stdout.split()) for w in winners)
        c.expect(len(spans) >= 1, f"{what}: no winner")
        for a, b in zip(spans, spans[1:]):  # noqa: B905 (one shorter by design)
            c.expect(a[1] <= b[0], f"{what}: two containers named {name} ran at once {a} {b}")
    c.tidy(what)
    return 10


DETACHED_PARTS = ["monitor", "logger", "helper", "pid1", "slirp4netns", "pasta"]
TICKER = "i=0; while :; do echo tick$i; i=$((i+1)); sleep 0.1; done"


def detached_round(c: Campaign, rnd: int) -> int:
    """SIGKILL one process of a detached container. The monitor, the helper or PID 1: the
    container ends and is listed exited at once (PID 1: 137); the logger: restarted, the
    output goes on; the network helper: the container runs on, listed `(no network)`."""
    part = DETACHED_PARTS[rnd % len(DETACHED_PARTS)]
    net = part if part in ("slirp4netns", "pasta") else ("slirp4netns" if rnd % 2 else "none")
    what = f"kill {part} (network {net})"
    r = c(*c.run_bb("-d", "--name", f"part{rnd}", "--network", net), "sh", "-c", TICKER)
    if not c.expect(r.returncode == 0, f"{what}: run -d: {r.returncode} {r.stderr.strip()}"):
        c.tidy(what)
        return 1
    cid = r.stdout.strip()
    state = json.loads((c.runtime / cid / "state.json").read_text())
    monitor, pid1 = int(state["owner"]), int(state["pid"])
    kids = children(monitor)
    target = {"monitor": monitor, "pid1": pid1, "helper": int(state["helper"])}.get(part)
    if target is None:
        wanted = {"logger": "rl:[logger]", "slirp4netns": "slirp4netns", "pasta": "pasta"}[part]
        found = [p for p, n in kids.items() if wanted in n.split()]
        if not c.expect(len(found) == 1, f"{what}: children of the monitor: {kids}"):
            c.tidy(what)
            return 1
        target = found[0]

    def lines() -> int:
        return c("logs", cid).stdout.count("\n")

    def listed_state() -> list[str]:
        return [x["State"] for x in c.ps() if x["Id"] == cid]

    until(lambda: lines() > 3)
    os.kill(target, signal.SIGKILL)
    if part in ("monitor", "helper", "pid1"):
        # PID 1 dies with its helper and the helper with the monitor (PR_SET_PDEATHSIG);
        # once PID 1 is dead, rl ps may say "Up" only for the instant the monitor takes to
        # record the exit (a killed monitor that init has not reaped yet is dead too).
        c.expect(bool(until(lambda: not process_runs(pid1))), f"{what}: PID 1 survived")
        c.expect(bool(until(lambda: listed_state() == ["exited"], timeout=0.5)),
                 f"{what}: listed {listed_state()} after PID 1 died")
        if part == "pid1":
            r = c("wait", cid)
            c.expect(r.stdout.strip() == "137", f"{what}: rl wait says {r.stdout.strip()!r} "
                                                f"{r.stderr.strip()}")
    elif part == "logger":
        before = lines()
        c.expect(bool(until(lambda: lines() > before + 5)), f"{what}: the output stopped at {before} lines")
        c.expect(listed_state() == ["running"], f"{what}: the container is no longer running")
    else:
        c.expect(bool(until(lambda: "(no network)" in c("ps").stdout)),
                 f"{what}: rl ps does not say (no network)")
    c.check_ps(what)
    c.tidy(what)
    return 1


def malformed_cases(c: Campaign) -> list[tuple[list[str], str]]:
    """(rl run's arguments, what the first line of the error must name): each case in the
    foreground and with -d."""
    env_file = c.base / "bad.env"
    env_file.write_bytes(b"A=1\nB=\xff\xfe\n")
    bb = str(c.rootfs)
    cases: list[tuple[list[str], str]] = [
        (["--stop-signal", "FOO"], "--stop-signal"), (["--stop-signal", "0"], "--stop-signal"),
        (["--stop-signal", "99"], "--stop-signal"), (["--dns", "notanip"], "--dns"),
        (["--dns", "1.2.3"], "--dns"), (["--add-host", "foo:notanip"], "--add-host"),
        (["--add-host", "nocolon"], "--add-host"), (["--log-level", "bogus"], "--log-level"),
        (["-e", "A\nB=1"], "-e"), (["-e", "=1"], "-e"), (["--user", "99999999999"], "--user"),
        (["--user", "-1"], "--user"), (["--user", "1:99999999999"], "--user"),
        (["--name", "n" * 300], "--name"), (["--name", "a/b"], "name"),
        (["--name", "-x"], "name"), (["--name", ""], "name"),
        (["--env-file", str(env_file)], "--env-file"),
        (["--env-file", str(c.base / "missing.env")], "--env-file"),
        (["--memory", "lots"], "--memory"), (["--memory", "-1"], "--memory"),
        (["--cpus", "x"], "--cpus"), (["--cpus", "-2"], "--cpus"),
        (["--pids-limit", "x"], "--pids-limit"), (["--shm-size", "big"], "--shm-size"),
        (["-p", "99999:80"], "-p"), (["-p", "abc"], "-p"), (["-p", "80:80/sctpx"], "-p"),
        (["-v", "relative/dir:/x"], "volume"), (["-v", f"{bb}:relative"], "volume"),
        (["-v", "/nonexistent-fault-campaign:/x"], "/nonexistent"),
        (["--mount", "type=bogus,dst=/x"], "--mount"), (["--tmpfs", "relative"], "--tmpfs"),
        (["--restart", "sometimes"], "restart policy"), (["--timeout", "-1"], "--timeout"),
        (["--timeout", "soon"], "--timeout"), (["--ulimit", "nofile=x"], "--ulimit"),
        (["--ulimit", "bogus=1"], "--ulimit"), (["--cap-add", "BOGUS"], "capability"),
        (["--security-opt", "bogus"], "--security-opt"),
        (["--security-opt", "seccomp=/nonexistent.json"], "seccomp"),
        (["--network", "no-such-network"], "no-such-network"),
        (["--network", "none:opts"], "--network"), (["--network", "pasta:--bogus-option"], "pasta"),
        (["--userns", "bogus"], "--userns"), (["--pull", "sometimes"], "--pull"),
        (["--hostname", "a" * 300], "hostname"), (["--log-opt", "max-size=lots"], "size"),
        (["--profile", "no-such-profile"], "no-such-profile"),
        (["--bogus-flag"], "--bogus-flag"),
    ]
    rootfs_cases: list[tuple[list[str], str]] = [
        (["--rootfs", str(c.base / "no-such-rootfs")], "no-such-rootfs"),
        (["--rootfs", str(env_file)], str(env_file)),
    ]
    image_cases: list[tuple[list[str], str]] = [
        (["--network", "none", "UPPER/Case"], "UPPER/Case"),
        (["--network", "none", "a:b:c"], "a:b:c"), (["--network", "none", "--pull", "never",
                                                     "localhost/no-such-image"], "no-such-image"),
        ([], "arg"),
    ]
    once = [*((o + ["--rootfs", bb, "true"], n) for o, n in cases),
            *((o + ["true"], n) for o, n in rootfs_cases),
            *((o + (["true"] if o else []), n) for o, n in image_cases)]
    return [(["--rm", *opts], n) for opts, n in once] + [(["-d", "--rm", *opts], n) for opts, n in once]


def malformed_round(c: Campaign, rnd: int) -> int:
    """A bad input: exit 125 (podman's code for these), `Error:` naming what is wrong on the
    first line, no traceback, nothing created (once a -d monitor has tidied up)."""
    if c.cases is None:
        c.cases = malformed_cases(c)
    opts, named = c.cases[rnd % len(c.cases)]
    args = ["run", *opts]
    what = " ".join(a if len(a) < 40 else a[:37] + "..." for a in args)
    r = c(*args)
    first = (r.stderr.splitlines() or [""])[0]
    c.expect(r.returncode == 125, f"{what!r}: exit {r.returncode}: {r.stderr.strip()[-200:]}")
    c.expect(first.startswith("Error:") and named in first,
             f"{what!r}: the first line does not name {named!r}: {first!r}")
    left = c.settle()
    c.expect(not left, f"{what!r}: left {left}")
    if left:
        c.tidy(what)
    return 1


# -- the data directory on a small full file system ----------------------------------------

def full_fs_kind(c: Campaign, rounds: int) -> int:
    """Re-runs this script inside `unshare --map-root-user --map-auto -m`, where an
    unprivileged user may mount a tmpfs, with that tmpfs as XDG_DATA_HOME; its rounds are
    reported back as JSON."""
    assert c.kind is not None
    (c.base / "small").mkdir(exist_ok=True)
    cmd = ["unshare", "--map-root-user", "--map-auto", "--mount", sys.executable, __file__,
           "--inner-full-fs", str(c.base), "--rl", c.rl, "--rounds", str(rounds),
           "--seed", str(c.rnd.randrange(1 << 30)), "--archive", str(c.base / "image.tar"),
           "--budget", str(max(0.0, c.deadline - time.monotonic()))]
    r = subprocess.run(cmd, capture_output=True, text=True, env=c.env, timeout=1800)
    if r.returncode != 0 or not r.stdout.strip():
        c.fail(f"the full-fs runner failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        return 0
    report = json.loads(r.stdout.strip().splitlines()[-1])
    for rnd, text in report["failures"]:
        c.round = rnd
        c.fail(text)
    c.kind.rounds = int(report["rounds"])
    return int(report["rounds"])


def inner_full_fs(base: Path, rl: str, rounds: int, seed: int, archive: Path, budget: float) -> None:
    """Inside the user namespace: mount a 16 MiB tmpfs on base/small, load the image there,
    fill the tmpfs to a random few kB of free space, and try runs of every kind."""
    small = base / "small"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    c = Campaign(rl, base, seed, verbose=False)
    c.kind = Kind("full-fs")
    c.deadline = time.monotonic() + budget
    c.env["XDG_DATA_HOME"] = str(small)
    data = small / "rootless"
    r = c("load", "-i", str(archive))
    c.expect(r.returncode == 0, f"rl load on the small tmpfs: {r.stderr.strip()}")
    variants = [
        ("--rootfs --rm", c.run_bb("--rm", "--network", "none") + ["true"]),
        ("--rootfs", c.run_bb("--network", "none") + ["true"]),
        ("--rootfs -d", c.run_bb("-d", "--network", "none") + ["sleep", "1"]),
        ("--rootfs --name", c.run_bb("--name", "full", "--network", "none") + ["true"]),
        ("image --rm", ["run", "--rm", "--network", "none", IMAGE, "true"]),
        ("image -d --rm", ["run", "-d", "--rm", "--network", "none", IMAGE, "sleep", "1"]),
        ("image network", ["run", "--rm", IMAGE, "true"]),
    ]
    fill = small / "fill"
    done = 0
    for rnd in range(rounds):
        if c.out_of_time():
            break
        c.round = rnd
        label, args = variants[rnd % len(variants)]
        free_kb = c.rnd.choice([0, 0, 1, 2, 4, 8, 12, 16, 24, 32, 48, 64])
        fill.unlink(missing_ok=True)
        stat = os.statvfs(small)
        size = max(0, stat.f_bavail * stat.f_frsize - free_kb * 1024)
        with open(fill, "wb") as f:
            try:
                f.write(b"\0" * size)
                f.flush()
            except OSError:  # ENOSPC: as full as it gets
                pass
        what = f"{label}, {free_kb} kB free"
        r = c(*args)
        done += 1
        if r.returncode != 0:
            first = (r.stderr.splitlines() or [""])
            errors = [line for line in first if line.startswith("Error:")]
            c.expect(r.returncode == 125, f"{what}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
            c.expect(len(errors) == 1 and ("ENOSPC" in errors[0] or "space" in errors[0]),
                     f"{what}: no Error naming the full file system: {r.stderr.strip()[-300:]}")
        # Whatever happened, the store stays coherent, and rm -a -f (with room again) empties it.
        fill.unlink(missing_ok=True)
        r = c("ps", "-a", "--format", "json")
        c.expect(r.returncode == 0, f"{what}: ps after: {r.stderr.strip()}")
        listed = {x["Id"] for x in json.loads(r.stdout or "[]")} if r.returncode == 0 else set()
        stored = {p.name for p in (data / "containers").glob("*") if CID.fullmatch(p.name)}
        c.expect(listed == stored, f"{what}: ps lists {len(listed)}, storage holds {len(stored)}")
        r = c("rm", "-a", "-f")
        c.expect(r.returncode == 0, f"{what}: rm -a -f: {r.stderr.strip()}")
        left = c.settle(data=data)
        c.expect(not left, f"{what}: left {left}")
        if left:
            c.reset()
    print(json.dumps({"rounds": done, "failures": c.kind.failures}))


# -- set-up --------------------------------------------------------------------------------

def build_rootfs(dest: Path) -> None:
    subprocess.run([str(REPO / "scripts" / "build-busybox-rootfs.sh"), str(dest)], check=True,
                   stdout=subprocess.DEVNULL)


def write_image_archive(rootfs: Path, dest: Path) -> None:
    """A docker-archive (`docker save`'s format) of the rootfs, for `rl load`."""
    import hashlib
    import io

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                                    "Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [IMAGE],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as tar:
        for name, data in (("layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# name -> (one round: returns the faults it injected, rounds at --scale 1)
ROUNDS: dict[str, tuple[Callable[[Campaign, int], int], int]] = {
    "kill": (kill_round, 30),                      # 7 kills a round
    "signal-early": (signal_early_round, 90),
    "signal-late": (signal_late_round, 36),
    "parallel-20": (lambda c, rnd: parallel_round(c, rnd, 20), 4),
    "parallel-50": (lambda c, rnd: parallel_round(c, rnd, 50), 2),
    "names": (names_round, 24),                    # 10 claims a round
    "detached": (detached_round, 36),
    "malformed": (malformed_round, 112),           # 56 inputs, foreground and -d
}
FULL_FS_ROUNDS = 42  # a kind of its own: its rounds run in a user namespace (full_fs_kind)
KIND_NAMES = [*list(ROUNDS)[:-1], "full-fs", "malformed"]


def run_kind(c: Campaign, name: str, scale: float) -> None:
    assert c.kind is not None
    if name == "full-fs":
        c.kind.faults = full_fs_kind(c, max(1, round(FULL_FS_ROUNDS * scale)))
        return
    fn, rounds = ROUNDS[name]
    for rnd in range(max(1, round(rounds * scale))):
        if c.out_of_time():
            break
        c.round = rnd
        c.kind.faults += fn(c, rnd)
        c.kind.rounds += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rl", default=shutil.which("rl"), help="the rl to test (default: on PATH)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every kind's iterations")
    ap.add_argument("--only", default="", help="comma-separated kind names or prefixes")
    ap.add_argument("--budget", type=float, default=1200, help="seconds before no new iteration starts")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--inner-full-fs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner_full_fs:
        inner_full_fs(args.inner_full_fs, args.rl, args.rounds, args.seed, args.archive,
                      args.budget)
        return 0
    if os.geteuid() == 0:
        sys.exit("fault-campaign: run it as the unprivileged user that runs containers, not root")
    # Under nohup SIGHUP is ignored, and in a shell script's background job SIGINT is; an
    # ignored signal stays ignored across exec, so an rl that gets one before its first line
    # would not die of it, which the signal kinds would count as a lost signal. The children
    # start with the default dispositions.
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if not args.rl:
        sys.exit("fault-campaign: no rl on PATH (use --rl)")
    wanted = [k for k in KIND_NAMES if not args.only or
              any(k.startswith(p.strip()) for p in args.only.split(","))]
    # Short: the sockets of rl's runtime directory live below it (at most 107 bytes).
    base = Path(tempfile.mkdtemp(prefix="rlfc-", dir=os.environ.get("TMPDIR", "/tmp")))
    print(f"fault-campaign: rl {args.rl}, seed {args.seed}, base {base}", flush=True)
    c = Campaign(args.rl, base, args.seed, args.verbose)
    c.deadline = time.monotonic() + args.budget
    results: list[Kind] = []
    try:
        build_rootfs(c.rootfs)
        write_image_archive(c.rootfs, base / "image.tar")
        for name in wanted:
            c.kind = Kind(name)
            t0 = time.monotonic()
            print(f"{name}: ...", flush=True)
            run_kind(c, name, args.scale)
            c.kind.seconds = time.monotonic() - t0
            results.append(c.kind)
    finally:
        c.kind = c.kind or Kind("set-up")
        c.reset()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(f"{'kind':<14} {'faults':>7} {'rounds':>7} {'failed rounds':>14} {'failures':>9} {'seconds':>8}")
    for k in results:
        print(f"{k.name:<14} {k.faults:>7} {k.rounds:>7} {k.failed_rounds:>14} "
              f"{len(k.failures):>9} {k.seconds:>8.0f}")
    failed = sum(len(k.failures) for k in results)
    print(f"{'total':<14} {sum(k.faults for k in results):>7} {sum(k.rounds for k in results):>7} "
          f"{sum(k.failed_rounds for k in results):>14} {failed:>9} "
          f"{sum(k.seconds for k in results):>8.0f}")
    if c.new_dirs_waited:
        print(f"({c.new_dirs_waited} times a killed run's .new-<id> directory was swept only "
              "after its 10 s grace)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
