"""`rl run -it --init` on a real terminal: a pty this test opens and makes the controlling
terminal of `rl`, with `rl` in its foreground process group, as a user's shell would.

rl's init forks the command into its own process group and gives it the container's terminal
(tcsetpgrp), so that ^C reaches the command and not PID 1. A process that is not in the
terminal's foreground group and calls tcsetpgrp gets SIGTTOU (tty_check_change in the kernel's
drivers/tty/tty_jobctrl.c) unless it ignores or blocks it: the command would be stopped before
it runs, and the run would hang. Every case here has a deadline; a hang fails it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import time
from collections.abc import Callable

import pytest

pytestmark = pytest.mark.integration

DEADLINE = 20.0


class Terminal:
    """`rl` started on a new pty as its controlling terminal (session leader, foreground)."""

    def __init__(self, rl, args: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = rl.popen(*args, stdin=slave, stdout=slave, stderr=slave,
                             start_new_session=True, preexec_fn=_take_controlling_terminal)
        os.close(slave)
        self.output = b""

    def read_until(self, marker: bytes, deadline: float = DEADLINE) -> bytes:
        """Read the terminal until `marker` appears; fail (and end rl) on the deadline."""
        self._pump(lambda: marker in self.output, f"no {marker!r}", deadline)
        return self.output

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, deadline: float = DEADLINE) -> int:
        """Wait for rl to exit, draining the terminal; fail (and end rl) on the deadline."""
        self._pump(lambda: self.proc.poll() is not None, "rl did not exit", deadline)
        while self._read():  # what the container wrote last
            pass
        os.close(self.master)
        return self.proc.returncode

    def _pump(self, done: Callable[[], bool], failure: str, deadline: float) -> None:
        end = time.monotonic() + deadline
        while not done():
            left = end - time.monotonic()
            if left <= 0:
                self.kill()
                pytest.fail(f"{failure} within {deadline:.0f} s; the terminal showed "
                            f"{self.output!r}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if ready:
                self._read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def _read(self) -> bool:
        try:
            ready, _, _ = select.select([self.master], [], [], 0)
            if not ready:
                return False
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: every slave descriptor is closed (rl has exited)
            return False
        self.output += chunk
        return bool(chunk)


def _take_controlling_terminal() -> None:
    # After setsid (start_new_session), stdin — the pty — becomes the controlling terminal,
    # and the new session's only process group (rl's) is its foreground group.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def terminal(rl, busybox_rootfs):
    started: list[Terminal] = []

    def start(*cmd: str, opts: tuple[str, ...] = ("--init",)) -> Terminal:
        term = Terminal(rl, ["run", "--rm", "-it", *opts, "--network", "none",
                             "--rootfs", str(busybox_rootfs), *cmd])
        started.append(term)
        return term

    yield start
    for term in started:
        term.kill()


def test_init_tty_command_runs_and_its_exit_code_is_kept(terminal):
    term = terminal("sh", "-c", "echo started; tty; exit 3")
    assert term.finish() == 3, term.output
    assert b"started" in term.output and b"/dev/pts/0" in term.output


def test_init_tty_command_reads_the_terminal(terminal):
    term = terminal("sh", "-c", "echo ready; read x; echo got-$x")
    term.read_until(b"ready")
    term.write(b"hello\r")
    term.read_until(b"got-hello")
    assert term.finish() == 0, term.output


def test_init_tty_command_owns_the_terminals_foreground_group(terminal):
    # The command's process group is the terminal's foreground group, and PID 1 (the init)
    # is not in it: ^C goes to the command only. `ps -o pid,pgid,tpgid` is not in busybox's
    # applets everywhere; /proc/self/stat fields 5 (pgrp) and 8 (tpgid) say the same.
    term = terminal("sh", "-c", "set -- $(cat /proc/self/stat); echo pgrp=$5 tpgid=$8 end")
    assert term.finish() == 0, term.output
    fields = dict(p.split("=") for p in term.output.decode().split("end")[0].split()
                  if "=" in p)
    assert fields["pgrp"] == fields["tpgid"] and fields["pgrp"] != "1", term.output


def test_init_tty_ctrl_c_ends_the_command_with_130(terminal):
    term = terminal("sh", "-c", "echo ready; sleep 60; echo not-interrupted")
    term.read_until(b"ready")
    term.write(b"\x03")
    assert term.finish() == 130, term.output
    assert b"not-interrupted" not in term.output


def test_init_tty_interactive_shell(terminal):
    # An interactive shell does its own job control (tcsetpgrp for each command it runs).
    term = terminal("sh")
    term.write(b"echo in-$((6*7))\r")
    term.read_until(b"in-42")
    term.write(b"read y; echo y-$y\r")
    term.write(b"typed\r")
    term.read_until(b"y-typed")
    term.write(b"exit 4\r")
    assert term.finish() == 4, term.output


def test_tty_without_init_still_works(terminal):
    # The same terminal path without --init: the command is PID 1 and owns the terminal.
    term = terminal("sh", "-c", "echo ready; read x; echo got-$x; exit 5", opts=())
    term.read_until(b"ready")
    term.write(b"bye\r")
    term.read_until(b"got-bye")
    assert term.finish() == 5, term.output


def test_init_without_tty_keeps_stdin_and_exit_code(rl, busybox_rootfs):
    r = subprocess.run([rl.exe, "run", "--rm", "-i", "--init", "--network", "none",
                        "--rootfs", str(busybox_rootfs), "sh", "-c", "read x; echo got-$x; exit 6"],
                       input=b"piped\n", capture_output=True, env=rl.env, timeout=DEADLINE)
    assert r.returncode == 6, r.stderr
    assert r.stdout == b"got-piped\n"
