"""Limit flags (podman's units and ranges) -> Limits in cgroup v2 units."""

from __future__ import annotations

import pytest

from rootless.errors import UsageError
from rootless.limits import parse_limits, parse_size


@pytest.mark.parametrize("text,size", [
    ("64m", 64 << 20), ("64M", 64 << 20), ("64mb", 64 << 20), ("64MiB", 64 << 20),
    ("1g", 1 << 30), ("1.5g", 3 << 29), ("512k", 512 << 10), ("100", 100), ("100b", 100),
    ("2t", 2 << 40), (" 8m ", 8 << 20), (4096, 4096),
])
def test_sizes(text, size):
    assert parse_size(text, "--memory") == size


@pytest.mark.parametrize("text", ["lots", "", "m", "-1m", "64x", "nan", "inf", "1e3", "6 4m", "1..5g"])
def test_bad_sizes_name_the_flag(text):
    with pytest.raises(UsageError, match="for --memory"):
        parse_size(text, "--memory")


def test_no_limit_flags_no_limits():
    assert parse_limits({}) is None
    assert parse_limits({"memory": None, "memory_swap": "", "cgroup_conf": []}) is None


def test_memory_and_swap():
    limits = parse_limits({"memory": "64m", "memory_swap": "128m", "memory_reservation": "32m"})
    assert (limits.memory, limits.memory_swap, limits.memory_reservation) == (64 << 20, 128 << 20, 32 << 20)
    assert parse_limits({"memory": "64m", "memory_swap": "-1"}).memory_swap == -1


@pytest.mark.parametrize("settings,message", [
    ({"memory": "4m"}, "minimum memory limit"),
    ({"memory": "64m", "memory_swap": "32m"}, "larger than or equal to --memory"),
    ({"memory_swap": "128m"}, "needs --memory"),
    ({"memory": "64m", "memory_reservation": "128m"}, "--memory-reservation must be smaller"),
])
def test_memory_rules(settings, message):
    with pytest.raises(UsageError, match=message):
        parse_limits(settings)


def test_pids():
    assert parse_limits({"pids_limit": 20}).pids == 20
    assert parse_limits({"pids_limit": -1}).pids == "max"
    assert parse_limits({"pids_limit": "30"}).pids == 30
    for bad in (0, -2, "many"):
        with pytest.raises(UsageError, match="--pids-limit"):
            parse_limits({"pids_limit": bad})


def test_cpus_become_cpu_max():
    assert parse_limits({"cpus": "0.5"}).cpus == "50000 100000"
    assert parse_limits({"cpus": "2"}).cpus == "200000 100000"
    assert parse_limits({"cpus": 0.01}).cpus == "1000 100000"
    assert parse_limits({"cpus": "0.3"}).cpus == "30000 100000"  # not 29999
    for bad in ("0", "-1", "0.001", "half", "nan", "inf"):
        with pytest.raises(UsageError, match="--cpus"):
            parse_limits({"cpus": bad})


def test_cpu_shares_and_weights():
    # cgroup v1 shares -> cgroup v2 weight, the conversion crun and runc use.
    assert parse_limits({"cpu_shares": 1024}).cpu_weight == 39
    assert parse_limits({"cpu_shares": 2}).cpu_weight == 1
    assert parse_limits({"cpu_shares": 262144}).cpu_weight == 10000
    assert parse_limits({"cpu_weight": 500}).cpu_weight == 500
    assert parse_limits({"blkio_weight": 10}).io_weight == 1
    assert parse_limits({"blkio_weight": 1000}).io_weight == 10000
    assert parse_limits({"io_weight": 100}).io_weight == 100
    for settings in ({"cpu_shares": 1}, {"cpu_weight": 0}, {"cpu_weight": 10001},
                     {"blkio_weight": 5}, {"io_weight": 0}, {"cpu_weight": "x"}):
        with pytest.raises(UsageError):
            parse_limits(settings)


def test_cpusets():
    assert parse_limits({"cpuset_cpus": "0-2,4", "cpuset_mems": "0"}).cpuset_cpus == "0-2,4"
    for bad in ("0-", "a", "3-1", "1,,2"):
        with pytest.raises(UsageError, match="--cpuset-cpus"):
            parse_limits({"cpuset_cpus": bad})


def test_cgroup_conf():
    limits = parse_limits({"cgroup_conf": ["memory.high=50m", "pids.max=10"]})
    assert limits.extra == {"memory.high": "50m", "pids.max": "10"}
    for bad in ("memory.high", "=1", "../x=1", ".hidden=1", "a/b=1"):
        with pytest.raises(UsageError, match="--cgroup-conf"):
            parse_limits({"cgroup_conf": [bad]})
