"""rl's minimal init (`--init`): PID 1 forks the command, forwards signals to it, reaps every
orphan that the kernel re-parents to PID 1, and exits with the command's status.

Without it the command itself is PID 1, and the kernel delivers to PID 1 only the signals it
installed a handler for (pid_namespaces(7)), which is why `--init` exists.

With a terminal (`-t`) the command runs in a process group of its own that is the terminal's
foreground group, so that ^C, ^\\ and ^Z from the terminal go to the command, not to PID 1.
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import os

from rootless.kernel import libc
from rootless.primitives.channel import error_message
from rootless.runtime.proc import FORWARDED

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# The job-control signals a process outside the terminal's foreground group receives when it
# changes the terminal (SIGTTOU: tcsetpgrp, tcsetattr) or reads it (SIGTTIN). Their default
# action stops the process (signal(7)).
TERMINAL_STOPS = (signal.SIGTTOU, signal.SIGTTIN)


def run_init(command: list[str], env: dict[str, str], chan: Any, tty: bool) -> NoReturn:
    from rootless.runtime.container import exec_command

    if tty:
        # Ignored before the fork, so the child inherits it: the child calls tcsetpgrp from a
        # group that is not (yet) the foreground one, and the kernel then sends SIGTTOU to
        # the caller's group unless it ignores or blocks the signal (tty_check_change()).
        # Left at the default, the child stops before it can exec, and the run hangs.
        # PID 1 keeps ignoring both: once the command owns the terminal, PID 1 is itself a
        # background process of it. (tini and catatonit do the same: ignore or block the two
        # before the fork, restore them in the child.)
        for sig in TERMINAL_STOPS:
            signal.signal(sig, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        if tty:
            give_terminal_to_own_group(chan)
        # execve keeps ignored signals ignored: a command must start with the defaults.
        for sig in (*FORWARDED, *TERMINAL_STOPS):
            signal.signal(sig, signal.SIG_DFL)
        exec_command(command, env, chan)
    libc().set_name("rl:[init]")

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    # Only now: the launcher reads end-of-file on the channel as "the command runs" and sends
    # signals from then on; PID 1 without its handlers would drop them (pid_namespaces(7)).
    chan.close()
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == child:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def give_terminal_to_own_group(chan: Any) -> None:
    """In the command's process (still in PID 1's session, whose controlling terminal is the
    container's pty on fd 0): a new process group, made the terminal's foreground group.
    Done in the child rather than by PID 1 so that the group exists before it is named.
    A failure goes home as a set-up error: without it ^C would not reach the command."""
    step = "give the terminal to the command's process group"
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(0, os.getpid())
    except OSError as exc:
        chan.send("error", **error_message(step, exc))
        os._exit(125)
