"""The launcher: `rl run` outside the container. The protocol, once:

  launcher (the user, host namespaces)          helper                     PID 1
  1. plan: ids, storage, mounts, env
  2. fork ──────────────────────────────────►  PDEATHSIG=KILL
                                               unshare(NEWUSER)
  3.        ◄──────────────────── "userns" ──
     write uid_map/gid_map (newuidmap or direct)
     move the helper into the container's cgroup
  4.        ── "go" ────────────────────────►  unshare(UTS|IPC|NET|CGROUP|PID)
                                               fork ──────────────────────► setresuid/gid(0)
                                                                           PDEATHSIG=KILL
  5.        ◄──────────── "pid1" {pid} ─────                               unshare(NEWNS), mounts,
     pidfd_open(pid1); network helper                                       pivot_root, tty...
     ◄──────────────────────────────────── "pty" {fd} (with -t) ─────────
     ── "go" (only when the network must be ready first) ───────────────►
     ◄──────────────────────────────────── EOF (exec succeeded) or "error" ─
  6. forward signals to PID 1, proxy the tty, enforce --timeout
  7.        ◄──── "exit" {status} ──────────   waitpid(pid1); --rm cleanup
     report the exit status exactly; clean up what is left

The helper stays in the host's mount namespace (PID 1 makes its own), so after PID 1 exits it
can still reach the container's storage and, holding every capability in the user namespace,
remove files that belong to subordinate ids. It keeps the user's own host ids (see helper_main).
With an rl network the helper joins the network's user namespace instead of creating one
(and creates its own inside it for other maps: rootless.network.bridge).
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import os
import select
import sys
import time

from rootless.errors import RlError, SetupError, UsageError
from rootless.fileio import read_or_empty
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.paths import Paths
from rootless.primitives.channel import Channel, error_message, raise_error
from rootless.primitives.userns import (
    apply_mapping,
    become_root,
    default_mapping,
    unshare_user,
    unshare_user_nested,
)
from rootless.runtime.container import (
    DEFAULT_PATH,
    ContainerSetup,
    container_main,
    workdir_creation,
)
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
                 # an rl network's containers with other maps than its own: a user namespace
                 # of their own inside the network's (rootless.primitives.userns)
                 "nested",
                 # lifecycle (rootless.runtime.state/detach): where state lives; a callable run
                 # once the command was exec'd (`rl run -d` reports success then); the lock
                 # of the container's runtime directory (state.create_record), held while
                 # this process or its monitor owns the container; the signal queue
                 # (rootless.runtime.interrupt); objects whose fileno() the wait loop watches
                 # and whose fire(session) it calls when readable (the -d logger); record:
                 # False when the container is no container of rl's own state (an OCI bundle,
                 # a build step)
                 "paths", "notify", "owner_fd", "signals", "watchers", "record",
                 # namespaces to join instead of create (an OCI bundle's linux.namespaces
                 # paths): userns_fd first, then each (CLONE_NEW* flag, fd) of ns_join;
                 # keep_userns: stay in the current one (an OCI runtime that rootless podman
                 # already runs as root of its user namespace, with no user namespace asked)
                 "userns_fd", "ns_join", "keep_userns",
                 # an OCI bundle's lifecycle (rootless.runtime.oci.lifecycle.Lifecycle): the
                 # session stops once PID 1 is created and waits for `start`
                 "oci")

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
    `record=False`: no runtime record, name or config.json, and its upper directory stays."""
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

    from rootless.runtime import state
    from rootless.runtime.interrupt import defer, unblock

    cid = existing or new_container_id()
    hostname = spec.hostname or cid[:12]
    own_dirs = dirs is None
    if dirs is None:
        dirs = ContainerDirs(os.path.join(paths.containers_dir, cid))
    owner_fd = None
    # A signal here raises Interrupted (rootless.runtime.interrupt) and the `except` below
    # cleans up; where a step and the variable that records it must not be torn apart, the
    # signal waits (defer ... unblock) and raises right after.
    try:
        if existing is None and record:
            # The runtime record first, with its lock held: from here on, whatever a kill
            # leaves is findable (rootless.runtime.state, rootless.runtime.sweep).
            defer()
            owner_fd = state.create_record(paths, cid, 3 + (spec.preserve_fds or 0))
            unblock()
        if existing is None and own_dirs:
            dirs.create()
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
            security = plan_security(spec, log=log)
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
        keep_id = None
        if spec.userns == "keep-id" and os.getuid() != 0:
            # podman's keep-id: the command runs as you (unless --user or the image's USER
            # says otherwise), with your passwd and group entries in the container's copy.
            from rootless.runtime.users import keep_id_user

            keep_id = keep_id_user((op.target for op in plan if op.kind in ("mount", "bind")),
                                   spec.workdir or source.workdir or None)
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
            create_workdir=workdir_creation(spec.workdir, source.workdir, spec.volumes),
            user=spec.user or source.user or (keep_id.user_spec() if keep_id else None),
            keep_id=keep_id,
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
        if existing is None and record:
            defer()  # the claimed name is in `spec` before anything may raise
            state.reserve_name(paths, spec.name, cid, spec.cidfile)
            if spec.name is None:
                # podman names every container; the name is released like a --name one.
                spec = spec.replace(name=state.claim_generated_name(paths, cid))  # type: ignore[assignment]
            unblock()
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
        # Until the caller's signal queue exists (start_and_wait, spawn_monitor), a signal
        # waits: between here and there nothing could clean up after it.
        defer()
    except BaseException:
        if owner_fd is not None:
            state.release_reservations(paths, spec, cid)
            dirs.remove()
            state.remove_runtime(paths, cid)
            os.close(owner_fd)
        unblock()  # a signal that waited ends the run now (Interrupted)
        raise
    ns = k.CLONE_NEWUTS | k.CLONE_NEWIPC | k.CLONE_NEWPID | k.CLONE_NEWCGROUP
    if network.new_netns and not network.early_start:
        ns |= k.CLONE_NEWNET
    nested = bool(network.join_userns and (spec.userns or spec.uidmaps or spec.gidmaps))
    return Prepared(spec=spec, cid=cid, dirs=dirs, setup=setup, mapping=mapping, helpers=helpers,
                    ns_flags=ns, network=network, image=source, cgroup=cgroup, paths=paths,
                    owner_fd=owner_fd, watchers=[], record=record, ns_join=[], nested=nested)


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
    if p.signals is None:
        # Before the fork: from now on a signal is recorded, never lost and never raised in
        # the middle of a step (rootless.runtime.interrupt).
        from rootless.runtime.interrupt import SignalQueue

        p.signals = SignalQueue()
    from rootless.runtime.interrupt import unblock

    unblock()  # what waited since prepare() is in the queue now
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
        signal.set_wakeup_fd(-1)  # the launcher's signal queue is not the helper's
        for sig in FORWARDED:
            # The launcher signals PID 1 itself; the helper must not die of a ^C meant for it.
            signal.signal(sig, signal.SIG_IGN)
        if p.owner_fd is not None:
            # The creator's lock is the launcher's (and the monitor's): the helper must not
            # keep it held after they died.
            os.close(p.owner_fd)
        step = "create the user namespace"
        events: int | None = None
        if p.keep_userns:
            pass
        elif p.userns_fd is not None:
            step = "join the user namespace"
            lib.setns(p.userns_fd, k.CLONE_NEWUSER)
        elif p.network.join_userns:
            # An `rl network`'s containers share its user namespace (rootless.network.bridge):
            # setns(CLONE_NEWUSER) is allowed to the namespace's owner, which is this user.
            step = "join the network's user namespace"
            ns_fd = os.open(p.network.join_userns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                lib.setns(ns_fd, k.CLONE_NEWUSER)
            finally:
                os.close(ns_fd)
            if p.nested:
                # Other maps than the network's (keep-id, --uidmap): a user namespace of the
                # container's own inside the network's, which the network's holder still may
                # enter to attach the container (it owns this one's parent).
                step = "create the container's user namespace inside the network's"
                unshare_user_nested(p.mapping, lib)
        else:
            unshare_user(lib)
            if p.network.early_start:
                # The new user namespace's creator holds every capability in it even before
                # its maps exist: the network namespace can exist now, so the user-mode
                # helper starts while the maps are written and PID 1 is set up.
                step = "create the network namespace"
                lib.unshare(k.CLONE_NEWNET)
                events = p.network.netns_setup()
        if events is None:
            hchan.send("userns")
        else:
            hchan.send_fd("userns", events)
            os.close(events)
        go = hchan.recv()
        if not go or go.get("op") != "go":
            os._exit(1)
        # The helper keeps the user's own host ids (it is root inside by the default maps, and
        # holds every capability as the namespace's creator either way). With keep-id, root
        # inside is a subordinate id: a helper that took it would be a process of another
        # host uid, no longer dumpable (commit_creds), whose /proc/PID/ns entries pasta,
        # slirp4netns and an rl network's holder — processes of the user — may not open
        # (ptrace_may_access). PID 1 becomes root instead.
        for flag, fd in p.ns_join:
            # setns(2) into a namespace owned by this user namespace (or one it may enter).
            step = f"join the namespace {fd_path(fd)}"
            lib.setns(fd, flag)
        step = "create the namespaces"
        lib.unshare(p.ns_flags)
        if p.ns_flags & k.CLONE_NEWNET:
            step = "prepare the network namespace"
            p.network.netns_setup()  # no user-mode helper to hand a descriptor to
        pid1 = os.fork()
        if pid1 == 0:
            hchan.close()
            if not p.keep_userns:  # (an OCI runtime already root of its caller's namespace)
                become_root(p.mapping, lib)
            for sig in (*FORWARDED, signal.SIGPIPE, signal.SIGXFSZ):
                # Python ignores SIGPIPE and SIGXFSZ; ignored signals survive execve, and
                # `yes | head` must behave as in a shell.
                signal.signal(sig, signal.SIG_DFL)
            container_main(p.setup, cchan)
        cchan.close()
        hchan.send("pid1", pid=pid1)
        if p.oci is not None and p.oci.detach:
            # An OCI `create`: once PID 1 no longer depends on this process (it cleared its
            # PDEATHSIG), exit; PID 1 is re-parented to the caller's subreaper, which waits
            # for it (conmon, containerd-shim), or to init.
            hchan.recv()
            os._exit(0)
        while True:
            try:
                _, status = os.waitpid(pid1, 0)
                break
            except InterruptedError:
                continue
        if p.setup.debug:
            sys.stderr.write(f"rl: [helper] PID 1 reaped at {time.monotonic():.4f}\n")
        stop_network_helper(int(go.get("network_pid") or 0))
        if p.spec.remove:
            try:
                remove_tree_as_root(p.dirs.root)
            except OSError as exc:
                # The launcher's clean-up removes what is left (in a new namespace if need be).
                if p.setup.debug:
                    sys.stderr.write(f"rl: [helper] removing {p.dirs.root}: {exc}\n")
        hchan.send("exit", status=status)
    except BaseException as exc:  # noqa: BLE001
        try:
            hchan.send("error", **error_message(step, exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the launcher is gone: nobody to tell
        os._exit(1)
    os._exit(0)


def stop_network_helper(pid: int) -> None:
    """Kill the network's user-mode helper as soon as PID 1 is gone (it serves no one now): its
    exit, ~15 ms asleep in the kernel, then overlaps the clean-up, and the launcher, which reaps
    it, waits less. rl's helper has the user's host uid, as the network helper does."""
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
        self.signals = p.signals
        # The command runs (PID 1's exec succeeded): signals are the container's from now on.
        self.started = False
        # The signal that stopped the start-up (rootless.runtime.interrupt).
        self.interrupted: int | None = None
        self.network_watch: NetworkWatch | None = None

    # -- the steps ----------------------------------------------------------------------
    def run(self) -> int:
        msg, fds = self.hchan.recv_with_fds()
        if msg is None or msg.get("op") == "error":
            for fd in fds:
                os.close(fd)
            self.reap_helper()
            if msg:
                raise_error(msg)
            raise SetupError("the helper process exited before creating the user namespace")
        self.log("helper in its user namespace")
        self.check_interrupt()
        network = self.p.network
        if network.join_userns is None and self.p.userns_fd is None and \
                not self.p.keep_userns:
            # (a joined namespace has its maps already)
            events = fds[0] if fds else None
            if network.early_start and not network.spawn_after_maps:
                network.spawn(self.helper_pid, self.log, events)
            apply_mapping(self.helper_pid, self.p.mapping, self.p.helpers)
            self.log("id maps written")
            if network.early_start and network.spawn_after_maps:
                network.spawn(self.helper_pid, self.log, events)
        if self.p.cgroup is not None:
            # Limits are in place before PID 1 exists: the helper moves in, PID 1 inherits.
            self.p.cgroup.create_and_attach(self.helper_pid)
            self.log(f"cgroup {self.p.cgroup.describe()}")
        self.check_interrupt()
        self.hchan.send("go", network_pid=self.p.network.running_pid())
        msg = self.hchan.recv()
        if msg is None or msg.get("op") != "pid1":
            self.reap_helper()
            if msg and msg.get("op") == "error":
                raise_error(msg)
            raise SetupError("the helper exited before starting the container")
        self.pid1 = int(msg["pid"])
        self.pidfd = open_pidfd(self.pid1)
        self.log(f"PID 1 is host pid {self.pid1}")
        if self.p.record:
            from rootless.runtime import state

            state.record_running(self.p, self.pid1, self.helper_pid)
        self.check_interrupt()
        try:
            self.p.network.start(self.helper_pid, self.log)
        except RlError:
            # PID 1 failed its set-up and exited: its namespaces went with it, and the network
            # helper failed for that reason only. PID 1's error, sent before it exited, says why.
            self.raise_container_error()
            raise
        self.network_watch = NetworkWatch.of(self.p.network)
        self.check_interrupt()
        if self.p.oci is not None:
            self.until_created()
            if self.p.oci.detach:
                return 0
            self.p.oci.start(self.pid1)
        if self.p.setup.wait_for_go and self.cchan is not None:
            try:
                self.cchan.send("go")
            except (BrokenPipeError, ConnectionResetError):
                pass  # PID 1 already failed; its error is waiting on the channel
        return self.wait()

    def raise_container_error(self) -> None:
        """Raise the error PID 1 has sent, if it has sent one (without waiting for it)."""
        while self.cchan is not None and select.select([self.cchan.fileno()], [], [], 0)[0]:
            msg, fds = self.cchan.recv_with_fds()
            for fd in fds:
                os.close(fd)  # a pty: the run is failing, there is nothing to proxy
            if msg is None:
                return
            if msg.get("op") == "error":
                raise_error(msg)

    def until_created(self) -> None:
        """An OCI container: relay PID 1's set-up (its pty to the console socket, the
        createRuntime hooks) until it is created and waits for `start`. Then record it and,
        for `create`, let PID 1 and the helper go on without this process."""
        assert self.cchan is not None and self.pid1 is not None
        oci = self.p.oci
        while True:
            msg, fds = self.cchan.recv_with_fds()
            op = msg.get("op") if msg else None
            if op == "pty" and fds:
                self.master = oci.terminal(fds[0])
                if self.master is not None:
                    os.set_blocking(self.master, True)
                continue
            for fd in fds:
                os.close(fd)
            if op == "hooks":
                oci.runtime_hooks(self.pid1)
                self.cchan.send("go", pid=self.pid1)
            elif op == "created":
                oci.created(self.pid1)
                self.cchan.send("ok", detach=oci.detach)
                if oci.detach:
                    # PID 1 has cleared its PDEATHSIG when it answers: only then may the helper
                    # (its parent) exit.
                    msg = self.cchan.recv()
                    if not msg or msg.get("op") != "detached":
                        raise SetupError("the container's process exited while it was created")
                    self.hchan.send("release")
                    self.reap_helper()
                return
            elif op == "error":
                raise_error(msg)  # type: ignore[arg-type]  (close() kills the helper)
            else:
                raise SetupError("the container's process exited during its set-up")

    def wait(self) -> int:
        spec = self.p.spec
        deadline = time.monotonic() + spec.timeout if spec.timeout and spec.timeout > 0 else None
        stdin_open = bool(spec.interactive)
        # The terminal's raw mode, entered when the pty arrives (not contextlib.ExitStack:
        # importing contextlib is ~1 ms of every start).
        raw_modes: list[Any] = []
        signal_fds = self.signals.fds()
        try:
            while self.status is None:
                rlist: list[int] = [self.hchan.fileno(), *signal_fds]
                if self.cchan is not None:
                    rlist.append(self.cchan.fileno())
                if self.master is not None:
                    rlist.append(self.master)
                    if stdin_open:
                        rlist.append(0)
                watchers = list(self.p.watchers or ())
                if self.network_watch is not None:
                    watchers.append(self.network_watch)
                rlist += [w.fileno() for w in watchers]
                timeout = None
                if deadline is not None:
                    timeout = max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select(rlist, [], [], timeout)
                if deadline is not None and not self.timed_out and time.monotonic() >= deadline:
                    self.timed_out = True
                    self.log(f"--timeout {spec.timeout} reached: killing the container")
                    self.signal_pid1(signal.SIGKILL)
                # The container's channel before the signals: a command that exists gets them.
                if self.cchan is not None and self.cchan.fileno() in ready:
                    self.on_container_message(raw_modes)
                if any(fd in ready for fd in signal_fds):
                    self.handle_signals()
                    signal_fds = self.signals.fds()  # the -d relay closes when its writer exits
                if self.master is not None and self.master in ready:
                    from rootless.runtime.tty import copy_chunk

                    if not copy_chunk(self.master, 1):
                        self.master_eof()
                if self.master is not None and 0 in ready and stdin_open:
                    from rootless.runtime.tty import copy_chunk

                    if not copy_chunk(0, self.master):
                        stdin_open = False
                for w in watchers:
                    if w.fileno() in ready:
                        w.fire(self)
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
            if self.error is None and self.interrupted is None:
                self.log("container command started")
                self.started = True
                if self.p.notify is not None:
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
        if self.interrupted is not None:
            from rootless.runtime.interrupt import Interrupted

            raise Interrupted(self.interrupted)
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
    def check_interrupt(self) -> None:
        """Between the steps of the start-up: a stopping signal ends it here (the callers'
        `finally:` blocks kill the helper and clean up)."""
        from rootless.runtime.interrupt import STOPPING, Interrupted

        for sig in self.signals.take():
            if sig in STOPPING:
                self.log(f"signal {sig} before the command started: stopping the start-up")
                raise Interrupted(sig)

    def handle_signals(self) -> None:
        for sig in self.signals.take():
            if sig == signal.SIGWINCH:
                if self.master is not None:
                    from rootless.runtime.tty import set_window_size, window_size

                    set_window_size(self.master, window_size(0))
                continue
            if self.started:
                self.log(f"forwarding signal {sig} to PID 1")
                self.signal_pid1(sig)
            elif self.interrupted is None:
                # PID 1 is still setting up (or its exec is in flight): stop it; the helper
                # reports its end and exit_code() turns it into Interrupted.
                self.log(f"signal {sig} before the command started: stopping the start-up")
                self.interrupted = sig
                self.signal_pid1(signal.SIGKILL)

    def signal_pid1(self, sig: int) -> None:
        try:
            if self.pidfd is not None:
                libc().pidfd_send_signal(self.pidfd, sig)
            elif self.pid1 is not None:
                os.kill(self.pid1, sig)
        except ProcessLookupError:
            pass  # PID 1 has exited; the helper's "exit" message is on its way

    # -- the end ------------------------------------------------------------------------
    def reap_helper(self) -> None:
        if self.helper_pid:
            try:
                os.waitpid(self.helper_pid, 0)
            except ChildProcessError:
                pass
            self.helper_pid = 0

    def close(self) -> None:
        if self.helper_pid:
            os.kill(self.helper_pid, signal.SIGKILL)  # our unreaped child: it exists
            self.reap_helper()
        if self.pidfd is not None:
            # PID 1 dies of its helper's death (PR_SET_PDEATHSIG), a moment later: the clean-up
            # that follows must not race its last set-up steps.
            select.select([self.pidfd], [], [], 2.0)
        for fd in (self.pidfd, self.master):
            if fd is not None:
                os.close(fd)
        self.pidfd = self.master = None
        if self.network_watch is not None:
            self.network_watch.close()
        self.hchan.close()
        if self.cchan is not None:
            self.cchan.close()


def open_pidfd(pid: int) -> int | None:
    """A pidfd for pid; None when the process is already gone (ESRCH) or the kernel has no
    pidfd_open (ENOSYS, before 5.3): callers then fall back to the plain pid."""
    import errno

    try:
        return libc().pidfd_open(pid)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.ENOSYS):
            raise
        return None


class NetworkWatch:
    """Notices the death of the network helper (pasta, slirp4netns) while the container runs:
    the container is then cut off, which must not pass silently. Said on stderr (a detached
    container's stderr is its log) and recorded in state.json, where `rl ps` and `rl inspect`
    show it. It does not reap the helper (the plan's stop() does, and must not signal a pid
    that was reaped and reused)."""

    def __init__(self, pid: int, pidfd: int, name: str) -> None:
        self.pid = pid
        self.pidfd: int | None = pidfd
        self.name = name

    @classmethod
    def of(cls, network: Any) -> NetworkWatch | None:
        pid = getattr(network, "pid", None)
        if not isinstance(pid, int):
            return None
        pidfd = open_pidfd(pid)
        return None if pidfd is None else cls(pid, pidfd, network.mode)

    def fileno(self) -> int:
        assert self.pidfd is not None
        return self.pidfd

    def fire(self, session: Session) -> None:
        session.network_watch = None
        if session.pidfd is not None and select.select([session.pidfd], [], [], 0)[0]:
            self.close()  # PID 1 is gone: the helper ends with the namespace, as it should
            return
        info = os.waitid(os.P_PIDFD, self.fileno(), os.WEXITED | os.WNOHANG | os.WNOWAIT)
        self.close()
        how = "exited"
        if info is not None:
            how = (f"was killed by signal {info.si_status}" if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
                   else f"exited with status {info.si_status}")
        text = (f"{self.name} (pid {self.pid}), the container's network, {how}: "
                "the container has no network now")
        notice(f"rl: {text}")
        from rootless.runtime import state

        state.note_problem(session.p, text, network_lost=True)

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def fd_path(fd: int) -> str:
    """What a namespace descriptor names, for error messages (nsfs shows 'net:[4026...]')."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:  # ENOENT: no /proc here, or the descriptor is already closed
        return f"fd {fd}"


def cleanup(p: Prepared, log: Log, exit_code: int | None) -> None:
    p.network.stop(log)
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
        # Not silent: the storage stays (without its config: `rl ps`/`rl system prune` sweep it).
        notice(f"rl: removing the container's storage {root}: {exc}")

