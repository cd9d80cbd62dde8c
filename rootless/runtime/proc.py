"""Small process helpers shared by the launcher, PID 1 and rl's init."""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import errno
import os

# Signals `rl` forwards to the container (the rest keep their default meaning for rl itself).
FORWARDED = (
    signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
    signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
)


def exit_code_of(status: int) -> int:
    """The shell's convention: the exit code, or 128+N when signal N killed the process."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def parse_signal(text: str | int) -> int:
    """SIGTERM, TERM, term, 15 -> 15. Raises ValueError for anything else."""
    if isinstance(text, int) or str(text).isdigit():
        num = int(text)
        if 0 < num < signal.NSIG:
            return num
        raise ValueError(f"invalid signal: {text}")
    import signal as signals  # the enum of names, off the start-up path

    name = str(text).upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return int(signals.Signals[name])
    except KeyError:
        if name.startswith("SIGRTMIN+") and name[9:].isdigit():
            return int(signal.SIGRTMIN) + int(name[9:])
        raise ValueError(f"invalid signal: {text}") from None


def close_fds_except(keep: set[int]) -> None:
    """Close every descriptor not in keep (no fd from rl may leak into the container)."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except FileNotFoundError:
        close_range_except(keep)  # ENOENT: no /proc mounted in this mount namespace
        return
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError as exc:
                # EBADF: the descriptor listdir read /proc/self/fd through, closed since.
                if exc.errno != errno.EBADF:
                    raise


def close_range_except(keep: set[int]) -> None:
    """Close every descriptor below the open-files limit that is not in keep, without /proc
    (close_range(2) where the kernel has it; os.closerange ignores EBADF itself)."""
    start = 0
    for fd in sorted(keep):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, max(os.sysconf("SC_OPEN_MAX"), start))
