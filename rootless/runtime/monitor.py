"""The monitor of a detached container (`rl run -d`, `rl start`): rl's small conmon.

    rl run -d ── prepare() ── fork ─► (setsid) ── fork ─► monitor ── fork ─► logger
        │                      │ exit                        │ fds 1/2 = the log pipes
        │◄── "started" or "error" on the notify pipe ────────┤ start_and_wait() (the launcher's
        print the id, exit                                   │   own code: helper, PID 1, signals)
                                                             │ restart per --restart
                                                             │ close the pipes, wait for the logger
                                                             └ cleanup(): state "exited" or --rm

The double fork leaves the monitor in its own session with no controlling terminal, re-parented
away from the shell (so the shell's exit or ^C does not reach it). It is the owner of the
container in state.json: when it dies (even by SIGKILL) the helper and PID 1 die with it
(PR_SET_PDEATHSIG) and `rl ps` reports the container exited with an unknown status.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, NoReturn

from rootless.errors import RlError, SetupError, UsageError
from rootless.runtime.logs import log_path

STOP_MARKER = "stop-requested"
RESTARTS_FILE = "restarts"


class RestartPolicy:
    __slots__ = ("mode", "max_retries")

    def __init__(self, mode: str, max_retries: int = 0) -> None:
        self.mode = mode
        self.max_retries = max_retries

    def wants_restart(self, code: int | None, restarts: int) -> bool:
        if self.mode == "no":
            return False
        if self.mode == "on-failure":
            failed = code is None or code != 0
            return failed and (self.max_retries <= 0 or restarts < self.max_retries)
        return True  # always, unless-stopped (a user's stop is checked by the caller)

    def text(self) -> str:
        if self.mode == "on-failure" and self.max_retries:
            return f"on-failure:{self.max_retries}"
        return self.mode


def parse_restart(text: str | None) -> RestartPolicy:
    """podman's --restart: no, on-failure[:N], always, unless-stopped."""
    mode, _, count = (text or "no").partition(":")
    if mode not in ("no", "on-failure", "always", "unless-stopped"):
        raise UsageError(f"invalid restart policy {text!r}: use no, on-failure[:N], always or "
                         "unless-stopped")
    if count and mode != "on-failure":
        raise UsageError(f"invalid restart policy {text!r}: only on-failure takes a retry count")
    try:
        retries = int(count) if count else 0
    except ValueError:
        raise UsageError(f"invalid restart policy {text!r}: the retry count must be a number") from None
    if retries < 0:
        raise UsageError(f"invalid restart policy {text!r}: the retry count must not be negative")
    return RestartPolicy(mode, retries)


def spawn_monitor(p: Any, paths: Any, log: Any, cap: int | None, policy: RestartPolicy) -> None:
    """Start the container under a monitor; return once its command runs (or raise the error
    that kept it from running, with the command's 125/126/127, or 128+N when a signal to this
    process stopped the start-up)."""
    from rootless.runtime.interrupt import STOPPING, hold_signals, received_before, unblock

    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    # Signals this process receives until the verdict go to the monitor's queue: the
    # monitor decides, as a foreground `rl run` would, whether they stop the start-up or
    # reach the command (rootless.runtime.interrupt).
    relay_r, relay_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    # The stopping signals are still blocked (since prepare(): rootless.runtime.interrupt),
    # so none is raised half-way through the fork or lost: the parent relays it and the
    # monitor records it, once each is ready.
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.close(relay_w)
            # Nothing of the caller's may stay open in a process that lives as long as the
            # container: a held flock (rl start's container lock) would block `rl rm` forever.
            from rootless.runtime.proc import close_fds_except

            preserve = int(getattr(p.spec, "preserve_fds", 0) or 0)
            # ...except an `rl network` membership, which must live as long as the container,
            # and the lock that says the container's creator lives (rootless.runtime.state).
            keep = {0, 1, 2, write_fd, relay_r} | set(range(3, 3 + preserve))
            keep |= set(p.network.keep_fds())
            if p.owner_fd is not None:
                keep.add(p.owner_fd)
            close_fds_except(keep)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            monitor_main(p, paths, log, write_fd, relay_r, cap, policy)
        finally:
            os._exit(125)
    os.close(write_fd)
    os.close(relay_r)

    def relay(signum: int, _frame: Any) -> None:
        try:
            os.write(relay_w, bytes([signum]))
        except BrokenPipeError:
            pass  # the monitor is gone: its end of the notify pipe says so

    for signum in received_before():  # a signal whose Interrupted planning swallowed
        relay(signum, None)
    for sig in STOPPING:
        signal.signal(sig, relay)
    unblock()
    os.waitpid(pid, 0)
    # One read: the message is one write of less than PIPE_BUF bytes, hence atomic (pipe(7)).
    # Waiting for end-of-file instead would wait for the helper, which holds a copy of the
    # write end for as long as the container runs.
    raw = os.read(read_fd, 4096)
    os.close(read_fd)
    # The verdict is in: what this process receives from now on is not the container's.
    hold_signals()
    os.close(relay_w)
    msg = json.loads(raw) if raw else None
    if msg is None:
        raise SetupError(f"the monitor of container {p.cid[:12]} exited before the container "
                         "started", hint="see 'rl logs " + p.cid[:12] + "'")
    if msg.get("op") == "error":
        raise RlError(msg.get("message") or "the container failed to start", hint=msg.get("hint"),
                      exit_code=int(msg.get("exit_code") or 125))


