"""Slurm drives an OCI runtime: `srun --container=BUNDLE` on the private cluster that
scripts/slurm/one-node.sh starts (Debian's slurm-wlm 22.05), as the unprivileged test user,
once with runc and once with rl-oci.

Two ways for slurmstepd to drive a runtime, one node each (docs/slurm.md says why):
- RunTimeRun: the task execs the runtime's `run`, which owns the task's stdio and whose exit
  status is the job's. The job's output and exit status come back to srun.
- RunTimeCreate + RunTimeStart: the runtime is only ever called through a pipe that Slurm reads
  to the end; the job's output goes to a file (oci.conf redirects it) and Slurm reports the
  status of RunTimeStart, not the job's.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import container_processes
from tests.integration.test_lifecycle import until
from tests.oci.engine_fixtures import RUNTIMES, runtime_path
from tests.oci.slurm_fixtures import Cluster, make_bundle, slurm_cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cluster(unprivileged: None) -> Iterator[Cluster]:
    c = slurm_cluster()
    yield c
    # The runtimes make their --root directories and leave them: take the empty ones away
    # (one that still holds a container is left for the failing test's report).
    for root in c.runtime_roots():
        try:
            root.rmdir()
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != errno.ENOTEMPTY:
                raise


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, cluster: Cluster) -> str:
    """The runtime's name; its nodes are NAME-run and NAME-cs. Their oci.conf must call the
    very binary under test, or the test would prove something about another one."""
    name: str = request.param
    path = os.path.realpath(runtime_path(name))
    for node in (f"{name}-run", f"{name}-cs"):
        for key, line in cluster.oci_conf(node).items():
            called = os.path.realpath(line.split()[0])
            assert called == path, f"{node}'s {key} calls {called}, not {path}"
    return name


@pytest.fixture
def bundle(tmp_path: Path, busybox_rootfs: Path) -> Path:
    return make_bundle(tmp_path / "bundle", busybox_rootfs)


def argv0(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except FileNotFoundError:  # gone meanwhile
        return b""


def job_of(text: str) -> str:
    found = re.search(r"job=(\d+)", text)
    assert found, f"the job did not report its id: {text!r}"
    return found.group(1)


def test_run_path_output_input_and_status(cluster: Cluster, runtime: str, bundle: Path) -> None:
    node = f"{runtime}-run"
    r = cluster.srun(node, bundle,
                     'echo "out pid=$$ uid=$(id -u) job=$SLURM_JOB_ID"; read line; '
                     'echo "in=$line"; echo err >&2; exit 3', input="hello\n")
    assert r.returncode == 3, r.stderr
    # The job is PID 1 of the container's PID namespace, root there (`runc spec --rootless`
    # maps the user's uid to 0), and sees the job's environment, which slurmstepd appended to
    # process.env.
    assert "out pid=1 uid=0 job=" in r.stdout, r.stdout + r.stderr
    assert "in=hello" in r.stdout
    assert "err" in r.stderr
    # The runtime removed the container when it ended (Slurm deletes only what it still finds).
    assert cluster.state(node, job_of(r.stdout)) is None


def test_run_path_scancel_leaves_nothing(cluster: Cluster, runtime: str, bundle: Path) -> None:
    node = f"{runtime}-run"
    marker = f"rlslurm{uuid.uuid4().hex[:10]}"
    # The inner shell keeps the marker on its command line for as long as it runs.
    name, proc = cluster.popen(node, bundle, f'sh -c "sleep 300; :" {marker}')

    def job_processes() -> list[int]:
        # srun's command line (and its helper's) holds the marker too: count the shell only.
        return [pid for pid in container_processes(marker) if argv0(pid) == b"sh"]

    try:
        assert until(job_processes, timeout=30), "the job's container never ran"
        (job,) = cluster.job_ids(name)
        cluster.cancel(name)
        proc.wait(timeout=60)
        assert until(lambda: not job_processes(), timeout=30), \
            f"processes of the cancelled job remain: {job_processes()}"
        assert until(lambda: cluster.state(node, job) is None, timeout=30), \
            f"the runtime still knows the container: {cluster.state(node, job)}"
        assert cluster.wait_gone(name)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_batch_script(cluster: Cluster, runtime: str, bundle: Path, tmp_path: Path) -> None:
    """sbatch --container: slurmstepd bind-mounts the script at /tmp/slurm/startup (the runtime
    makes the mount point in the rootfs, as runc does) and the step's exit status is the
    script's."""
    node = f"{runtime}-run"
    script = tmp_path / "job.sh"
    script.write_text('#!/bin/sh\necho "batch pid=$$ job=$SLURM_JOB_ID"\necho batch-err >&2\nexit 5\n')
    script.chmod(0o755)
    output = tmp_path / "job.out"
    job = cluster.sbatch(node, bundle, script, output)
    assert cluster.finished(job) == ("FAILED", "5:0"), output.read_text()
    text = output.read_text()
    assert f"batch pid=1 job={job}" in text and "batch-err" in text, text
    # The batch step's %s is SLURM_BATCH_SCRIPT, 0xfffffffb.
    assert cluster.state(node, job, step=str(0xFFFFFFFB)) is None


def test_create_start_path(cluster: Cluster, runtime: str, bundle: Path) -> None:
    node = f"{runtime}-cs"
    r = cluster.srun(node, bundle, 'echo "out pid=$$ job=$SLURM_JOB_ID"; echo err >&2; exit 3')
    # slurmstepd ends the task with _exit() of RunTimeStart's raw wait status (Slurm 22.05 to
    # 25.11, src/slurmd/slurmstepd/container.c): the job's own status never comes back on this
    # path, and a runtime whose `start` succeeded reads as 0. Nor do the task's stdio reach the
    # container: oci.conf sends its output to slurm-JOB.STEP.out beside the bundle.
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == ""
    outs = list(bundle.glob("slurm-*.out"))
    assert len(outs) == 1, outs
    text = outs[0].read_text()
    assert "out pid=1 job=" in text and "err" in text, text
    job = job_of(text)
    assert outs[0].name == f"slurm-{job}.0.out"
    # RunTimeDelete ran: the runtime knows the container no more.
    assert cluster.state(node, job) is None
