"""Limits on a host that cannot apply them: these machines' cgroups are a v1/v2 hybrid (the
controllers are on cgroup v1, which cannot be delegated to a user). A requested limit is a
clear 125 error by default and one warning per dropped limit with --cgroups=best-effort.
Real limits are tested in the cgroup v2 guest (tests/vm, via tests/test_vm_suite.py)."""

from __future__ import annotations

import os

import pytest

from tests.conftest import need

pytestmark = pytest.mark.integration


def _no_delegation() -> bool:
    # Hybrid or v1: /sys/fs/cgroup is a tmpfs of per-controller v1 mounts, not cgroup2.
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/sys/fs/cgroup":
                return line.split(" - ")[1].split()[0] != "cgroup2"
    return True


@pytest.fixture(autouse=True)
def hybrid_host() -> None:
    need(_no_delegation(), "this host has unified cgroup v2; the VM suite covers it")


def containers(rl) -> list[str]:
    path = rl.data / "containers"
    return os.listdir(path) if path.exists() else []


def test_a_limit_that_cannot_be_applied_is_a_clear_error(run_bb, rl):
    r = run_bb("echo", "ran", opts=["--memory", "64m", "--pids-limit", "20"])
    assert r.returncode == 125, r.stderr
    assert r.stdout == ""  # refused before anything ran
    first, hint = r.stderr.splitlines()[:2]
    assert first.startswith("Error: cannot apply --memory 64 MiB, --pids-limit 20: ")
    assert "the memory and pids controllers are not on cgroup v2 here" in first
    assert "hybrid" in first
    # The exact fixes: cgroup v2, systemd's delegation drop-in, a delegated scope, best-effort.
    assert hint.startswith("Hint: ")
    for fix in ("systemd.unified_cgroup_hierarchy=1", "Delegate=cpu cpuset io memory pids",
                "user@.service.d", "loginctl enable-linger",
                "systemd-run --user --scope -p Delegate=yes", "--cgroups=best-effort"):
        assert fix in hint, hint
    assert containers(rl) == []  # nothing half-made is left


def test_best_effort_warns_once_per_dropped_limit_and_runs(run_bb):
    r = run_bb("echo", "ran", opts=["--cgroups", "best-effort", "--memory", "64m",
                                    "--pids-limit", "20", "--cpus", "0.5"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    warnings = [ln for ln in r.stderr.splitlines() if ln.startswith("rl: warning:")]
    assert len(warnings) == 3, r.stderr
    assert warnings[0].startswith("rl: warning: --memory 64 MiB not applied: the memory controller is")
    assert warnings[1].startswith("rl: warning: --pids-limit 20 not applied: the pids controller is")
    assert warnings[2].startswith("rl: warning: --cpus 0.5 not applied: the cpu controller is")


def test_best_effort_from_the_config_file(run_bb, rl):
    config = rl.base / "config" / "rootless"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text('[run]\ncgroups = "best-effort"\npids_limit = 100\n')
    r = run_bb("echo", "ran")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    assert "rl: warning: --pids-limit 100 not applied" in r.stderr


def test_cgroups_disabled_does_not_touch_cgroups(run_bb):
    r = run_bb("cat", "/proc/self/cgroup", opts=["--cgroups", "disabled", "--memory", "64m"])
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and "cgroup" not in r.stderr


def test_without_limit_flags_cgroups_never_matter(run_bb):
    r = run_bb("echo", "ran", opts=["--log-level", "debug"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    assert "cgroup:" not in r.stderr  # the cgroup module did not even run


def test_an_invalid_limit_is_refused_before_cgroups_are_looked_at(run_bb):
    r = run_bb("true", opts=["--memory", "lots"])
    assert r.returncode == 125
    assert "invalid size 'lots' for --memory" in r.stderr
