"""The OCI lifecycle (runtime.md "Lifecycle") on rl's launcher:

    create   claim the id, plan the bundle, start the launcher; PID 1 does every set-up step
             and waits on its start socket; the state is recorded and `create` returns, the
             helper exits and PID 1 is re-parented to the caller's subreaper (conmon,
             containerd-shim, slurmstepd), which collects its exit status as with runc
    start    connect to the socket: PID 1 runs the startContainer hooks and execs the
             command (its errors come back on the connection); then the poststart hooks
    run      create + start + wait in one process (the helper stays PID 1's parent and
             reports its status, as for `rl run`), then delete
    kill     a signal through a pidfd, checked against the recorded start time
    delete   stopped only (or --force: SIGKILL first); the cgroup, the poststop hooks, the
             state directory

Every failure of create leaves nothing: the process is killed, the cgroup and the state
directory are removed.
"""

from __future__ import annotations

import os

from rootless.errors import StateError
from rootless.runtime.oci import state as ocistate
from rootless.runtime.oci.state import OciStateError, Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Lifecycle:
    """The launcher's questions about an OCI container (launcher.Prepared.oci)."""

    def __init__(self, rec: Record, bundle: str, rootfs: str, opts: Any, hooks: Any,
                 report: Any) -> None:
        self.rec = rec
        self.bundle = bundle
        self.rootfs = rootfs
        self.opts = opts
        self.detach = bool(opts.detach)
        self.hooks = hooks
        self.report = report
        self.cgroup: Any = None
        self.pid1: int | None = None
        self.namespaces: Any = None  # plan.Namespaces: the joined namespaces' open fds

    def terminal(self, master: int) -> int | None:
        """PID 1's pty master: sent to --console-socket (the caller's to keep), or kept for
        `run` to proxy like `rl run -t`."""
        if self.opts.console_socket:
            try:
                send_console(connect_console(self.opts.console_socket), master)
            finally:
                os.close(master)
            return None
        return master

    def runtime_hooks(self, pid1: int) -> None:
        if self.hooks is not None:
            self.hooks.run("prestart", pid1)
            self.hooks.run("createRuntime", pid1)

    def created(self, pid1: int) -> None:
        """PID 1 waits for `start`: record it (and --pid-file) before anything else runs."""
        from rootless.runtime.state import start_time

        self.pid1 = pid1
        cgroup_path = self.cgroup.path if self.cgroup is not None else None
        self.rec.save({"pid": pid1, "pid_start": start_time(pid1), "bundle": self.bundle,
                       "rootfs": self.rootfs, "created": ocistate.rfc3339(),
                       "cgroup": cgroup_path})
        if self.opts.pid_file:
            PidFile(self.opts.pid_file).write(pid1)

    def start(self, pid1: int) -> None:
        """`run`: start the created container in this same process."""
        start_created(self.rec, self.hooks, self.report)


def connect_console(path: str) -> Any:
    """A connection to the engine's --console-socket (made before any setns: the path is the
    host's)."""
    import _socket as socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        from rootless.errors import describe_oserror

        raise OciStateError(describe_oserror(f"connecting to --console-socket {path}",
                                             exc)) from None
    return sock


def send_console(sock: Any, master: int) -> None:
    """The pty master to the engine with SCM_RIGHTS (runc's console socket protocol: conmon
    and Slurm receive the descriptor and ignore the message's bytes)."""
    import _socket as socket
    import struct

    try:
        sock.sendmsg([b"/dev/ptmx"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        struct.pack("i", master))])
    except OSError as exc:
        from rootless.errors import describe_oserror

        raise OciStateError(describe_oserror("sending the terminal to --console-socket",
                                             exc)) from None
    finally:
        sock.close()


