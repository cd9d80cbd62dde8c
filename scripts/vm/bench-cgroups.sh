#!/bin/sh
# What cgroup set-up adds to `rl run`'s start-up, measured where cgroup v2 is real (the UML
# guest of run-in-vm.sh): `rl run --rm --network none [--memory 64m --pids-limit 100]
# --rootfs BB true`, the two alternating in one guest, medians of N runs each (default 21).
# Note that every syscall in the guest bounces through ptrace, so absolute times are several
# times the host's; the difference is what matters.
#   scripts/vm/bench-cgroups.sh [N]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-21}
exec "$here/run-in-vm.sh" "
set -e
# The guest sees the tree read-only: compiled modules go to a cache of its own, which the
# warm-up runs fill, so no run pays for compiling a module that changed since the host ran it.
export PYTHONPYCACHEPREFIX=/tmp/rl-pycache
scripts/build-busybox-rootfs.sh /tmp/bb >/dev/null
python3 - $runs <<'PY'
import statistics, subprocess, sys, time
runs = int(sys.argv[1])
base = ['rl', 'run', '--rm', '--network', 'none']
cases = {'no limits': base + ['--rootfs', '/tmp/bb', 'true'],
         '--memory 64m --pids-limit 100': base + ['--memory', '64m', '--pids-limit', '100',
                                                   '--rootfs', '/tmp/bb', 'true']}
times = {name: [] for name in cases}
for name, argv in cases.items():  # warm-up: page cache, first evacuation of the cgroup
    subprocess.run(argv, check=True)
for _ in range(runs):
    for name, argv in cases.items():
        t = time.perf_counter()
        subprocess.run(argv, check=True)
        times[name].append((time.perf_counter() - t) * 1000)
med = {name: statistics.median(v) for name, v in times.items()}
for name, v in times.items():
    print(f'{name:32s} median {med[name]:7.1f} ms  min {min(v):7.1f}  max {max(v):7.1f}  (n={len(v)})')
print(f'added by cgroups (median difference): {med[\"--memory 64m --pids-limit 100\"] - med[\"no limits\"]:+.1f} ms')
PY
# The same steps in one process, without the noise of whole runs: what rl's launcher calls.
python3 - $runs <<'PY'
import os, statistics, subprocess, sys, time
from rootless.cgroups import prepare_cgroup
from rootless.spec import Limits, RunSpec
spec = RunSpec(limits=Limits(memory=64 << 20, pids=100))
steps = {'prepare_cgroup': [], 'create_and_attach': [], 'remove': []}
for _ in range(int(sys.argv[1])):
    child = subprocess.Popen(['sleep', '5'])
    t0 = time.perf_counter()
    cg = prepare_cgroup(spec, os.urandom(16).hex(), lambda line: None)
    t1 = time.perf_counter()
    cg.create_and_attach(child.pid)
    t2 = time.perf_counter()
    child.kill()
    child.wait()
    t3 = time.perf_counter()
    cg.remove()
    t4 = time.perf_counter()
    for name, ms in zip(steps, ((t1 - t0) * 1000, (t2 - t1) * 1000, (t4 - t3) * 1000)):
        steps[name].append(ms)
for name, v in steps.items():
    print(f'{name:32s} median {statistics.median(v):7.2f} ms')
print(f'cgroup steps in all (medians): {sum(statistics.median(v) for v in steps.values()):.2f} ms')
PY
"
