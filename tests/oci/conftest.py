"""Fixtures of the OCI runtime tests: the real rl-oci, as the unprivileged user, on bundles made
of the busybox rootfs and a config.json from `rl-oci spec` (changed per test)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need


@pytest.fixture(scope="session")
def rl_oci_bin() -> str:
    exe = shutil.which("rl-oci") or str(Path(sys.executable).parent / "rl-oci")
    need(os.path.exists(exe), "the rl-oci command is not installed in this environment")
    return exe


class Oci:
    """Runs rl-oci with a --root of this test's own."""

    def __init__(self, exe: str, root: Path, base: Path) -> None:
        self.exe = exe
        self.root = root
        self.base = base
        self.env = dict(os.environ)
        runtime = base / "runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        self.env["XDG_RUNTIME_DIR"] = str(runtime)

    def argv(self, *args: str) -> list[str]:
        return [self.exe, "--root", str(self.root), *args]

    def __call__(self, *args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
        if "create" in args or "--detach" in args or "-d" in args:
            # The container inherits create's stdout and stderr, as with runc: capturing them
            # through pipes would wait for the container's end. Files, as runtime-tools does.
            return self.detached(*args, timeout=timeout)
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.argv(*args), timeout=timeout, env=self.env, **kw)

    def detached(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        name = uuid.uuid4().hex[:8]
        out, err = self.base / f"stdout-{name}", self.base / f"stderr-{name}"
        with open(out, "w") as o, open(err, "w") as e:
            r = subprocess.run(self.argv(*args), timeout=timeout, env=self.env, stdout=o,
                               stderr=e, stdin=subprocess.DEVNULL)
        return subprocess.CompletedProcess(r.args, r.returncode, out.read_text(), err.read_text())

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=self.env, **kw)

    def state(self, cid: str) -> dict[str, Any]:
        r = self("state", cid)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict[str, Any]:
        """The state once it says `status` (or the last one seen after `timeout`); a container
        that does not exist yet (a `run` still starting) is waited for too."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {"status": "does not exist"}
        while True:
            r = self("state", cid)
            if r.returncode == 0:
                state = json.loads(r.stdout)
            if state["status"] == status or time.monotonic() > deadline:
                return state
            time.sleep(0.05)


@pytest.fixture
def oci(rl_oci_bin: str, tmp_path: Path, unprivileged: None) -> Iterator[Oci]:
    runner = Oci(rl_oci_bin, tmp_path / "oci-root", tmp_path)
    yield runner
    # Whatever a test left: force-delete it (a failing test must not leave containers).
    if runner.root.is_dir():
        for cid in os.listdir(runner.root):
            runner("delete", "--force", cid)


def default_config(oci: Oci, tmp_path: Path) -> dict[str, Any]:
    spec_dir = tmp_path / f"spec-{uuid.uuid4().hex[:8]}"
    spec_dir.mkdir()
    r = oci("spec", "--bundle", str(spec_dir))
    assert r.returncode == 0, r.stderr
    return json.loads((spec_dir / "config.json").read_text())


@pytest.fixture
def bundle(oci: Oci, tmp_path: Path, busybox_rootfs: Path) -> Callable[..., Path]:
    """bundle(args, **changes) -> a bundle directory whose config.json is `rl-oci spec`'s
    with the busybox rootfs (read-only, by absolute path), no terminal, a tmpfs on /tmp, the
    process args given, and each change applied: change(config) callables or keyword
    overrides of process fields (env, cwd, user...)."""
    base = default_config(oci, tmp_path)

    def make(args: list[str], *edits: Callable[[dict[str, Any]], None], copy_rootfs: bool = False,
             **process: Any) -> Path:
        config = copy.deepcopy(base)
        path = tmp_path / f"bundle-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        if copy_rootfs:
            subprocess.run(["cp", "-a", str(busybox_rootfs), str(path / "rootfs")], check=True)
            config["root"] = {"path": "rootfs", "readonly": False}
        else:
            config["root"] = {"path": str(busybox_rootfs), "readonly": True}
        config["process"]["terminal"] = False
        config["process"]["args"] = list(args)
        config["process"].update(process)
        config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                 "options": ["nosuid", "nodev", "mode=1777"]})
        for edit in edits:
            edit(config)
        (path / "config.json").write_text(json.dumps(config, indent=1))
        return path

    return make


def cid() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"
