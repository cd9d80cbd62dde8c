"""`rl exec`: a new process inside a running container.

    rl exec (host)                                     the new process
    1. find PID 1, check it is the same process (start time) and open /proc/PID/ns/*
    2. join its cgroup (as the host user, before leaving the host's mount namespace)
    3. setns: user first — the other setns calls need CAP_SYS_ADMIN in the namespace that owns
       the target, and joining the container's user namespace (which our uid owns) grants it
       (setns(2), user_namespaces(7)); then mnt, pid, net, uts, ipc, cgroup
    4. fork: a setns to a PID namespace applies to children only (pid_namespaces(7))
                                                       ─► chdir, user, capabilities, seccomp
                                                          (the container's plan), execve
    5. wait: forward signals, proxy the tty, report 125/126/127 or the command's status

Everything the child needs is imported before step 3: after setns(CLONE_NEWNS) the host's
Python files are no longer visible.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import struct
import sys
from contextlib import ExitStack
from typing import Any

from rootless.errors import CommandError, SetupError, StateError, describe_oserror
from rootless.fileio import read_or_empty
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.primitives.channel import Channel, error_message, raise_error
from rootless.runtime import container as container_mod
from rootless.runtime.interrupt import drain
from rootless.runtime.proc import FORWARDED, close_fds_except, exit_code_of
from rootless.runtime.state import Container, alive
from rootless.runtime.tty import RawMode, copy_chunk, set_window_size, window_size
from rootless.runtime.users import resolve_user

# setns(2) order. "user" must come first (see above); "mnt" before "pid" keeps /proc usable
# for as long as possible, though nothing below reads it after the fds are open.
NAMESPACES = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")


class ExecOptions:
    """What `rl exec` was asked for (env: (name, value) pairs over the container's).

    rl-oci's exec adds: started (called in the parent once the child exists, with its host pid
    and the pty master; True when it took the master: rl-oci writes --pid-file and sends the
    master to --console-socket through handles it opened before the setns calls), groups (the
    exact supplementary gids), rlimits, winsize, preserve_fds."""

    def __init__(self, command: list[str], interactive: bool = False, tty: bool = False,
                 env: list[tuple[str, str]] | None = None, workdir: str | None = None,
                 user: str | None = None, detach: bool = False, privileged: bool = False) -> None:
        self.command = command
        self.interactive = interactive
        self.tty = tty
        self.env = env or []
        self.workdir = workdir
        self.user = user
        self.detach = detach
        self.privileged = privileged
        self.started: Any = None
        self.groups: list[int] | None = None
        self.rlimits: list[tuple[int, int, int]] = []
        self.winsize: tuple[int, int] | None = None
        self.preserve_fds = 0


def exec_in(c: Container, opts: ExecOptions) -> int:
    if not c.running:
        raise StateError("can only create exec sessions on running containers: container state "
                         "improper", hint=f"start it first: rl start {c.name or c.cid[:12]}")
    security = plan_exec_security(c, opts)
    env = dict(c.config.get("env") or {})
    env.update(opts.env or [])
    if opts.tty:
        env.setdefault("TERM", "xterm")
    workdir = opts.workdir or c.config.get("workdir")
    user_spec = opts.user or c.config.get("user")
    return exec_into(int(c.state["pid"]), c.state.get("pid_start"), opts, env, workdir,
                     user_spec, security)


def exec_into(pid1: int, started: int | None, opts: ExecOptions, env: dict[str, str],
              workdir: str | None, user_spec: str | None, security: Any) -> int:
    """Steps 1-5 for the process `pid1` started at `started` (rl's container or rl-oci's)."""
    single = read_or_empty(f"/proc/{pid1}/setgroups").strip() == "deny"
    fds = open_namespaces(pid1)
    try:
        if not alive(pid1, started):
            raise StateError("can only create exec sessions on running containers: container "
                             "state improper")
        join_cgroup(pid1)
        lib = libc()
        for name, fd in fds:
            try:
                lib.setns(fd, 0)
            except OSError as exc:
                raise SetupError(describe_oserror(f"joining the container's {name} namespace", exc),
                                 hint="run 'rl doctor'") from None
    finally:
        for _, fd in fds:
            os.close(fd)
    return run_child(opts, env, workdir, user_spec, single, security, lib)


def plan_exec_security(c: Container, opts: ExecOptions) -> Any:
    """The container's capabilities, seccomp and no_new_privs, planned again from its spec
    (secrets are not written again; --privileged widens the capabilities as podman's)."""
    try:
        from rootless.security import plan_security
    except ImportError:
        return None
    from rootless.runtime.detach import spec_from_config

    spec = spec_from_config(c.config).replace(secrets=[], preserve_fds=0)
    if opts.privileged:
        spec = spec.replace(privileged=True)
    return plan_security(spec)


def open_namespaces(pid: int) -> list[tuple[str, int]]:
    """fds of the namespaces of pid that differ from ours (joining one's own namespace is
    pointless, and for a host network it would need privileges over the host's)."""
    out: list[tuple[str, int]] = []
    try:
        for name in NAMESPACES:
            path = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(path).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
                out.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                if name in ("user", "mnt", "pid"):
                    raise
    except OSError as exc:
        for _, fd in out:
            os.close(fd)
        raise StateError(describe_oserror(f"opening the namespaces of the container's PID 1 ({pid})",
                                          exc)) from None
    return out


def join_cgroup(pid: int) -> None:
    """Move into the cgroup v2 of PID 1, so the container's limits apply to the new process.
    A cgroup rl created (rl-<id>-...) must be joined; anything else (no delegation, v1 hosts)
    is left as it is."""
    from rootless.cgroups.plan import cgroup2_mount, cgroup_dir, own_cgroup

    theirs = own_cgroup(read_or_empty(f"/proc/{pid}/cgroup"))
    if theirs is None or theirs == own_cgroup(read_or_empty("/proc/self/cgroup")):
        return
    mount = cgroup2_mount(read_or_empty("/proc/self/mountinfo"))
    if mount is None:
        return
    procs = f"{cgroup_dir(mount, theirs)}/cgroup.procs"
    try:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    except OSError as exc:
        # A cgroup rl did not create may refuse us, and exec then runs in ours: EACCES/EPERM
        # (not delegated to this user), ENOENT (not visible in our cgroup2 mount), EROFS (the
        # mount is read-only), EBUSY (it has controllers enabled for children: the
        # no-internal-processes rule), EOPNOTSUPP (a threaded or invalid domain cgroup).
        expected = (errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS, errno.EBUSY,
                    errno.EOPNOTSUPP)
        if "/rl-" in theirs or exc.errno not in expected:
            raise SetupError(describe_oserror(f"joining the container's cgroup {procs}", exc)) from None


def run_child(opts: ExecOptions, env: dict[str, str], workdir: str | None, user_spec: str | None,
              single: bool, security: Any, lib: Any) -> int:
    chan, child_chan = Channel.pair()
    master = None
    if opts.tty:
        master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        chan.close()
        child_main(opts, env, workdir, user_spec, single, security, lib, child_chan, master)
    child_chan.close()
    if opts.started is not None and opts.started(pid, master):
        master = None
    if opts.detach:
        return wait_exec(chan, None, None)
    forward: list[int] = []

    def record(signum: int, _frame: Any) -> None:
        forward.append(signum)

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    for sig in FORWARDED:
        signal.signal(sig, record)
    try:
        code = wait_exec(chan, pid, master, wake=r, pending=forward, stdin_open=bool(opts.interactive))
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)
    return code


