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
    that kept it from running, with the command's 125/126/127)."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            # Nothing of the caller's may stay open in a process that lives as long as the
            # container: a held flock (rl start's container lock) would block `rl rm` forever.
            from rootless.runtime.proc import close_fds_except

            preserve = int(getattr(p.spec, "preserve_fds", 0) or 0)
            # ...except an `rl network` membership, which must live as long as the container.
            close_fds_except({0, 1, 2, write_fd} | set(range(3, 3 + preserve))
                             | set(p.network.keep_fds()))
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            monitor_main(p, paths, log, write_fd, cap, policy)
        finally:
            os._exit(125)
    os.close(write_fd)
    os.waitpid(pid, 0)
    # One read: the message is one write of less than PIPE_BUF bytes, hence atomic (pipe(7)).
    # Waiting for end-of-file instead would wait for the helper, which holds a copy of the
    # write end for as long as the container runs.
    while True:
        try:
            raw = os.read(read_fd, 4096)
            break
        except InterruptedError:
            continue
    os.close(read_fd)
    msg = json.loads(raw) if raw else None
    if msg is None:
        raise SetupError(f"the monitor of container {p.cid[:12]} exited before the container "
                         "started", hint="see 'rl logs " + p.cid[:12] + "'")
    if msg.get("op") == "error":
        raise RlError(msg.get("message") or "the container failed to start", hint=msg.get("hint"),
                      exit_code=int(msg.get("exit_code") or 125))


def monitor_main(p: Any, paths: Any, log: Any, notify_fd: int, cap: int | None,
                 policy: RestartPolicy) -> NoReturn:
    from rootless.kernel import libc
    from rootless.runtime.logs import log_path, logger_main

    libc().set_name("rl:[monitor]")
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    logger = os.fork()
    if logger == 0:
        code = 0
        try:
            for fd in (out_w, err_w, notify_fd):
                os.close(fd)
            os.dup2(null, 1)
            os.dup2(null, 2)
            libc().set_name("rl:[logger]")
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                # The logger ends when the pipes close, so no line the container wrote is lost.
                signal.signal(sig, signal.SIG_IGN)
            logger_main(out_r, err_r, log_path(paths, p.cid), cap)
        except BaseException:  # noqa: BLE001
            code = 1
        os._exit(code)
    os.close(out_r)
    os.close(err_r)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    os.close(null)

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
    try:
        os.waitpid(logger, 0)
    except ChildProcessError:
        pass
    from rootless.runtime.launcher import cleanup

    try:
        cleanup(p, log, last_code)
    finally:
        os._exit(0)


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
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def started(self) -> None:
        self.send("started")


def supervise(p: Any, paths: Any, log: Any, policy: RestartPolicy,
              notify: Notifier) -> tuple[Any, int | None]:
    """Run the container, again per the restart policy: the last run and its exit code (the
    caller cleans that one up)."""
    from rootless.runtime.launcher import cleanup, prepare, start_and_wait
    from rootless.runtime.state import runtime_dir

    restarts = 0
    while True:
        code: int | None
        try:
            code = start_and_wait(p, paths, log)
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
        except OSError:
            pass


def _again(p: Any, paths: Any, log: Any, prepare: Any) -> Any:
    fresh = prepare(p.spec, paths, log, existing=p.cid)
    fresh.notify = None
    return fresh
