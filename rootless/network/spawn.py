"""Start a network helper program that dies with rl, even when rl is SIGKILLed.

fork + exec by hand rather than subprocess: PR_SET_PDEATHSIG must be armed in the child between
fork and exec (subprocess's preexec_fn is not fork-safe, and posix_spawn cannot do it). The
death signal fires when the thread that forked the child exits; rl is single-threaded here.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms of rl run's start-up
    from typing import Any


def find_program(name: str, path: str | None = None) -> str | None:
    """shutil.which without importing shutil (rl run's start-up budget)."""
    # Without an explicit path: $PATH, then the system directories (a clean env has no PATH).
    dirs = path.split(":") if path is not None else [
        *os.environ.get("PATH", "").split(":"), "/usr/bin", "/usr/sbin", "/bin", "/sbin"]
    for directory in filter(None, dirs):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def spawn(argv: list[str], keep_fds: tuple[int, ...] = (), stdout: int | None = None,
          stderr: int | None = None, cwd: str | None = None) -> int:
    """Run argv with PDEATHSIG=SIGKILL; keep_fds stay open in the child.

    Every other descriptor of rl is close-on-exec (Python's default), so the helper gets only
    these and 0-2.
    """
    from rootless.kernel import libc

    lib = libc()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            lib.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != parent:  # rl died before the death signal was armed
                os._exit(127)
            for sig in (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(stdout if stdout is not None else null, 1)
            os.dup2(stderr if stderr is not None else null, 2)
            for fd in keep_fds:
                os.set_inheritable(fd, True)
            if cwd is not None:
                os.chdir(cwd)
            os.execv(argv[0], argv)
        except BaseException:  # noqa: BLE001
            os._exit(127)
    return pid


# How long rl waits for a killed helper to be gone. Its exit is sleeping in the kernel, not
# working: closing its tap device, its sandbox's mount namespace and its inotify instance each
# wait for an RCU grace period (measured here: ~15 ms with rl's persistent tap, ~35 ms without).
REAP_TIMEOUT = 2.0


def stop_helper(pid: int, pidfd: int | None, log: Any = None, timeout: float = REAP_TIMEOUT) -> None:
    """SIGKILL a helper and reap it, waiting up to `timeout` seconds.

    The helpers keep no state worth a graceful exit (the namespace they served is gone or
    going). Reaping is rl's job: a child rl leaves unreaped becomes a zombie of the host's init
    when rl exits, which may reap it only seconds later (or a CI runner's reaper, never).
    """
    import select

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # reaped already (exited() saw it go)
        return
    own = pidfd is None
    if own:
        try:
            from rootless.kernel import libc

            pidfd = libc().pidfd_open(pid)
        except ProcessLookupError:
            return
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)  # readable once it has exited
    finally:
        if own:
            os.close(pidfd)
    if not ready:
        if log is not None:
            log(f"helper {pid} did not exit within {timeout} s of SIGKILL: left to init")
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # not ours (a test's fake), or reaped by someone else
        pass


def exited(pid: int) -> int | None:
    """The wait status if pid has exited (and reap it), else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0
    return status if done else None


def open_log(directory: str, name: str) -> tuple[str, int]:
    """A fresh log file for a helper's stdout/stderr, read back when it fails."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    sweep_stale(directory)
    path = os.path.join(directory, name + ".log")
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def tail_log(path: str | None, lines: int = 3) -> str:
    """The last lines of a helper's log (minus pasta's syslog noise), joined for a message."""
    if not path:
        return ""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:  # the message being built says so instead
        return f"(its log {path} cannot be read: {exc.strerror})"
    kept = [ln.strip() for ln in text.splitlines()
            if ln.strip() and not ln.startswith("Failed to send") and not ln.startswith("* ")]
    return " / ".join(kept[-lines:])


def sweep_stale(directory: str) -> None:
    """Remove the files of helpers whose rl was SIGKILLed ("<helper>-<pid>.<ext>", pid gone)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        stem = name.rpartition(".")[0]
        pid = stem.rpartition("-")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass  # another rl swept it first