def child_main(opts: ExecOptions, env: dict[str, str], workdir: str | None, user_spec: str | None,
               single: bool, security: Any, lib: Any, chan: Channel, master: int | None) -> None:
    step = "prepare the process"
    try:
        for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        if not opts.detach:
            lib.set_pdeathsig(signal.SIGKILL)  # `rl exec` killed: its process goes too
        if master is not None:
            step = "open the terminal"
            attach_slave(master, opts.winsize)
        elif not opts.interactive:
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        if opts.detach and master is None:
            os.setsid()  # not killed by a ^C meant for `rl exec`'s terminal
        step = "resolve the user"
        user = resolve_user(user_spec)
        if opts.groups is not None:
            user.groups = list(opts.groups)
        env.setdefault("HOME", user.home)
        if opts.rlimits:
            step = "set the resource limits"
            container_mod.set_rlimits(opts.rlimits)
        if security is not None:
            security.apply_before_identity(lib, user)
        step = "switch to the container user"
        container_mod.set_identity(user, "single" if single else "subid")
        if security is not None:
            security.apply_before_exec(lib, user)
        if workdir:
            try:
                os.chdir(workdir)
            except OSError as exc:
                raise CommandError(
                    describe_oserror(f"workdir {workdir!r} cannot be entered", exc),
                    hint="the directory must exist in the container", exit_code=126) from None
        close_fds_except({0, 1, 2, chan.fileno()} | set(range(3, 3 + opts.preserve_fds)))
        container_mod.exec_command(list(opts.command), env, chan)
    except BaseException as exc:  # noqa: BLE001 - every failure goes home as data
        fields = error_message(step, exc)
        try:
            chan.send("error", **fields)
        except (BrokenPipeError, ConnectionResetError):
            pass  # EPIPE, ECONNRESET: `rl exec` has gone, nobody is left to tell
        except OSError as lost:
            # The channel cannot carry it (EMSGSIZE, ENOBUFS): stderr rather than nothing.
            os.write(2, f"rl: exec: {step}: {fields.get('message')} (not sent: {lost})\n".encode())
        finally:
            os._exit(int(fields.get("exit_code") or 125))
    os._exit(125)