class PidFile:
    """--pid-file: its directory opened now, so the pid can be written after this process
    has joined the container's mount namespace (exec). The pid has no newline (runc writes
    it so; runtime-tools parses it with Atoi) and goes to a temporary name first, renamed so a
    reader never sees half a number."""

    def __init__(self, path: str) -> None:
        path = os.path.abspath(path)
        self.name = os.path.basename(path)
        self.dirfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def write(self, pid: int) -> None:
        tmp = f".{self.name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644,
                     dir_fd=self.dirfd)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
        os.rename(tmp, self.name, src_dir_fd=self.dirfd, dst_dir_fd=self.dirfd)
        os.close(self.dirfd)


# -- create and run ---------------------------------------------------------------------------

def create(root: str, cid: str, opts: Any, report: Any) -> int:
    """`create` (opts.detach) or `run` (returns the container's exit status)."""
    from rootless.runtime.oci.config import OciConfigError, load

    ocistate.check_id(cid)
    bundle = os.path.abspath(opts.bundle or ".")
    config = load(bundle)
    if not config.get("process"):
        raise OciConfigError("config.json: process: missing (create needs the process to run)")
    if (config["process"].get("terminal") and opts.detach and not opts.console_socket):
        raise OciStateError("process.terminal is true but there is no --console-socket: the "
                            "terminal would have no reader once create returns")
    rec = Record(root, cid)
    rec.claim()
    prepared = None
    lifecycle = None
    try:
        prepared, lifecycle = prepare(config, bundle, rec, opts, report)
        rec.save_config(config)
        from rootless.runtime.launcher import Log, start_and_wait

        log = Log("debug" if opts.debug else "warning")
        code = start_and_wait(prepared, prepared.paths, log)
    except BaseException:
        abandon(rec, prepared, lifecycle)
        raise
    finally:
        if lifecycle is not None:
            lifecycle.namespaces.close()
    if opts.detach:
        if opts.start:  # run --detach: create, then start, then return
            start(root, cid, report)
        return 0
    delete(root, cid, force=True, report=report)
    return code


def prepare(config: dict[str, Any], bundle: str, rec: Record, opts: Any,
            report: Any) -> tuple[Any, Lifecycle]:
    """The launcher's Prepared for this bundle."""
    from rootless.paths import Paths
    from rootless.runtime.launcher import Prepared
    from rootless.runtime.oci import plan as oplan
    from rootless.security import plan_oci_security
    from rootless.spec import RunSpec

    paths = Paths.from_env()
    rootfs = oplan.rootfs_path(config, bundle)
    process = config["process"]
    linux = config.get("linux") or {}
    ns = oplan.plan_namespaces(config)
    try:
        mapping, helpers = oplan.plan_mapping(config, ns)
        limits, unsupported = oplan.plan_limits(linux.get("resources") or {})
        mode = cgroup_mode(config, opts)
        spec = RunSpec(name=rec.cid, tty=bool(process.get("terminal")), interactive=True,
                       limits=limits, cgroups=mode,
                       log_level="debug" if opts.debug else "warning", quiet=True)
        cgroup = None
        if mode != "disabled":
            for field in unsupported:
                if mode != "best-effort":
                    from rootless.errors import CgroupError

                    raise CgroupError(f"cannot apply {field}: cgroup v2 has no such setting")
                report(f"warning: {field} not applied: cgroup v2 has no such setting")
            if limits is not None:
                from rootless.cgroups import prepare_cgroup

                cgroup = prepare_cgroup(spec, rec.cid, _debug(opts, report),
                                        name=oplan.cgroup_name(rec.cid, linux.get("cgroupsPath")),
                                        labels=oplan.RESOURCE_LABELS)
        ops = oplan.plan_mounts(config, bundle, ns, mapping,
                                cgroup_dir=f"{cgroup.where.base}/{cgroup.name}"
                                if cgroup is not None and cgroup.where.base else None)
        security = plan_oci_security(process, linux, paths)
        hooks = None
        if config.get("hooks"):
            from rootless.runtime.oci.hooks import OciHooks

            hooks = OciHooks(config["hooks"], {"ociVersion": config["ociVersion"],
                                               "id": rec.cid, "bundle": bundle,
                                               "annotations": config.get("annotations") or {}})
        setup = oplan.plan_setup(config, rootfs, ns, mapping, ops, security, hooks,
                                 rec.start_socket, opts)
        from rootless.network import NetworkPlan

        lifecycle = Lifecycle(rec, bundle, rootfs, opts, hooks, report)
        lifecycle.cgroup = cgroup
        lifecycle.namespaces = ns
        prepared = Prepared(spec=spec, cid=rec.cid, dirs=None, setup=setup, mapping=mapping,
                            helpers=helpers, ns_flags=ns.flags,
                            network=NetworkPlan("none" if "network" in ns.new else "host"),
                            image=None, cgroup=cgroup, paths=paths, record=False,
                            userns_fd=ns.userns_fd, ns_join=ns.joins, oci=lifecycle,
                            keep_userns=ns.keep_userns)
    except BaseException:
        ns.close()
        raise
    return prepared, lifecycle


