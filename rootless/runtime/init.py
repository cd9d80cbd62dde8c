"""rl's minimal init (`--init`): PID 1 forks the command, forwards signals to it, reaps every
orphan that the kernel re-parents to PID 1, and exits with the command's status.

Without it the command itself is PID 1, and the kernel delivers to PID 1 only the signals it
installed a handler for (pid_namespaces(7)), which is why `--init` exists.
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import os

from rootless.kernel import libc
from rootless.runtime.proc import FORWARDED

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn


def run_init(command: list[str], env: dict[str, str], chan: Any, tty: bool) -> NoReturn:
    from rootless.runtime.container import exec_command

    child = os.fork()
    if child == 0:
        if tty:
            # Same session as PID 1 (which owns the terminal); own process group in the
            # foreground so ^C reaches the command.
            os.setpgid(0, 0)
            try:
                os.tcsetpgrp(0, os.getpid())
            except OSError:
                pass
        for sig in FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        exec_command(command, env, chan)
    chan.close()
    libc().set_name("rl:[init]")

    def forward(signum: int, _frame: Any) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    if tty:
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
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
