"""The launcher: `rl run` outside the container. The protocol, once:

  launcher (the user, host namespaces)          helper                     PID 1
  1. plan: ids, storage, mounts, env
  2. fork ──────────────────────────────────►  PDEATHSIG=KILL
                                               unshare(NEWUSER)
  3.        ◄──────────────────── "userns" ──
     write uid_map/gid_map (newuidmap or direct)
     move the helper into the container's cgroup
  4.        ── "go" ────────────────────────►  setresuid/gid(0)
                                               unshare(UTS|IPC|NET|CGROUP|PID)
                                               fork ──────────────────────► PDEATHSIG=KILL
  5.        ◄──────────── "pid1" {pid} ─────                               unshare(NEWNS), mounts,
     pidfd_open(pid1); network helper                                       pivot_root, tty...
     ◄──────────────────────────────────── "pty" {fd} (with -t) ─────────
     ── "go" (only when the network must be ready first) ───────────────►
     ◄──────────────────────────────────── EOF (exec succeeded) or "error" ─
  6. forward signals to PID 1, proxy the tty, enforce --timeout
  7.        ◄──── "exit" {status} ──────────   waitpid(pid1); --rm cleanup
     report the exit status exactly; clean up what is left

The helper stays in the host's mount namespace (PID 1 makes its own), so after PID 1 exits it
can still reach the container's storage and, being root in the user namespace, remove files
that belong to subordinate ids.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from rootless.errors import RlError, SetupError, UsageError
from rootless.fileio import read_or_empty
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.paths import Paths
from rootless.primitives.channel import Channel, error_message, raise_error
from rootless.primitives.userns import apply_mapping, become_root, default_mapping, unshare_user
from rootless.runtime.container import DEFAULT_PATH, ContainerSetup, container_main
from rootless.runtime.mounts import plan_mounts
from rootless.runtime.proc import FORWARDED
from rootless.runtime.storage import (
    ContainerDirs,
    host_resolv_conf,
    hosts_file,
    new_container_id,
    remove_tree_as_root,
)
from rootless.spec import RunSpec

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

TIMEOUT_EXIT = 255


class Log:
    """Debug lines with timings on stderr (`--log-level debug`)."""

    def __init__(self, level: str) -> None:
        self.enabled = level == "debug"
        self.start = time.monotonic()

    def __call__(self, text: str) -> None:
        if self.enabled:
            ms = (time.monotonic() - self.start) * 1000
            sys.stderr.write(f"rl: [{ms:7.1f} ms] {text} @{time.monotonic():.4f}\n")


def notice(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


class Prepared:
    """The result of planning a run: everything needed to start it."""

    __slots__ = ("spec", "cid", "dirs", "setup", "mapping", "helpers", "ns_flags", "network", "image",
                 "cgroup",
                 # lifecycle (rootless.runtime.state/detach): where state lives; a callable run
                 # once the command was exec'd (`rl run -d` reports success then); record:
                 # False for a build step, which is no container of ps/inspect/rm
                 "paths", "notify", "record")

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))


def run(spec: RunSpec, paths: Paths, existing: str | None = None) -> int:
    """Run a container in the foreground; returns the exit status to report. `existing`: the
    id of a stopped container to run again (`rl start -a`)."""
    log = Log(spec.log_level)
    if log.enabled:
        import traceback  # noqa: F401  (PID 1 prints tracebacks at debug level, after pivot_root)
    return launch(prepare(spec, paths, log, existing), paths, log)


def launch(prepared: Prepared, paths: Paths, log: Log) -> int:
    """Start a planned container, wait for it and clean up; returns the exit status."""
    code: int | None = None
    try:
        code = start_and_wait(prepared, paths, log)
        return code
    finally:
        cleanup(prepared, log, code)


def prepare(spec: RunSpec, paths: Paths, log: Log, existing: str | None = None, *,
            source: Any = None, dirs: ContainerDirs | None = None,
            record: bool = True) -> Prepared:
    """Plan a run. `existing` is the id of a stopped container to start again (`rl start`,
    --restart): its storage, name and config are kept. A build step (rl build's RUN) gives
    its own rootfs `source` (layers) and storage `dirs`, created by the caller, and
    `record=False`: no name, no config.json, no state, and its upper directory is kept."""
    from rootless.runtime import rootfs as rootfs_mod

    if source is None:
        source = rootfs_mod.resolve(spec, paths, log)
    command = source.command
    if not command:
        raise UsageError("no command specified", hint="give a command after the image, e.g. 'rl run IMAGE sh'")
    mapping, helpers = default_mapping(spec.userns, spec.uidmaps, spec.gidmaps)
    if mapping.notice and not spec.quiet:
        notice(mapping.notice)
    log(f"id mapping ({mapping.mode}): " + "; ".join(r.line() for r in mapping.uid_map))

    cid = existing or new_container_id()
    hostname = spec.hostname or cid[:12]
    own_dirs = dirs is None
    if dirs is None:
        dirs = ContainerDirs(os.path.join(paths.containers_dir, cid))
        if existing is None:
            dirs.create()
    try:
        from rootless.network import plan_network

        network = plan_network(spec, source.exposed_ports or [], hostname)
        etc_files = {"/etc/hostname": dirs.write_file("hostname", hostname + "\n")}
        if network.mode == "host":
            etc_files["/etc/hosts"] = dirs.write_file("hosts", read_or_empty("/etc/hosts"))
        elif not spec.no_hosts:
            etc_files["/etc/hosts"] = dirs.write_file(
                "hosts", hosts_file(hostname, spec.name, _parse_add_hosts(spec.add_hosts),
                                    network.host_ip))
        etc_files["/etc/resolv.conf"] = dirs.write_file("resolv.conf", resolv_conf(spec, network))
        env = build_env(spec, source.env, hostname)
        security = None
        try:
            from rootless.security import plan_security
        except ImportError:
            plan_security = None  # type: ignore[assignment]
        masked: list[str] = []
        readonly_paths: list[str] = []
        extra_mounts: list[Any] = []
        if plan_security is not None:
            security = plan_security(spec)
            masked, readonly_paths = security.masked_paths(), security.readonly_paths()
            extra_mounts = security.extra_mounts(dirs)
        cgroup = None
        if spec.limits is not None and spec.cgroups != "disabled":
            from rootless.cgroups import prepare_cgroup

            # Raises CgroupError (125) for a limit that cannot be applied, or warns and drops
            # it with --cgroups=best-effort. Creates nothing yet.
            cgroup = prepare_cgroup(spec, cid, log)
        plan = plan_mounts(
            host_network=network.mode == "host",
            volumes=spec.volumes,
            etc_files=etc_files,
            gid_5_mapped=mapping.container_gid_to_host(5) is not None,
            read_only=spec.read_only,
            read_only_tmpfs=spec.read_only_tmpfs,
            masked=masked,
            readonly_paths=readonly_paths,
            cgroup_ns=cgroup is not None,
        )
        plan += extra_mounts
        for op in plan:
            log(f"plan: {op.describe()}")
        size = None
        if spec.tty:
            from rootless.runtime.tty import window_size

            size = window_size(0)
        setup = ContainerSetup(
            rootfs_data=source.mount_data(dirs),
            merged=str(dirs.merged),
            plan=plan,
            hostname=hostname,
            read_only=spec.read_only,
            command=command,
            env=env,
            workdir=spec.workdir or source.workdir or None,
            user=spec.user or source.user or None,
            tty=spec.tty,
            winsize=size,
            interactive=spec.interactive,
            init=spec.init,
            bring_up_lo=network.mode != "host",
            wait_for_go=network.needs_go,
            security=security,
            preserve_fds=spec.preserve_fds,
            mapping_mode=mapping.mode,
            debug=log.enabled,
        )
        from rootless.runtime import state

        if existing is None and record:
            state.reserve_name(paths, spec.name, cid, spec.cidfile)
            if spec.name is None:
                # podman names every container; the name is released like a --name one.
                spec = spec.replace(name=state.claim_generated_name(paths, cid))  # type: ignore[assignment]
            dirs.write_config({
                "id": cid, "name": spec.name, "hostname": hostname, "command": command,
                "image": source.image_name, "image_id": source.image_id,
                "rootfs": spec.rootfs, "created": time.time(),
                # for ps/inspect/exec/start (rootless.runtime.state)
                "boot_id": state.boot_id(), "env": env, "workdir": setup.workdir,
                "user": setup.user, "stop_signal": spec.stop_signal or source.stop_signal,
                "network": network.mode,
                "spec": dict(spec.as_dict(), rootfs=spec.rootfs and os.path.abspath(spec.rootfs)),
            })
    except BaseException:
        if existing is None and record:
            from rootless.runtime import state

            state.release_reservations(paths, spec, cid)
        if existing is None and own_dirs:
            dirs.remove()
        raise
    ns = k.CLONE_NEWUTS | k.CLONE_NEWIPC | k.CLONE_NEWPID | k.CLONE_NEWCGROUP
    if network.new_netns and not network.early_start:
        ns |= k.CLONE_NEWNET
    return Prepared(spec=spec, cid=cid, dirs=dirs, setup=setup, mapping=mapping, helpers=helpers,
                    ns_flags=ns, network=network, image=source, cgroup=cgroup, paths=paths,
                    record=record)


def resolv_conf(spec: RunSpec, network: Any) -> str:
    text = host_resolv_conf()
    if network.mode != "host":
        # A resolver on the host's loopback (systemd-resolved's stub) is not reachable from
        # the container's namespace: use its upstream servers (rootless.network.dns).
        from rootless.network.dns import without_local_stub

        text = without_local_stub(text)
    if network.dns:
        text = "".join(f"nameserver {d}\n" for d in network.dns)
    if spec.dns or spec.dns_search or spec.dns_options:
        lines = [f"nameserver {d}" for d in spec.dns] or [
            ln for ln in text.splitlines() if ln.startswith("nameserver")]
        if spec.dns_search:
            lines.append("search " + " ".join(spec.dns_search))
        if spec.dns_options:
            lines.append("options " + " ".join(spec.dns_options))
        text = "\n".join(lines) + "\n"
    return text


def _parse_add_hosts(entries: list[str]) -> list[tuple[str, str]]:
    out = []
    for entry in entries:
        host, sep, ip = entry.partition(":")
        if not sep or not host or not ip:
            raise UsageError(f"invalid --add-host {entry!r}: expected NAME:IP")
        out.append((host, ip))
    return out


def build_env(spec: RunSpec, image_env: list[str], hostname: str) -> dict[str, str]:
    """PATH, HOSTNAME, container=rl, TERM (with -t), the image's Env, --env-file, -e."""
    env: dict[str, str] = {"PATH": DEFAULT_PATH}
    for item in image_env:
        name, _, value = item.partition("=")
        env[name] = value
    env["HOSTNAME"] = hostname
    env["container"] = "rl"
    if spec.tty:
        env["TERM"] = "xterm"
    for name, value in spec.env:
        env[name] = value
    return env


# -- starting ------------------------------------------------------------------------------

def start_and_wait(p: Prepared, paths: Paths, log: Log) -> int:
    hchan, hchan_child = Channel.pair()
    cchan, cchan_child = Channel.pair()
    sys.stdout.flush()
    sys.stderr.flush()
    launcher_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        hchan.close()
        cchan.close()
        helper_main(p, hchan_child, cchan_child, launcher_pid)
    hchan_child.close()
    cchan_child.close()
    session = Session(p, pid, hchan, cchan, log)
    try:
        return session.run()
    finally:
        session.close()


def helper_main(p: Prepared, hchan: Channel, cchan: Channel, launcher_pid: int) -> NoReturn:
    """The helper: owns the new namespaces, forks PID 1, reports its exit status."""
    step = "start the helper"
    try:
        lib = libc()
        lib.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != launcher_pid:  # the launcher died before PDEATHSIG was armed
            os._exit(1)
        lib.set_name("rl:[helper]")
        for sig in FORWARDED:
            # The launcher signals PID 1 itself; the helper must not die of a ^C meant for it.
            signal.signal(sig, signal.SIG_IGN)
        step = "create the user namespace"
        if p.network.join_userns:
            # An `rl network`'s containers share its user namespace (rootless.network.bridge):
            # setns(CLONE_NEWUSER) is allowed to the namespace's owner, which is this user.
            step = "join the network's user namespace"
            ns_fd = os.open(p.network.join_userns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                lib.setns(ns_fd, k.CLONE_NEWUSER)
            finally:
                os.close(ns_fd)
        else:
            unshare_user(lib)
            if p.network.early_start:
                # The new user namespace's creator holds every capability in it even before
                # its maps exist: the network namespace can exist now, so the user-mode
                # helper starts while the maps are written and PID 1 is set up.
                step = "create the network namespace"
                lib.unshare(k.CLONE_NEWNET)
        hchan.send("userns")
        go = hchan.recv()
        if not go or go.get("op") != "go":
            os._exit(1)
        become_root(p.mapping)
        step = "create the namespaces"
        lib.unshare(p.ns_flags)
        pid1 = os.fork()
        if pid1 == 0:
            hchan.close()
            for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
                # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve, and
                # `yes | head` must behave as in a shell.
                signal.signal(sig, signal.SIG_DFL)
            container_main(p.setup, cchan)
        cchan.close()
        hchan.send("pid1", pid=pid1)
        while True:
            try:
                _, status = os.waitpid(pid1, 0)
                break
            except InterruptedError:
                continue
        if p.setup.debug:
            sys.stderr.write(f"rl: [helper] PID 1 reaped at {time.monotonic():.4f}\n")
        if p.spec.remove:
            try:
                remove_tree_as_root(p.dirs.root)
            except OSError:
                pass
        hchan.send("exit", status=status)
    except BaseException as exc:  # noqa: BLE001
        try:
            hchan.send("error", **error_message(step, exc))
        except OSError:
            pass
        os._exit(1)
    os._exit(0)


class Session:
    """The launcher's side of a running container: signals, tty, timeout, exit status."""

    def __init__(self, p: Prepared, helper_pid: int, hchan: Channel, cchan: Channel, log: Log) -> None:
        self.p = p
        self.helper_pid = helper_pid
        self.hchan = hchan
        self.cchan: Channel | None = cchan
        self.log = log
        self.pid1: int | None = None
        self.pidfd: int | None = None
        self.master: int | None = None
        self.error: dict[str, Any] | None = None
        self.status: int | None = None
        self.timed_out = False
        self.pending: list[int] = []
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.saved_handlers: dict[int, Any] = {}
        self.raw = None

    # -- the steps ----------------------------------------------------------------------
    def run(self) -> int:
        self.install_signal_handlers()
        msg = self.hchan.recv()
        if msg is None or msg.get("op") == "error":
            self.reap_helper()
            if msg:
                raise_error(msg)
            raise SetupError("the helper process exited before creating the user namespace")
        self.log("helper in its user namespace")
        if self.p.network.join_userns is None:  # a joined namespace has its maps already
            if self.p.network.early_start:
                self.p.network.spawn(self.helper_pid, self.log)
            apply_mapping(self.helper_pid, self.p.mapping, self.p.helpers)
            self.log("id maps written")
        if self.p.cgroup is not None:
            # Limits are in place before PID 1 exists: the helper moves in, PID 1 inherits.
            self.p.cgroup.create_and_attach(self.helper_pid)
            self.log(f"cgroup {self.p.cgroup.describe()}")
        self.hchan.send("go")
        msg = self.hchan.recv()
        if msg is None or msg.get("op") != "pid1":
            self.reap_helper()
            if msg and msg.get("op") == "error":
                raise_error(msg)
            raise SetupError("the helper exited before starting the container")
        self.pid1 = int(msg["pid"])
        try:
            self.pidfd = libc().pidfd_open(self.pid1)
        except OSError:
            self.pidfd = None
        self.log(f"PID 1 is host pid {self.pid1}")
        if self.p.record:
            from rootless.runtime import state

            state.record_running(self.p, self.pid1, self.helper_pid)
        self.p.network.start(self.helper_pid, self.log)
        if self.p.setup.wait_for_go and self.cchan is not None:
            try:
                self.cchan.send("go")
            except OSError:
                pass  # PID 1 already failed; its error is waiting on the channel
        return self.wait()

    def wait(self) -> int:
        spec = self.p.spec
        deadline = time.monotonic() + spec.timeout if spec.timeout and spec.timeout > 0 else None
        stdin_open = bool(spec.interactive)
        # The terminal's raw mode, entered when the pty arrives (not contextlib.ExitStack:
        # importing contextlib is ~1 ms of every start).
        raw_modes: list[Any] = []
        try:
            while self.status is None:
                rlist: list[int] = [self.hchan.fileno(), self.wake_r]
                if self.cchan is not None:
                    rlist.append(self.cchan.fileno())
                if self.master is not None:
                    rlist.append(self.master)
                    if stdin_open:
                        rlist.append(0)
                timeout = None
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
                try:
                    ready, _, _ = select.select(rlist, [], [], timeout)
                except InterruptedError:
                    ready = []
                if deadline is not None and not self.timed_out and time.monotonic() >= deadline:
                    self.timed_out = True
                    self.log(f"--timeout {spec.timeout} reached: killing the container")
                    self.signal_pid1(signal.SIGKILL)
                if self.wake_r in ready:
                    self.handle_signals()
                if self.cchan is not None and self.cchan.fileno() in ready:
                    self.on_container_message(raw_modes)
                if self.master is not None and self.master in ready:
                    from rootless.runtime.tty import copy_chunk

                    if not copy_chunk(self.master, 1):
                        self.master_eof()
                if self.master is not None and 0 in ready and stdin_open:
                    from rootless.runtime.tty import copy_chunk

                    if not copy_chunk(0, self.master):
                        stdin_open = False
                if self.hchan.fileno() in ready:
                    self.on_helper_message()
            self.drain_master()
        finally:
            for mode in raw_modes:
                mode.__exit__(None, None, None)
        self.reap_helper()
        return self.exit_code()

    def on_container_message(self, raw_modes: list[Any]) -> None:
        assert self.cchan is not None
        msg, fds = self.cchan.recv_with_fds()
        if msg is None:
            # End of file: execve succeeded (the channel is close-on-exec) or PID 1 died.
            self.log("container command started")
            if self.p.notify is not None and self.error is None:
                self.p.notify()
            self.cchan.close()
            self.cchan = None
            return
        if msg.get("op") == "pty" and fds:
            from rootless.runtime.tty import RawMode, set_window_size, window_size

            self.master = fds[0]
            os.set_blocking(self.master, True)
            set_window_size(self.master, window_size(0))
            if os.isatty(0):
                raw_modes.append(RawMode(0).__enter__())
            return
        for fd in fds:
            os.close(fd)
        if msg.get("op") == "error":
            self.error = msg

    def on_helper_message(self) -> None:
        msg = self.hchan.recv()
        if msg is None:
            # The helper died without a word: treat as killed.
            self.status = self.status if self.status is not None else (128 + signal.SIGKILL) << 8
            return
        if msg.get("op") == "exit":
            self.status = int(msg["status"])
            self.log(f"container exited (wait status {self.status})")
        elif msg.get("op") == "error":
            self.error = msg
            self.status = 125 << 8

    def master_eof(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None

    def drain_master(self) -> None:
        if self.master is None:
            return
        from rootless.runtime.tty import copy_chunk

        os.set_blocking(self.master, False)
        while True:
            try:
                if not copy_chunk(self.master, 1):
                    break
            except BlockingIOError:
                break
        self.master_eof()

    def exit_code(self) -> int:
        if self.error is not None:
            # A set-up or exec failure reported by PID 1 (or the helper) wins.
            if self.timed_out:
                return TIMEOUT_EXIT
            raise_error(self.error)
        if self.timed_out:
            notice(f"rl: container killed after --timeout {self.p.spec.timeout}s")
            return TIMEOUT_EXIT
        status = self.status or 0
        if self.p.cgroup is not None and self.p.cgroup.oom_killed():
            # memory.events oom_kill grew: say so, and report SIGKILL's status as podman does.
            notice(f"rl: killed by the OOM killer: {self.p.cgroup.memory_limit_text()}")
            return 137
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        return os.WEXITSTATUS(status)

    # -- signals ------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def record(signum: int, _frame: Any) -> None:
            self.pending.append(signum)

        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in FORWARDED:
            self.saved_handlers[sig] = signal.signal(sig, record)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self.saved_handlers.items():
            signal.signal(sig, handler)
        self.saved_handlers.clear()
        signal.set_wakeup_fd(-1)

    def handle_signals(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass
        pending, self.pending = self.pending, []
        for sig in pending:
            if sig == signal.SIGWINCH:
                if self.master is not None:
                    from rootless.runtime.tty import set_window_size, window_size

                    set_window_size(self.master, window_size(0))
                continue
            self.log(f"forwarding signal {sig} to PID 1")
            self.signal_pid1(sig)

    def signal_pid1(self, sig: int) -> None:
        try:
            if self.pidfd is not None:
                libc().pidfd_send_signal(self.pidfd, sig)
            elif self.pid1 is not None:
                os.kill(self.pid1, sig)
        except OSError:
            pass

    # -- the end ------------------------------------------------------------------------
    def reap_helper(self) -> None:
        if self.helper_pid:
            try:
                os.waitpid(self.helper_pid, 0)
            except ChildProcessError:
                pass
            self.helper_pid = 0

    def close(self) -> None:
        self.restore_signal_handlers()
        if self.helper_pid:
            try:
                os.kill(self.helper_pid, signal.SIGKILL)
            except OSError:
                pass
            self.reap_helper()
        for fd in (self.wake_r, self.wake_w, self.pidfd, self.master):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.hchan.close()
        if self.cchan is not None:
            self.cchan.close()


def cleanup(p: Prepared, log: Log, exit_code: int | None) -> None:
    p.network.stop()
    if p.cgroup is not None:
        p.cgroup.remove()
    if p.record:
        from rootless.runtime import state

        state.record_exited(p, exit_code)
    if not p.spec.remove:
        return
    if p.dirs.remove():
        log("container storage removed")
        return
    # Files of subordinate ids remain (the helper could not finish): remove them as root of
    # a new user namespace with the same mapping.
    from rootless.primitives.userns import run_in_userns

    root = p.dirs.root
    try:
        run_in_userns(lambda: remove_tree_as_root(root), mapping=p.mapping, helpers=p.helpers,
                      name="rl:[cleanup]")
    except RlError as exc:
        log(f"cleanup of {root} failed: {exc}")