def cgroup_mode(config: dict[str, Any], opts: Any) -> str:
    """enabled (a limit that cannot be applied is an error), best-effort (a warning: runc's and
    crun's rootless behaviour, the default) or disabled; from --cgroup-manager=disabled or the
    annotation run.oci.rl.cgroups."""
    if opts.cgroup_manager == "disabled":
        return "disabled"
    value = (config.get("annotations") or {}).get("run.oci.rl.cgroups", "best-effort")
    if value not in ("enabled", "best-effort", "disabled"):
        from rootless.runtime.oci.config import OciConfigError

        raise OciConfigError(f"config.json: annotations['run.oci.rl.cgroups']: {value!r}: "
                             "expected enabled, best-effort or disabled")
    return value


def _debug(opts: Any, report: Any) -> Any:
    def log(text: str) -> None:
        if opts.debug:
            report(f"debug: {text}")

    return log


def abandon(rec: Record, prepared: Any, lifecycle: Lifecycle | None) -> None:
    """A failed create: nothing may stay (process, cgroup, state)."""
    from rootless.runtime.control import signal_process, wait_for_process

    state = rec.load().state if rec.exists() else None
    if state and state.get("pid"):
        signal_process(state["pid"], state.get("pid_start"), 9)
        wait_for_process(state["pid"], state.get("pid_start"), 5)
    if prepared is not None and prepared.cgroup is not None:
        prepared.cgroup.remove()
    rec.remove()


# -- start -----------------------------------------------------------------------------------

def start(root: str, cid: str, report: Any) -> None:
    rec = Record(root, cid).load()
    with ocistate.DirLock(rec):
        rec.load()
        status = rec.status()
        if status != "created":
            raise StateError(f"cannot start container {cid}: it is {status}, not created",
                             exit_code=1)
        hooks = None
        config = rec.config()
        if config.get("hooks"):
            from rootless.runtime.oci.hooks import OciHooks

            hooks = OciHooks(config["hooks"], {"ociVersion": config.get("ociVersion"),
                                               "id": cid, "bundle": rec.state.get("bundle"),  # type: ignore[union-attr]
                                               "annotations": config.get("annotations") or {}})
        start_created(rec, hooks, report)


