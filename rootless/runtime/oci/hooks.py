"""The runtime-spec hooks (config.md "POSIX-platform Hooks"): each is a program run with the
container's state JSON on its stdin, in order, with an optional timeout.

    prestart, createRuntime   by the launcher, in the runtime's namespaces, while PID 1 waits
                              after its mounts and before pivot_root
    createContainer           by PID 1, in the container's namespaces, before pivot_root
    startContainer            by PID 1 after `start`, before the command's execve
    poststart                 by `start` once the command runs; a failure is only a warning
    poststop                  by `delete`; a failure is only a warning

PID 1 runs its hooks after it can no longer import anything from the host (after pivot_root):
this module imports all it needs at the top, and the launcher imports it before the fork.
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import os
import select
import time

import rootless.jsonc as json
from rootless.errors import RlError
from rootless.kernel import libc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The status each stage's hooks read. runtime.md says "creating" until create returns; the
# legacy prestart hooks read "created", as runc gives them (runtime-tools checks that).
STATUS_OF = {"prestart": "created", "createRuntime": "creating", "createContainer": "creating",
             "startContainer": "created", "poststart": "running", "poststop": "stopped"}


class HookError(RlError):
    exit_code = 1


class OciHooks:
    """The hooks of one container and the state they are given (ociVersion, id, bundle,
    annotations; the status and pid are filled in per stage)."""

    __slots__ = ("hooks", "state")

    def __init__(self, hooks: dict[str, list[dict[str, Any]]], state: dict[str, Any]) -> None:
        self.hooks = hooks
        self.state = state

    def has(self, *kinds: str) -> bool:
        return any(self.hooks.get(kind) for kind in kinds)

    def run(self, kind: str, pid: int | None = None) -> None:
        """Run every hook of `kind` in order; HookError for the first that fails."""
        state = dict(self.state, status=STATUS_OF[kind])
        if pid is not None:
            state["pid"] = pid
        data = json.dumps(state).encode()
        for i, hook in enumerate(self.hooks.get(kind) or []):
            run_hook(hook, data, f"hooks.{kind}[{i}]")

    def run_in_container(self, kind: str) -> None:
        """PID 1's stages; the state's pid (the host's view) came with the launcher's "go"."""
        self.run(kind)

    def warn(self, kind: str, pid: int | None, report: Any) -> None:
        """poststart and poststop: a failing hook is reported and the rest still run."""
        state = dict(self.state, status=STATUS_OF[kind])
        if pid is not None:
            state["pid"] = pid
        data = json.dumps(state).encode()
        for i, hook in enumerate(self.hooks.get(kind) or []):
            try:
                run_hook(hook, data, f"hooks.{kind}[{i}]")
            except HookError as exc:
                report(f"warning: {exc.message}")


def run_hook(hook: dict[str, Any], state: bytes, field: str) -> None:
    """fork + execve the hook with `state` on stdin; wait for it at most hook["timeout"]
    seconds (then SIGKILL: a hook that hangs must not hang the runtime)."""
    path = hook["path"]
    args = list(hook.get("args") or [path])
    env = hook.get("env")
    environ = dict(os.environ) if env is None else dict(e.partition("=")[::2] for e in env)
    timeout = hook.get("timeout")
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(r, 0)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(path, args, environ)
        except OSError as exc:
            os.write(2, f"rl-oci: {field}: cannot execute {path}: {exc.strerror}\n".encode())
        os._exit(127)
    os.close(r)
    try:
        os.write(w, state)
    except BrokenPipeError:
        pass  # a hook need not read its stdin
    finally:
        os.close(w)
    status = _wait(pid, timeout)
    if status is None:
        raise HookError(f"{field} ({path}) did not finish within its timeout of {timeout} s: "
                        "killed")
    if os.WIFSIGNALED(status):
        raise HookError(f"{field} ({path}) was killed by signal {os.WTERMSIG(status)}")
    code = os.WEXITSTATUS(status)
    if code != 0:
        raise HookError(f"{field} ({path}) failed with exit status {code}")


def _wait(pid: int, timeout: int | None) -> int | None:
    """The wait status of pid, or None after killing it when `timeout` seconds passed."""
    if not timeout:
        while True:
            try:
                return os.waitpid(pid, 0)[1]
            except InterruptedError:
                continue
    pidfd = libc().pidfd_open(pid)
    try:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            ready, _, _ = select.select([pidfd], [], [], left)
            if ready:
                return os.waitpid(pid, 0)[1]
    finally:
        os.close(pidfd)