def monitor_main(p: Any, paths: Any, log: Any, notify_fd: int, relay_fd: int,
                 cap: int | None, policy: RestartPolicy) -> NoReturn:
    from rootless.kernel import libc
    from rootless.runtime.interrupt import SignalQueue, unblock

    # The queue first, then the signals that were blocked across the fork may arrive.
    p.signals = SignalQueue(relay_fd)
    unblock()
    libc().set_name("rl:[monitor]")
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    logger = Logger(out_r, err_r, log_path(paths, p.cid), cap, p)
    logger.start()
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    os.close(null)
    p.watchers = [*(p.watchers or ()), logger]

    notify = Notifier(notify_fd)
    p.notify = notify.started
    p, last_code = supervise(p, paths, log, policy, notify)
    # The container's processes are gone; close our ends of the pipes so the logger sees
    # end-of-file, and wait until every line is in the file before saying "exited".
    sys.stdout.flush()
    sys.stderr.flush()
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    logger.finish()
    from rootless.runtime.launcher import cleanup

    try:
        cleanup(p, log, last_code)
    finally:
        os._exit(0)


class Logger:
    """The logger process of a detached container, kept alive as conmon keeps its logs: when
    it dies (killed, or a write failed), the monitor starts another on the same pipes, so the
    container's output waits in the pipe instead of being dropped (only a line the dead one
    had read but not written is lost); the restart is said in the log itself and recorded
    for `rl inspect`. After MAX_RESTARTS deaths the container is stopped instead: output
    that cannot be kept must not be dropped without end (conmon, too, ends a container whose
    logging it cannot do)."""

    MAX_RESTARTS = 5

    def __init__(self, out_r: int, err_r: int, path: str, cap: int | None, p: Any) -> None:
        self.out_r = out_r
        self.err_r = err_r
        self.path = path
        self.cap = cap
        self.p = p
        self.pid = 0
        self.pidfd: int | None = None
        self.restarts = 0

    def start(self) -> None:
        from rootless.runtime.launcher import open_pidfd

        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                from rootless.kernel import libc
                from rootless.runtime.logs import logger_main
                from rootless.runtime.proc import close_fds_except

                self.p.signals.close_in_child()
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    # The logger ends when the pipes close, so no line the container wrote
                    # is lost.
                    signal.signal(sig, signal.SIG_IGN)
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                # Only the read ends: a write end here would keep the pipes open for ever.
                close_fds_except({0, 1, 2, self.out_r, self.err_r})
                libc().set_name("rl:[logger]")
                logger_main(self.out_r, self.err_r, self.path, self.cap)
            except BaseException:  # noqa: BLE001  (its exit status is what the monitor sees)
                code = 1
            os._exit(code)
        self.pid = pid
        self.pidfd = open_pidfd(pid)

    def fileno(self) -> int:
        assert self.pidfd is not None
        return self.pidfd

    def reap(self) -> int:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        _, status = os.waitpid(self.pid, 0)
        return status

    def fire(self, session: Any) -> None:
        """Called by the wait loop when the logger exited while the container runs."""
        status = self.reap()
        self.p.watchers.remove(self)
        from rootless.runtime import state
        from rootless.runtime.proc import exit_code_of

        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exited with status {exit_code_of(status)}")
        if self.restarts >= self.MAX_RESTARTS:
            text = (f"the logger {how} after {self.restarts} restarts: stopping the container "
                    "rather than dropping its output")
            state.note_problem(self.p, text)
            session.signal_pid1(signal.SIGKILL)
            self.pid = 0
            return
        self.restarts += 1
        self.start()
        self.p.watchers.append(self)
        text = (f"the logger (pid {self.pid}) {how} and was restarted; output it had read but "
                "not written may be missing")
        # Into the new logger (fd 2 is the container's stderr pipe): a line in the log itself.
        sys.stderr.write(f"rl: {text}\n")
        sys.stderr.flush()
        state.note_problem(self.p, text)

    def finish(self) -> None:
        """Wait for the logger to write the last lines; if it died, a new one drains the
        pipes (they hold what the container wrote last)."""
        while self.pid:
            status = self.reap()
            if status == 0 or self.restarts >= self.MAX_RESTARTS:
                return
            self.restarts += 1
            self.start()


