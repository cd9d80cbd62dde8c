"""Many `rl` at once, as a CI runner does: parallel --rm runs leave nothing behind, a --name
race has exactly one winner, and `rl ps` never reports a container that is not there."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.integration


def _leftovers(rl) -> list[str]:
    found = []
    for d in (rl.data / "containers", rl.runtime):
        if d.exists():
            # Containers' entries only (other parts of rl cache things here, e.g. seccomp/).
            found += [p.name for p in d.iterdir() if len(p.name.removeprefix(".removing-")) == 64]
    names = rl.data / "names"
    if names.exists():
        found += [p.name for p in names.iterdir()]
    return found


def test_twenty_parallel_rm_runs_all_succeed_and_leave_nothing(rl, busybox_rootfs):
    def one(i: int):
        return rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs),
                  "sh", "-c", f"echo job{i}; exit {i % 3}", timeout=120)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, range(20)))
    for i, r in enumerate(results):
        assert r.returncode == i % 3, (i, r.stderr)
        assert r.stdout == f"job{i}\n"
    assert _leftovers(rl) == []
    assert rl("ps", "-a", "-q").stdout == ""


def test_ten_concurrent_name_claims_have_exactly_one_winner(rl, busybox_rootfs):
    def one(_i: int):
        return rl("run", "-d", "--name", "only-one", "--network", "none", "--rootfs",
                  str(busybox_rootfs), "sleep", "1000", timeout=120)

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    winners = [r for r in results if r.returncode == 0]
    losers = [r for r in results if r.returncode != 0]
    assert len(winners) == 1, [r.stderr for r in results]
    assert all(r.returncode == 125 and "already in use" in r.stderr for r in losers)
    cid = winners[0].stdout.strip()
    assert os.readlink(rl.data / "names" / "only-one") == cid
    # The losers left no storage: only the winner's container exists.
    assert [p.name for p in (rl.data / "containers").iterdir()] == [cid]
    assert rl("rm", "-f", "only-one").returncode == 0
    assert _leftovers(rl) == []
    # The name is free again.
    r = rl("run", "--rm", "--name", "only-one", "--network", "none", "--rootfs",
           str(busybox_rootfs), "true")
    assert r.returncode == 0, r.stderr


def test_stale_name_of_a_vanished_container_is_reclaimed(rl, busybox_rootfs):
    names = rl.data / "names"
    names.mkdir(parents=True, exist_ok=True)
    os.symlink("0" * 64, names / "ghost")  # a crash between removing storage and the name
    r = rl("run", "--rm", "--name", "ghost", "--network", "none", "--rootfs", str(busybox_rootfs),
           "true")
    assert r.returncode == 0, r.stderr
    assert not (names / "ghost").exists()


def test_parallel_detached_runs_and_removals(rl, busybox_rootfs):
    def start(i: int):
        return rl("run", "-d", "--name", f"p{i}", "--network", "none", "--rootfs",
                  str(busybox_rootfs), "sleep", "1000", timeout=120)

    with ThreadPoolExecutor(10) as pool:
        started = list(pool.map(start, range(10)))
    assert all(r.returncode == 0 for r in started), [r.stderr for r in started]
    assert len(rl("ps", "-q").stdout.split()) == 10
    with ThreadPoolExecutor(10) as pool:
        removed = list(pool.map(lambda i: rl("rm", "-f", f"p{i}", timeout=120), range(10)))
    assert all(r.returncode == 0 for r in removed), [r.stderr for r in removed]
    assert rl("ps", "-a", "-q").stdout == ""
    assert _leftovers(rl) == []
