"""A rootless containerd for the tests, started by the unprivileged test user itself: Debian's
containerd 1.6 under rootlesskit, with its own root, state and socket (docs/containerd.md).

- rootlesskit gives containerd a user namespace (the user as root, the /etc/subuid range
  beside) and a mount namespace. `--copy-up=/run` puts a writable tmpfs over /run there:
  containerd 1.6 creates its shims' sockets in /run/containerd/s whatever its configuration
  says. `--net=host`: no network namespace for the daemon; containers get their own.
- The socket is under $XDG_RUNTIME_DIR, the data under a private directory.
- `ctr` runs inside rootlesskit's user and mount namespaces (nsenter): for `ctr run IMAGE` it
  mounts the image's snapshot itself, which a process outside them may not.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import container_processes, need_tool


@dataclass
class Containerd:
    base: Path  # config, root, rootlesskit's state, the log
    sockets: Path  # below $XDG_RUNTIME_DIR: the sockets and containerd's state
    proc: subprocess.Popen  # rootlesskit

    @property
    def address(self) -> str:
        return str(self.sockets / "containerd.sock")

    def ctr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        child = (self.base / "rootlesskit" / "child_pid").read_text().strip()
        return subprocess.run(
            ["nsenter", "-U", "--preserve-credentials", "-m", "-t", child,
             "ctr", "--address", self.address, *args],
            capture_output=True, text=True, timeout=timeout)

    def names(self, *what: str) -> list[str]:
        r = self.ctr(*what, "ls", "-q")
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    def remove_everything(self) -> None:
        for task in self.names("tasks"):
            self.ctr("tasks", "kill", "-s", "SIGKILL", task)
            self.ctr("tasks", "delete", "-f", task)
        for container in self.names("containers"):
            self.ctr("containers", "rm", container)

    def stop(self) -> None:
        try:
            if self.proc.poll() is None and (self.base / "rootlesskit" / "child_pid").exists():
                self.remove_everything()
        finally:
            # rootlesskit passes SIGTERM on to containerd and exits with it.
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            # A shim outlives containerd if its container was not deleted: none may stay.
            for pid in container_processes(self.address):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(self.sockets, ignore_errors=True)


def start_containerd(base: Path) -> Containerd:
    for tool in ("rootlesskit", "containerd", "containerd-shim-runc-v2", "ctr", "nsenter",
                 "newuidmap"):
        need_tool(tool)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    sockets = Path(tempfile.mkdtemp(prefix="rl-ctrd-", dir=runtime_dir))
    config = base / "config.toml"
    config.write_text(f"""\
version = 2
root = "{base / 'root'}"
state = "{sockets / 'state'}"
# No CRI (Kubernetes) service: ctr talks to the core API only.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sockets / 'containerd.sock'}"
[ttrpc]
  address = "{sockets / 'containerd.sock.ttrpc'}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"
""")
    with open(base / "containerd.log", "wb") as log:
        proc = subprocess.Popen(
            ["rootlesskit", "--net=host", "--copy-up=/run",
             f"--state-dir={base / 'rootlesskit'}", "containerd", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    ctrd = Containerd(base, sockets, proc)
    deadline = time.monotonic() + 30
    while True:
        if (base / "rootlesskit" / "child_pid").exists() and os.path.exists(ctrd.address) \
                and ctrd.ctr("version", timeout=10).returncode == 0:
            return ctrd
        if proc.poll() is not None or time.monotonic() > deadline:
            ctrd.stop()
            raise AssertionError("containerd did not start: "
                                 + (base / "containerd.log").read_text()[-2000:])
        time.sleep(0.1)
