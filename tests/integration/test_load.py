"""Under load, nothing accumulates: the runtime directory holds as many files after 50 runs as
before (issue 13 item 10: locks/ gained two files per container), and 50 parallel runs with
networking all succeed and leave no process, mount, state file or storage (the load proof)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.integration.test_faults import settle

pytestmark = pytest.mark.integration


def files_under(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        out += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return sorted(out)


def test_runtime_dir_holds_as_many_files_after_fifty_runs(rl, busybox_rootfs):
    need_tool("pasta")
    rootfs = str(busybox_rootfs)

    def cycle(i: int) -> None:
        """One of the ways a container comes and goes (default network: pasta)."""
        kind = i % 5
        if kind == 0:
            r = rl("run", "--rm", "--rootfs", rootfs, "true")
        elif kind == 1:
            r = rl("run", "--rm", "--name", f"n{i}", "--rootfs", rootfs, "true")
        elif kind == 2:
            r = rl("run", "--name", f"k{i}", "--network", "none", "--rootfs", rootfs, "true")
            assert r.returncode == 0, r.stderr
            r = rl("rm", f"k{i}")
        elif kind == 3:
            r = rl("run", "-d", "--name", f"d{i}", "--rootfs", rootfs, "sleep", "100")
            assert r.returncode == 0, r.stderr
            assert rl("ps", "-q").stdout  # readers take locks too
            r = rl("rm", "-f", f"d{i}")
        else:
            r = rl("run", "-d", "--rm", "--network", "none", "--rootfs", rootfs, "true")
            assert r.returncode == 0, r.stderr
            r = rl("wait", r.stdout.strip())  # a --rm container may be gone already: fine
            return
        assert r.returncode == 0, r.stderr

    for i in range(5):  # every kind once: shared directories and caches exist from here on
        cycle(i)
    runtime = Path(rl.env["XDG_RUNTIME_DIR"])
    before = files_under(runtime)
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(cycle, range(5, 55)))
    assert settle(rl, str(rl.base)) == []
    assert files_under(runtime) == before


def test_fifty_parallel_runs_with_network_all_succeed_and_leave_nothing(rl, busybox_rootfs):
    need_tool("pasta")
    marker = str(rl.base)

    def one(i: int):
        # An interface besides lo, with an address: pasta configured the network.
        return rl("run", "--rm", "--rootfs", str(busybox_rootfs), "sh", "-c",
                  f"ip -o -4 addr | grep -v ' lo ' | grep -q inet && echo ok{i}", timeout=180)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    failed = [(i, r.returncode, r.stderr) for i, r in enumerate(results) if r.returncode != 0]
    assert failed == []
    assert [r.stdout for r in results] == [f"ok{i}\n" for i in range(50)]
    assert settle(rl, marker) == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert marker not in mounts and str(busybox_rootfs) not in mounts
    assert rl("ps", "-a", "-q").stdout == ""
