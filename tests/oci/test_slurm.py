"""Slurm drives rl-oci: `srun --container=BUNDLE` on the one-node clusters scripts/test.sh
starts as root (scripts/slurm-one-node.sh), one with RunTimeRun, one with RunTimeCreate +
RunTimeStart. The job runs as this unprivileged user; its command is PID 1 of the container."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests.conftest import need, need_tool

pytestmark = pytest.mark.integration


def srun(conf: str, bundle_dir, *command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLURM_CONF=conf)
    return subprocess.run(["srun", f"--container={bundle_dir}", *command], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.fixture
def slurm_bundle(bundle):
    """A bundle for Slurm: it rewrites process.args, env and terminal itself; the rootfs is a
    copy (the job writes to it) inside the bundle."""
    return bundle(["true"], copy_rootfs=True)


def cluster(variable: str) -> str:
    need_tool("srun")
    conf = os.environ.get(variable)
    need(bool(conf) and os.path.exists(conf or ""),
         f"{variable} names no running one-node cluster (scripts/test.sh starts them as root)")
    return str(conf)


def test_runtimerun_returns_the_jobs_output_and_status(slurm_bundle, unprivileged):
    conf = cluster("RL_SLURM_RUN")
    r = srun(conf, slurm_bundle, "sh", "-c", "echo hello from $(cat /proc/1/comm) $$; id -u; "
                                             "echo to-stderr >&2; exit 3")
    assert r.returncode == 3, r.stderr
    assert r.stdout.splitlines() == ["hello from sh 1", "0"]
    assert "to-stderr" in r.stderr


def test_runtimecreate_and_start_run_the_job(slurm_bundle, unprivileged):
    """Slurm 22.05 reads RunTimeCreate's output until end-of-file and ends the step with
    RunTimeStart's status: the job runs (its file appears) and srun reports 0, never the
    job's own status; its stdout goes nowhere (docs/oci-runtime.md)."""
    conf = cluster("RL_SLURM_CREATE_START")
    mark = uuid.uuid4().hex
    r = srun(conf, slurm_bundle, "sh", "-c", f"echo {mark} > /ran; exit 3")
    assert r.returncode == 0, r.stderr
    assert (slurm_bundle / "rootfs" / "ran").read_text() == mark + "\n"
