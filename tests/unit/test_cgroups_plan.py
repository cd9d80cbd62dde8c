"""Cgroup discovery and limit plans on recorded text (no cgroups touched)."""

from __future__ import annotations

import importlib.util

from rootless.cgroups import _names, _reason
from rootless.cgroups.plan import (
    Write,
    cgroup2_mount,
    cgroup_dir,
    controller_of,
    format_size,
    needed_controllers,
    own_cgroup,
    parse_keyed,
    plan_writes,
    stale_owner,
)
from rootless.cgroups.systemd import busctl_args, scope_message, scope_properties
from rootless.spec import Limits
from tests.conftest import need

# These machines: v1 controllers, cgroup2 (hugetlb only) at /sys/fs/cgroup/unified.
HYBRID_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/75a97c5dff4b4e38e8c24f9b295f1cc3
1:cpu:/
0::/
"""
HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd host with the unified hierarchy, from a desktop session.
UNIFIED_CGROUP = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope\n"
UNIFIED_MOUNTINFO = """\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
26 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""


def test_own_cgroup_is_the_unified_line():
    assert own_cgroup(HYBRID_CGROUP) == "/"
    assert own_cgroup(UNIFIED_CGROUP) == "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foot.scope"
    assert own_cgroup("4:memory:/x\n1:cpu:/\n") is None  # pure cgroup v1


def test_cgroup2_mount_on_hybrid_unified_and_v1_hosts():
    assert cgroup2_mount(HYBRID_MOUNTINFO) == ("/sys/fs/cgroup/unified", "/")
    assert cgroup2_mount(UNIFIED_MOUNTINFO) == ("/sys/fs/cgroup", "/")
    v1_only = "\n".join(ln for ln in HYBRID_MOUNTINFO.splitlines() if "cgroup2" not in ln)
    assert cgroup2_mount(v1_only) is None


def test_cgroup2_mount_unescapes_and_prefers_sys_fs_cgroup():
    text = ("50 1 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"
            "51 1 0:40 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
    assert cgroup2_mount(text) == ("/sys/fs/cgroup", "/")
    assert cgroup2_mount(text.splitlines()[0]) == ("/mnt/my cgroups", "/")


def test_cgroup_dir_joins_and_strips_the_mount_root():
    assert cgroup_dir(("/sys/fs/cgroup", "/"), "/") == "/sys/fs/cgroup"
    assert cgroup_dir(("/sys/fs/cgroup", "/"), "/user.slice/a.scope") == "/sys/fs/cgroup/user.slice/a.scope"
    # A container's view: its cgroup mounted from inside a bind of a subtree.
    assert cgroup_dir(("/sys/fs/cgroup", "/user.slice"), "/user.slice/a.scope") == "/sys/fs/cgroup/a.scope"


def test_plan_writes_in_cgroup_v2_terms():
    limits = Limits(memory=64 << 20, memory_swap=96 << 20, memory_reservation=32 << 20, pids=20,
                    cpus="50000 100000", cpu_weight=100, cpuset_cpus="0-1", cpuset_mems="0",
                    io_weight=200, extra={"memory.high": "48m"})
    assert [w.describe() for w in plan_writes(limits)] == [
        "cpuset.cpus=0-1", "cpuset.mems=0", f"memory.low={32 << 20}", f"memory.max={64 << 20}",
        # podman's --memory-swap counts memory plus swap; memory.swap.max is the swap alone.
        f"memory.swap.max={32 << 20}", "pids.max=20", "cpu.max=50000 100000", "cpu.weight=100",
        "io.weight=default 200", "memory.high=48m",
    ]
    assert needed_controllers(plan_writes(limits)) == ["cpuset", "memory", "pids", "cpu", "io"]


def test_plan_writes_labels_name_the_flag_and_value():
    writes = plan_writes(Limits(memory=64 << 20, pids="max", cpus="50000 100000", memory_swap=-1))
    assert [w.label() for w in writes] == ["--memory 64 MiB", "--memory-swap -1",
                                           "--pids-limit max", "--cpus 0.5"]
    assert writes[1] == Write("memory.swap.max", "max", "--memory-swap", "-1")
    assert plan_writes(Limits()) == []


def test_controller_of_a_file():
    assert controller_of("memory.max") == "memory"
    assert controller_of("io.bfq.weight") == "io"
    assert controller_of("cgroup.max.descendants") is None
    assert needed_controllers(plan_writes(Limits(extra={"cgroup.max.depth": "2"}))) == []


def test_format_size():
    assert format_size(64 << 20) == "64 MiB"
    assert format_size(2 << 30) == "2 GiB"
    assert format_size(1536) == "1536 bytes"
    assert format_size(100) == "100 bytes"


def test_parse_keyed_files():
    events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"
    assert parse_keyed(events)["oom_kill"] == 1
    assert parse_keyed("populated 0\nfrozen 0\n") == {"populated": 0, "frozen": 0}
    assert parse_keyed("usage_usec 1500\nnr_throttled 7\n")["nr_throttled"] == 7


def test_stale_owner_only_for_container_cgroups():
    assert stale_owner("rl-0123456789ab-4242") == 4242
    for name in ("rl-leaf", "rl-0123456789ab", "rl-0123456789AB-1", "rl-0123456789abc-1",
                 "init", "rl-0123456789ab-x", "user@1000.service"):
        assert stale_owner(name) is None, name


def test_reasons_name_the_controllers():
    assert _names({"memory"}) == "the memory controller is"
    assert _names({"pids", "memory", "cpu"}) == "the cpu, memory and pids controllers are"
    w = plan_writes(Limits(memory=64 << 20, pids=20))
    assert _reason("{which} not delegated", w) == "the memory and pids controllers are not delegated"
    assert _reason("{which} not delegated", w[1:]) == "the pids controller is not delegated"


def test_systemd_scope_request():
    props = dict(scope_properties(4242, "rl container x"))
    assert props["PIDs"] == ("au", [4242])
    assert props["Delegate"] == ("b", True)
    args = busctl_args("rl-0123456789ab.scope", 4242, "rl container x")
    assert args[:4] == ["busctl", "--user", "--quiet", "call"]
    i = args.index("StartTransientUnit")
    assert args[i + 1:i + 5] == ["ssa(sv)a(sa(sv))", "rl-0123456789ab.scope", "fail", "4"]
    # Four properties, each NAME SIGNATURE VALUE..., then an empty auxiliary-unit array.
    assert args[i + 5:] == ["Description", "s", "rl container x", "PIDs", "au", "1", "4242",
                            "Delegate", "b", "true", "CollectMode", "s", "inactive-or-failed", "0"]


def test_systemd_scope_request_over_dbus():
    need(importlib.util.find_spec("jeepney") is not None,
         "jeepney is not installed (a dependency of rl for systemd scopes)")
    msg = scope_message("rl-0123456789ab.scope", 4242, "rl container x")
    from jeepney import HeaderFields

    assert msg.header.fields[HeaderFields.member] == "StartTransientUnit"
    assert msg.header.fields[HeaderFields.signature] == "ssa(sv)a(sa(sv))"
    assert msg.body[0] == "rl-0123456789ab.scope" and msg.body[1] == "fail"
    assert ("PIDs", ("au", [4242])) in msg.body[2]
    assert len(msg.serialise(serial=1)) > 100  # the body encodes with that signature
