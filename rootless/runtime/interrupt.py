"""Signals to `rl run` before and while its container runs.

The rule: a signal that rl forwards to a running container (proc.FORWARDED) ends a run whose
command has not started yet — rl stops the start-up, cleans up, says `Error: interrupted` and
exits 128+N, the status a shell shows for a process killed by signal N — and once the command
runs, the container gets it (podman's --sig-proxy). No signal is lost in between and none kills
rl before its clean-up:

  from `rl run`'s first line   raise_on_signals(): the handler raises Interrupted wherever
                               planning is (resolving or pulling the image; like ^C's
                               KeyboardInterrupt), so the code that planned unwinds through
                               its own clean-up
  around a step and the        defer() ... unblock(): blocked, so pending in the kernel, and
  variable that records it     raised right after (the runtime record and its lock's fd; the
                               name claimed and the spec that names it); and from the end of
                               planning until the queue below exists, where no clean-up
                               could see a raise
  from the fork of the helper  SignalQueue, then unblock(): handlers only record the signal
                               and wake the launcher's select loop (set_wakeup_fd), which
                               decides between the steps: stop the start-up, forward it to
                               PID 1, or resize the pty (SIGWINCH)

Blocking is kept short and no process is started while it lasts (a blocked mask is inherited
by fork and exec), except the -d monitor, which unblocks once its queue exists.

For `rl run -d` the monitor owns the queue and `rl run -d` relays what it receives into it
through a pipe (rootless.runtime.monitor).

podman, for comparison (4.3, measured): a SIGTERM or SIGHUP during its set-up kills it (the
shell sees 143/129) or ends it with 0 or 1, leaving the container "Created"; later ones reach
the container. rl keeps the outcome a shell expects and leaves nothing behind.
"""

from __future__ import annotations

import os
import signal

from rootless.runtime.proc import FORWARDED

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The forwarded signals whose default action ends a process (all but SIGWINCH).
STOPPING = tuple(s for s in FORWARDED if s != signal.SIGWINCH)


class Interrupted(BaseException):
    """A signal ended the run before its command started. A BaseException, as
    KeyboardInterrupt: set-up code that catches Exception must not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def message(self) -> str:
        if self.signum == signal.SIGINT:
            return "interrupted"
        return f"interrupted by {signal.Signals(self.signum).name}"

    def __str__(self) -> str:
        return self.message


class _RaiseOnce:
    """The planning phase's handler: raises Interrupted for the first stopping signal, only
    records the later ones (the clean-up the first starts must not be cut short). Recorded
    too because a raise can be lost: one that lands in a weakref callback or a __del__ (the
    import system runs some) is only printed as "Exception ignored", so the signal queue
    takes the records over (received_before)."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, _frame: Any) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            raise Interrupted(signum)


def raise_on_signals() -> None:
    """Make the stopping signals raise Interrupted in the main thread (once)."""
    import sys

    handler = _RaiseOnce()
    for sig in STOPPING:
        signal.signal(sig, handler)
    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        # A swallowed Interrupted is not an error to print: its record makes it count later.
        if not isinstance(info.exc_value, Interrupted):
            default_hook(info)

    sys.unraisablehook = unraisable


def received_before() -> list[int]:
    """The stopping signals raise_on_signals' handler has seen: after the first, whose
    Interrupted did not end planning (it was swallowed), they are still to be acted on."""
    handler = signal.getsignal(signal.SIGTERM)
    return list(handler.received) if isinstance(handler, _RaiseOnce) else []


def defer() -> None:
    """Block the stopping signals: a signal waits (pending in the kernel) instead of raising
    in the middle of a step whose half-done state the clean-up could not see. unblock()
    delivers it, to whichever handler is installed by then."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)


def unblock() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)


def hold_signals() -> None:
    """From here to the exit, the stopping signals change nothing (the run is over)."""
    for sig in STOPPING:
        signal.signal(sig, _hold)


def _hold(_signum: int, _frame: Any) -> None:
    """Not SIG_IGN: an ignored disposition would survive execve into a container's command."""


class SignalQueue:
    """The forwarded signals, recorded by their handlers and read by a select loop (the wake
    pipe of signal.set_wakeup_fd). `relay`: a pipe on which another process (`rl run -d`,
    waiting for its container to start) writes the numbers of the signals it received."""

    def __init__(self, relay: int | None = None) -> None:
        self.pending: list[int] = received_before()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.relay = relay
        if relay is not None:
            os.set_blocking(relay, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in FORWARDED:
            signal.signal(sig, self._record)

    def _record(self, signum: int, _frame: Any) -> None:
        self.pending.append(signum)

    def fds(self) -> list[int]:
        return [self.wake_r] if self.relay is None else [self.wake_r, self.relay]

    def take(self) -> list[int]:
        """The signals received since the last call, oldest first."""
        drain(self.wake_r)
        if self.relay is not None:
            try:
                data = os.read(self.relay, 64)
            except BlockingIOError:
                data = None
            if data == b"":  # the relaying process is gone
                os.close(self.relay)
                self.relay = None
            elif data:
                self.pending.extend(b for b in data if b in FORWARDED)
        taken, self.pending = self.pending, []
        return taken

    def close_in_child(self) -> None:
        """In a forked child that must not feed this queue (the -d logger)."""
        signal.set_wakeup_fd(-1)
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)


def drain(fd: int) -> None:
    """Empty a non-blocking wake pipe."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