def start_created(rec: Record, hooks: Any, report: Any) -> None:
    """Connect to PID 1's start socket and remove it (the container is "running" from now);
    end-of-file on the connection means the command was exec'd (the descriptor is
    close-on-exec), a message is the error that kept it from running."""
    import _socket as socket

    from rootless.primitives.channel import Channel, raise_error

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dirfd = os.open(rec.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Through the directory's descriptor: a long --root stays within sun_path's 107 bytes.
        sock.connect(f"/proc/self/fd/{dirfd}/start")
        os.unlink(rec.start_socket)
    except OSError as exc:
        sock.close()
        from rootless.errors import describe_oserror

        raise StateError(describe_oserror(f"cannot start container {rec.cid}", exc),
                         exit_code=1) from None
    finally:
        os.close(dirfd)
    chan = Channel(sock)
    try:
        chan.send("start")
        msg = chan.recv()
    finally:
        chan.close()
    if msg is not None:
        raise_error(msg)
    if hooks is not None:
        hooks.warn("poststart", rec.pid, report)


# -- kill, delete ----------------------------------------------------------------------------

def kill(root: str, cid: str, sig: int, all_processes: bool) -> None:
    from rootless.runtime.control import signal_process

    rec = Record(root, cid).load()
    status = rec.status()
    if status not in ("created", "running", "paused"):
        raise StateError(f"cannot kill container {cid}: it is {status}", exit_code=1)
    state = rec.state or {}
    if all_processes:
        for pid in container_pids(rec):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return
    signal_process(state.get("pid"), state.get("pid_start"), sig)


def container_pids(rec: Record) -> list[int]:
    """Every process of the container: its cgroup's, or those in PID 1's PID namespace."""
    state = rec.state or {}
    cgroup = state.get("cgroup")
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            pass  # removed already: look for the processes by their PID namespace
    pid = rec.pid
    if not ocistate.process_alive(pid, state.get("pid_start")):
        return []
    try:
        target = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except FileNotFoundError:  # it has exited meanwhile
        return []
    if target == os.stat("/proc/self/ns/pid").st_ino:
        return [pid]  # the host's PID namespace: only the container's own process
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == target:
                    out.append(int(entry))
            except (FileNotFoundError, PermissionError):
                continue  # exited, or another user's process: not one of ours
    return sorted(out)


def delete(root: str, cid: str, force: bool, report: Any) -> None:
    from rootless.runtime.control import signal_process, wait_for_process

    rec = Record(root, cid)
    if not rec.exists():
        if force:
            return  # runc: deleting what is not there with --force is not an error
        raise OciStateError(f"container {cid} does not exist")
    with ocistate.DirLock(rec):
        rec.load()
        status = rec.status()
        if status == "creating":
            raise StateError(f"cannot delete container {cid}: it is being created", exit_code=1)
        state = rec.state or {}
        if status != "stopped":
            if not force:
                raise StateError(f"cannot delete container {cid}: it is {status}, not stopped "
                                 "(use delete --force)", exit_code=1)
            if status == "paused" and state.get("cgroup"):
                set_frozen(state["cgroup"], False)
            signal_process(state.get("pid"), state.get("pid_start"), 9)
            wait_for_process(state.get("pid"), state.get("pid_start"), 10)
        if state.get("cgroup"):
            from rootless.cgroups import remove_cgroup

            remove_cgroup(state["cgroup"], lambda _text: None)
        config = rec.config()
        rec.remove()
    if config.get("hooks", {}).get("poststop") and state:
        from rootless.runtime.oci.hooks import OciHooks

        OciHooks(config["hooks"], {"ociVersion": config.get("ociVersion"), "id": cid,
                                   "bundle": state.get("bundle"),
                                   "annotations": config.get("annotations") or {}}
                 ).warn("poststop", state.get("pid"), report)


# -- pause, resume, update -------------------------------------------------------------------

def _cgroup_of(rec: Record, action: str) -> str:
    cgroup = (rec.state or {}).get("cgroup")
    if not cgroup or not os.path.isdir(cgroup):
        raise StateError(f"cannot {action} container {rec.cid}: it has no cgroup of its own (it "
                         "needs linux.resources and a delegated cgroup v2 hierarchy; this host "
                         "gave none)", exit_code=1)
    return str(cgroup)


def set_frozen(cgroup: str, frozen: bool) -> None:
    """cgroup v2's freezer: write cgroup.freeze and wait until cgroup.events says so."""
    import time

    with open(os.path.join(cgroup, "cgroup.freeze"), "w") as f:
        f.write("1" if frozen else "0")
    want = f"frozen {1 if frozen else 0}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(os.path.join(cgroup, "cgroup.events")) as f:
            if want in f.read().splitlines():
                return
        time.sleep(0.01)


def pause(root: str, cid: str, frozen: bool) -> None:
    rec = Record(root, cid).load()
    with ocistate.DirLock(rec):
        status = rec.status()
        wanted = "running" if frozen else "paused"
        if status != wanted:
            raise StateError(f"cannot {'pause' if frozen else 'resume'} container {cid}: it is "
                             f"{status}", exit_code=1)
        set_frozen(_cgroup_of(rec, "pause" if frozen else "resume"), frozen)


def update(root: str, cid: str, resources: dict[str, Any]) -> None:
    """Write new limits into the container's cgroup (the same conversion as create's)."""
    from rootless.cgroups import enable_controllers
    from rootless.cgroups.plan import needed_controllers, plan_writes
    from rootless.runtime.oci.plan import RESOURCE_LABELS, plan_limits

    rec = Record(root, cid).load()
    with ocistate.DirLock(rec):
        if rec.status() not in ("created", "running", "paused"):
            raise StateError(f"cannot update container {cid}: it is {rec.status()}", exit_code=1)
        cgroup = _cgroup_of(rec, "update")
        limits, unsupported = plan_limits(resources)
        if unsupported:
            raise StateError(f"cannot update {', '.join(unsupported)}: cgroup v2 has no such "
                             "setting", exit_code=1)
        writes = plan_writes(limits) if limits is not None else []
        # A controller create did not need (memory, when only pids were limited) is enabled
        # for the container's cgroup now, so that its files exist.
        enable_controllers(os.path.dirname(cgroup), needed_controllers(writes), lambda _t: None)
        for w in writes:
            try:
                with open(os.path.join(cgroup, w.file), "w") as f:
                    f.write(w.value)
            except OSError as exc:
                from rootless.errors import describe_oserror

                raise StateError(describe_oserror(
                    f"cannot set {RESOURCE_LABELS.get(w.flag, w.flag)} ({w.file}={w.value})", exc),
                    exit_code=1) from None


# -- exec ------------------------------------------------------------------------------------

def exec_process(root: str, cid: str, process: dict[str, Any], opts: Any) -> int:
    """A new process in the container, as config.json's `process` says (exec's --process or
    its flags over the container's own process)."""
    from rootless.paths import Paths
    from rootless.runtime.exec import ExecOptions, exec_into
    from rootless.runtime.oci.plan import plan_rlimits, process_env
    from rootless.security import plan_oci_security

    rec = Record(root, cid).load()
    status = rec.status()
    if status not in ("created", "running"):
        raise StateError(f"cannot exec in container {cid}: it is {status}", exit_code=1)
    config = rec.config()
    security = plan_oci_security(process, config.get("linux") or {}, Paths.from_env())
    security.masked, security.readonly = [], []
    user = process.get("user") or {}
    size = process.get("consoleSize") or {}
    eopts = ExecOptions(list(process["args"]), interactive=True,
                        tty=bool(process.get("terminal")), detach=bool(opts.detach))
    eopts.started = exec_started(opts)
    eopts.groups = list(user.get("additionalGids") or [])
    eopts.rlimits = plan_rlimits(process)
    eopts.winsize = (size["height"], size["width"]) if size.get("height") else None
    eopts.preserve_fds = opts.preserve_fds or 0
    state = rec.state or {}
    env = process_env(process)
    return exec_into(state["pid"], state.get("pid_start"), eopts, env, process.get("cwd") or "/",
                     f"{user.get('uid', 0)}:{user.get('gid', 0)}", security)


def exec_started(opts: Any) -> Any:
    """exec's --pid-file and --console-socket, opened and connected now (host paths), used
    once the process exists (by then this process is in the container's namespaces)."""
    pid_file = PidFile(opts.pid_file) if opts.pid_file else None
    console = connect_console(opts.console_socket) if opts.console_socket else None

    def started(pid: int, master: int | None) -> bool:
        if pid_file is not None:
            pid_file.write(pid)
        if master is None or console is None:
            return False
        try:
            send_console(console, master)
        finally:
            os.close(master)
        return True

    return started