def attach_slave(master: int, size: tuple[int, int] | None = None) -> None:
    """A new session with the pty (of the container's devpts) as its controlling terminal."""
    fcntl.ioctl(master, k.TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, k.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    os.close(master)
    set_window_size(slave, size or window_size(0))
    container_mod.take_terminal(slave)


def wait_exec(chan: Channel, pid: int | None, master: int | None, wake: int | None = None,
              pending: list[int] | None = None, stdin_open: bool = False) -> int:
    """Wait for the exec result (end-of-file: execve succeeded), then, unless detached, for
    the process (its pidfd turns readable when it exits); forward signals and copy the tty
    meanwhile."""
    error = None
    chan_open = True
    pidfd = libc().pidfd_open(pid) if pid else None
    exited = pid is None
    with ExitStack() as stack:
        if master is not None and os.isatty(0):
            stack.enter_context(RawMode(0))
        while chan_open or not exited:
            rlist = [x for x in (chan.fileno() if chan_open else None, master, wake,
                                 None if exited else pidfd) if x is not None]
            if master is not None and stdin_open:
                rlist.append(0)
            try:
                ready, _, _ = select.select(rlist, [], [])
            except InterruptedError:
                continue
            if wake is not None and wake in ready:
                drain(wake)
                for sig in pending or []:
                    _kill(pid, sig)
                if pending:
                    pending.clear()
            if chan_open and chan.fileno() in ready:
                msg = chan.recv()
                if msg is None:
                    chan_open = False
                    chan.close()
                elif msg.get("op") == "error":
                    error = msg
            if master is not None and master in ready and not copy_chunk(master, 1):
                os.close(master)
                master = None
            if master is not None and stdin_open and 0 in ready and not copy_chunk(0, master):
                stdin_open = False
            if pidfd is not None and pidfd in ready:
                exited = True
        if master is not None:
            # The process is gone; what it wrote is still in the pty's buffer.
            os.set_blocking(master, False)
            while True:
                try:
                    if not copy_chunk(master, 1):
                        break
                except BlockingIOError:
                    break
            os.close(master)
    if pidfd is not None:
        os.close(pidfd)
    status = _waitpid(pid) if pid else 0
    if error:
        raise_error(error)
    return exit_code_of(status)


def _kill(pid: int | None, sig: int) -> None:
    if pid:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # ESRCH: it has gone already; its exit status is what counts
        except OSError as exc:
            sys.stderr.write(describe_oserror(f"rl: cannot forward signal {sig} to {pid}", exc)
                             + "\n")


def _waitpid(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
