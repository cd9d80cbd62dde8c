"""Shared fixtures: the real `rl` as the unprivileged user, a busybox rootfs, isolated XDG dirs.

The integration tests run `rl` itself as a non-root user (scripts/test.sh runs pytest as one).
When the session is root they skip — or fail under CI=true, where nothing may skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip when a component is missing; under CI=true that is a failure instead."""
    if condition:
        return
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def need_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    need(path is not None, f"{name} is not installed")
    return path or name


@pytest.fixture(scope="session")
def unprivileged() -> None:
    need(os.geteuid() != 0, "integration tests run rl as an unprivileged user: use scripts/test.sh")


@pytest.fixture(scope="session")
def rl_bin() -> str:
    exe = shutil.which("rl") or str(Path(sys.executable).parent / "rl")
    need(os.path.exists(exe), "the rl command is not installed in this environment")
    return exe


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory, unprivileged: None) -> Path:
    """A busybox rootfs built by the test user, so its files are root's inside the container."""
    need_tool("busybox")
    dest = tmp_path_factory.mktemp("rootfs") / "busybox"
    subprocess.run([str(REPO / "scripts" / "build-busybox-rootfs.sh"), str(dest)], check=True,
                   stdout=subprocess.DEVNULL)
    return dest


class RlRunner:
    """Runs the real rl with isolated XDG directories."""

    def __init__(self, exe: str, base: Path) -> None:
        self.exe = exe
        self.base = base
        self.env = dict(os.environ)
        for name, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                          ("XDG_RUNTIME_DIR", "runtime")):
            path = base / sub
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.env[name] = str(path)

    @property
    def data(self) -> Path:
        return Path(self.env["XDG_DATA_HOME"]) / "rootless"

    @property
    def runtime(self) -> Path:
        return Path(self.env["XDG_RUNTIME_DIR"]) / "rootless"

    def __call__(self, *args: str, input: str | bytes | None = None, timeout: float = 60,
                 env: dict[str, str] | None = None, text: bool = True) -> subprocess.CompletedProcess:
        full_env = dict(self.env)
        full_env.update(env or {})
        return subprocess.run([self.exe, *args], input=input, capture_output=True, timeout=timeout,
                              env=full_env, text=text, errors="replace" if text else None)

    def popen(self, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        full_env = dict(self.env)
        full_env.update(env or {})
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen([self.exe, *args], env=full_env, **kw)


@pytest.fixture
def rl(rl_bin: str, tmp_path: Path, unprivileged: None) -> Iterator[RlRunner]:
    runner = RlRunner(rl_bin, tmp_path / "xdg")
    yield runner


@pytest.fixture
def run_bb(rl: RlRunner, busybox_rootfs: Path) -> Callable[..., subprocess.CompletedProcess]:
    """run_bb(*cmd, opts=[...]) -> rl run --rm [opts] --rootfs BUSYBOX cmd..."""

    def run(*cmd: str, opts: list[str] | tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
        return rl("run", "--rm", "--network", "none", *opts, "--rootfs", str(busybox_rootfs), *cmd, **kw)

    return run


def container_processes(marker: str) -> list[int]:
    """Host pids whose command line contains marker (to prove nothing is left running)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry) != os.getpid():
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="session")
def test_registry(tmp_path_factory: pytest.TempPathFactory):
    """A real registry (docker-registry) on 127.0.0.1 with rl's test images pushed:
    HOST/rltest/{busybox,multilayer,multiarch,zstd,nonroot}:latest; its access log is on
    (reg.requests()), so a test can see what a client asked of it."""
    sys.path.insert(0, str(REPO / "tests"))
    from registry_fixtures import push_test_images, start_registry

    reg = start_registry(tmp_path_factory.mktemp("registry"), "none", access_log=True)
    try:
        reg.digests = push_test_images(reg)  # type: ignore[attr-defined]
        yield reg
    finally:
        reg.stop()