class Notifier:
    """The one message to the waiting `rl run -d`: "started", or the error."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def send(self, op: str, **fields: Any) -> None:
        if self.fd is None:
            return
        fields["op"] = op
        if len(str(fields.get("message", ""))) > 2000:
            fields["message"] = str(fields["message"])[:2000] + "..."
        try:
            os.write(self.fd, json.dumps(fields).encode()[:4000])
        except BrokenPipeError:
            pass  # `rl run -d` is gone (killed): nobody waits for the verdict
        os.close(self.fd)
        self.fd = None

    def started(self) -> None:
        self.send("started")


def supervise(p: Any, paths: Any, log: Any, policy: RestartPolicy,
              notify: Notifier) -> tuple[Any, int | None]:
    """Run the container, again per the restart policy: the last run and its exit code (the
    caller cleans that one up)."""
    from rootless.runtime.interrupt import Interrupted
    from rootless.runtime.launcher import cleanup, prepare, start_and_wait
    from rootless.runtime.state import runtime_dir

    restarts = 0
    while True:
        code: int | None
        try:
            code = start_and_wait(p, paths, log)
        except Interrupted as exc:
            # A signal before the command ran (here or relayed by `rl run -d`): no restart.
            notify.send("error", message=exc.message, exit_code=exc.exit_code)
            sys.stderr.write(f"Error: {exc.message}\n")
            return p, exc.exit_code
        except RlError as exc:
            code = exc.exit_code
            notify.send("error", message=exc.message, hint=exc.hint, exit_code=exc.exit_code)
            sys.stderr.write(f"Error: {exc.message}\n")
        except BaseException as exc:  # noqa: BLE001
            code = 125
            notify.send("error", message=f"{type(exc).__name__}: {exc}", exit_code=125)
        notify.send("started")  # a command that ran and exited at once still started
        rdir = runtime_dir(paths, p.cid)
        if os.path.exists(f"{rdir}/{STOP_MARKER}") or not policy.wants_restart(code, restarts):
            return p, code
        cleanup(p, log, code)
        time.sleep(min(0.1 * (2 ** restarts), 5.0))
        if os.path.exists(f"{rdir}/{STOP_MARKER}"):
            return p, code
        restarts += 1
        try:
            p = _again(p, paths, log, prepare)
        except RlError as exc:
            sys.stderr.write(f"Error: restarting the container: {exc.message}\n")
            return p, code
        try:
            with open(f"{rdir}/{RESTARTS_FILE}", "w") as f:
                f.write(str(restarts))
        except FileNotFoundError:
            pass  # `rl rm -f` removed the runtime directory: the stop marker follows


def _again(p: Any, paths: Any, log: Any, prepare: Any) -> Any:
    fresh = prepare(p.spec, paths, log, existing=p.cid)
    fresh.notify = None
    # What lives as long as the monitor: the creator's lock, the signal queue, the logger.
    fresh.owner_fd, fresh.signals, fresh.watchers = p.owner_fd, p.signals, p.watchers
    return fresh
