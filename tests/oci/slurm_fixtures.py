"""The private Slurm cluster that scripts/slurm/one-node.sh starts for the tests, as seen by the
unprivileged test user: where its configuration is, which node drives which runtime, and srun.

scripts/test.sh (as root) starts the cluster and passes RL_SLURM_CONF to pytest. Each node has
its own oci.conf: NAME-run drives the runtime NAME through RunTimeRun, NAME-cs through
RunTimeCreate + RunTimeStart (see the comments in one-node.sh and docs/slurm.md).
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import need, need_tool


@dataclass(frozen=True)
class Cluster:
    conf: Path  # the cluster's slurm.conf, for SLURM_CONF

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def oci_conf(self, node: str) -> dict[str, str]:
        """The RunTime* lines of a node's oci.conf, as slurmstepd reads them."""
        lines = (self.conf.parent / node / "oci.conf").read_text().splitlines()
        return dict(re.fullmatch(r'(\w+)="(.*)"', line).groups()  # type: ignore[union-attr]
                    for line in lines if line and not line.startswith("#"))

    def runtime_roots(self) -> set[Path]:
        """The runtimes' --root directories the nodes' oci.conf name, for this user."""
        roots = set()
        for node in (self.conf.parent / "nodes").read_text().split():
            query = self.oci_conf(node)["RunTimeQuery"].replace("$(id -u)", str(os.getuid()))
            found = re.search(r"--root=(\S+)", query)
            if found:
                roots.add(Path(found.group(1)))
        return roots

    def state(self, node: str, job: str, step: str = "0") -> dict | None:
        """The container's state as slurmstepd sees it: the node's RunTimeQuery for task 0 of
        STEP of JOB, run as the job's user, stdout and stderr read together as Slurm reads
        them. None when that is not a state document (the container is gone)."""
        subst = {"n": node, "u": pwd.getpwuid(os.getuid()).pw_name, "j": job, "s": step,
                 "t": "0", "%": "%"}
        cmd = re.sub(r"%(.)", lambda m: subst[m.group(1)], self.oci_conf(node)["RunTimeQuery"])
        out = subprocess.run(["/bin/sh", "-c", cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=30)
        try:
            doc = json.loads(out.stdout)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) and "status" in doc else None

    def srun(self, node: str, bundle: Path, script: str, timeout: float = 60,
             **kw) -> subprocess.CompletedProcess:
        """srun -w NODE --container=BUNDLE sh -c SCRIPT; the job is cancelled if it outlives
        the timeout, so that a hanging runtime fails the test and leaves nothing queued."""
        name = f"rltest-{uuid.uuid4().hex[:12]}"
        try:
            return subprocess.run(
                ["srun", "-w", node, "-N1", "-n1", f"--job-name={name}", f"--container={bundle}",
                 "sh", "-c", script],
                capture_output=True, text=True, timeout=timeout, env=self.env, cwd=bundle, **kw)
        finally:
            self.cancel(name)

    def popen(self, node: str, bundle: Path, script: str) -> tuple[str, subprocess.Popen]:
        name = f"rltest-{uuid.uuid4().hex[:12]}"
        proc = subprocess.Popen(
            ["srun", "-w", node, "-N1", "-n1", f"--job-name={name}", f"--container={bundle}",
             "sh", "-c", script],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env, cwd=bundle)
        return name, proc

    def sbatch(self, node: str, bundle: Path, script: Path, output: Path) -> str:
        """sbatch --container=BUNDLE SCRIPT; the job's id."""
        r = subprocess.run(
            ["sbatch", "--parsable", "-w", node, f"--container={bundle}", f"--output={output}",
             str(script)], capture_output=True, text=True, timeout=60, env=self.env, cwd=bundle)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip().split(";")[0]

    def finished(self, job: str, timeout: float = 60) -> tuple[str, str]:
        """(JobState, ExitCode) once the job has ended: scontrol keeps the record for
        MinJobAge seconds, and asking it is quicker than `sbatch --wait`'s polling."""
        end = time.monotonic() + timeout
        while True:
            r = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                               text=True, timeout=30, env=self.env)
            fields = dict(f.split("=", 1) for f in r.stdout.split() if "=" in f)
            if fields.get("JobState") not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
                return fields.get("JobState", ""), fields.get("ExitCode", "")
            if time.monotonic() > end:
                subprocess.run(["scancel", job], env=self.env, timeout=30, check=False)
                raise AssertionError(f"job {job} did not end: {r.stdout}")
            time.sleep(0.1)

    def job_ids(self, name: str) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%A"], capture_output=True,
                             text=True, env=self.env, timeout=30)
        return out.stdout.split()

    def cancel(self, name: str) -> None:
        if self.job_ids(name):
            subprocess.run(["scancel", "-n", name], env=self.env, timeout=30, check=False)

    def wait_gone(self, name: str, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.job_ids(name):
                return True
            time.sleep(0.1)
        return False


def slurm_cluster() -> Cluster:
    conf = os.environ.get("RL_SLURM_CONF", "")
    need(bool(conf) and Path(conf).is_file(),
         "no Slurm test cluster (scripts/test.sh starts one as root: scripts/slurm/one-node.sh)")
    need_tool("srun")
    return Cluster(Path(conf))


def make_bundle(dest: Path, rootfs_template: Path) -> Path:
    """An OCI bundle for the test user: `runc spec --rootless` (the config Slurm's documentation
    starts from) over a copy of the busybox rootfs. Slurm runs the job's command from
    process.args it writes itself, and forces process.terminal to false."""
    runc = need_tool("runc")
    dest.mkdir()
    shutil.copytree(rootfs_template, dest / "rootfs", symlinks=True)
    subprocess.run([runc, "spec", "--rootless"], cwd=dest, check=True, timeout=30)
    return dest

