"""The container side: what PID 1 does between fork and execve.

PID 1 is forked by the helper right after the helper unshared the PID namespace, so it is the
first process of that namespace. It runs, in order:

  1. PR_SET_PDEATHSIG(SIGKILL): when the helper dies, PID 1 dies and the kernel kills every
     other process of the namespace (pid_namespaces(7)).
  2. unshare(CLONE_NEWNS) and make "/" recursively private, before any other mount, so nothing
     propagates to the host (the host's "/" may be shared, as on systemd machines).
  3. mount the rootfs (overlay, upper/work in the container's storage), then the plan from
     mounts.plan_mounts (proc, dev, sys, /etc files, volumes, masks).
  4. pivot_root into it and detach the old root: no host path stays reachable.
  5. hostname, loopback up, the tty, the user, capabilities, no_new_privs, seccomp.
  6. execve the command. On failure the errno travels home on the channel (which is
     close-on-exec, so on success the launcher simply reads end-of-file).
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import _socket  # socket.py's wrappers cost start-up time and add nothing here
import errno
import fcntl
import os
import posixpath
import struct
import sys

from rootless.errors import CommandError, RlError, SetupError, describe_oserror
from rootless.fileio import write_existing
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.primitives.channel import Channel, error_message
from rootless.primitives.mounts import MountFailure, MountOp, apply_plan, remount_bind
from rootless.runtime.flatten import flatten_layers
from rootless.runtime.proc import FORWARDED, close_fds_except
from rootless.runtime.rootfs import overlay_lowers
from rootless.runtime.users import add_keep_id_entries, resolve_user

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# Everything PID 1 uses after pivot_root must be imported before it: the host's Python
# installation is not visible from inside the container.

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerSetup:
    """Everything PID 1 needs, computed by the launcher before the fork (plain data).

    An OCI bundle (rootless.runtime.oci.plan) fills in more, each None/empty for `rl run`:
    join_mntns (an fd: setns instead of a new mount namespace), propagation (rootfsPropagation,
    set on "/" after pivot_root), no_pivot (MS_MOVE + chroot), domainname, rlimits
    ((resource, soft, hard) triples), oom_score_adj, umask, groups (the exact supplementary
    gids), hooks (an OciHooks: createRuntime is run by the launcher while PID 1 waits before
    pivot_root, createContainer and startContainer by PID 1) and start_socket (the path where
    PID 1, once created, waits for `rl-oci start`).
    """

    __slots__ = (
        "rootfs_data", "merged", "plan", "hostname", "read_only", "command", "env", "workdir",
        "user", "tty", "winsize", "interactive", "init", "bring_up_lo", "wait_for_go",
        "security", "preserve_fds", "mapping_mode", "debug", "create_workdir",
        "join_mntns", "propagation", "no_pivot", "domainname", "rlimits", "oom_score_adj",
        "umask", "groups", "hooks", "start_socket",
        # --userns=keep-id: the user's passwd/group entries to add (rootless.runtime.users)
        "keep_id",
    )

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))


def container_main(setup: ContainerSetup, chan: Channel) -> NoReturn:
    """Runs as PID 1 of the new PID namespace. Never returns."""
    step = "set up the container"
    try:
        lib = libc()
        lib.set_pdeathsig(signal.SIGKILL)
        if setup.oom_score_adj is not None:
            # Inherited by every process of the container; lowering it needs
            # CAP_SYS_RESOURCE in the host's user namespace, so only a raise works rootless.
            # Before PR_SET_DUMPABLE 0, which makes /proc/self's files root's (proc(5)).
            step = "set oom_score_adj"
            write_existing("/proc/self/oom_score_adj", str(setup.oom_score_adj))
        # Not dumpable while set-up holds the channel and host paths (ptrace by the host
        # user's other processes is refused); execve restores the default.
        lib.set_dumpable(False)
        lib.set_name("rl:[pid1]")
        if setup.join_mntns is not None:
            step = "join the mount namespace"
            lib.setns(setup.join_mntns, k.CLONE_NEWNS)
        else:
            step = "create the mount namespace"
            lib.unshare(k.CLONE_NEWNS)
        lib.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        step = "mount the root filesystem"
        mount_rootfs(setup, lib)
        step = "mount the container's filesystems"
        apply_plan(setup.merged, setup.plan, lib, log=_debug_logger(setup))
        start = None
        if setup.hooks is not None:
            step = "run the createRuntime hooks"
            chan.send("hooks")
            go = chan.recv()
            if not go or go.get("op") != "go":
                os._exit(1)
            setup.hooks.state["pid"] = go.get("pid")
            step = "run the createContainer hooks"
            setup.hooks.run_in_container("createContainer")
        if setup.start_socket is not None:
            start = listen_for_start(setup.start_socket)
        step = "pivot_root into the container"
        if setup.no_pivot:
            enter_root_without_pivot(setup.merged, lib)
        else:
            enter_root(setup.merged, lib)
        if setup.propagation:
            step = "set the root's propagation"
            lib.mount(None, "/", None, k.MS_REC | setup.propagation)
        if setup.keep_id is not None:
            # Before the user is looked up: with keep-id it is usually this entry.
            step = "add your user to the container's /etc/passwd and /etc/group"
            add_keep_id_entries(setup.keep_id)
        step = "look up the container's user"
        user = resolve_user(setup.user)
        if setup.groups is not None:
            user.groups = list(setup.groups)
        if setup.workdir and setup.create_workdir:
            # Before a read-only remount: podman creates an image's WorkingDir even then.
            step = "create the working directory"
            create_workdir(setup.workdir, setup.create_workdir, user)
        if setup.read_only:
            step = "make the root filesystem read-only"
            remount_bind("/", k.MS_RDONLY, lib)
        if setup.hostname is not None:
            step = "set the hostname"
            lib.sethostname(setup.hostname)
        if setup.domainname is not None:
            step = "set the domain name"
            lib.setdomainname(setup.domainname)
        if setup.bring_up_lo:
            step = "bring up the loopback interface"
            bring_up_loopback()
        if setup.rlimits:
            step = "set the resource limits"
            set_rlimits(setup.rlimits)
        if setup.umask is not None:
            os.umask(setup.umask)
        run_command(setup, user, chan, lib, start)
    except MountFailure as exc:
        if setup.debug:
            import traceback

            traceback.print_exc()
        hint = None
        if exc.op.fstype == "overlay":
            hint = "see 'rl doctor overlay'"
        chan.send("error", step=step, message=f"{step}: {exc}", hint=hint, exit_code=125)
    except RlError as exc:
        chan.send("error", **error_message(step, exc))
        os._exit(exc.exit_code)
    except BaseException as exc:  # noqa: BLE001 - every failure goes home as data
        if setup.debug:
            import traceback  # imported by the launcher before the fork when debugging

            traceback.print_exc()
        chan.send("error", **error_message(step, exc))
    os._exit(125)


def _debug_logger(setup: ContainerSetup) -> Any:
    if not setup.debug:
        return None

    def log(text: str) -> None:
        sys.stderr.write(f"rl: [pid1] {text}\n")

    return log


def mount_rootfs(setup: ContainerSetup, lib: Any) -> None:
    data = setup.rootfs_data
    if data["type"] == "overlay":
        # Relative lowerdir names, resolved from the layer store's directory, keep the option
        # string within the kernel's one-page limit for deep images (podman's "l/" links).
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.chdir(data["chdir"])
            if os.environ.get("RL_OVERLAY") in ("disable", "copy"):  # tests force fallbacks
                raise OSError(errno.EINVAL, "overlay disabled by RL_OVERLAY")
            lib.mount("overlay", setup.merged, "overlay", 0, data["options"])
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM, errno.ENODEV, errno.EOPNOTSUPP):
                raise MountFailure(_overlay_op(data["options"]), exc) from None
            # The kernel refuses overlayfs here. First fallback: fuse-overlayfs, when it is
            # installed and /dev/fuse is usable; the last: a flattened copy of the layers.
            refused = errno.errorcode.get(exc.errno or 0)
            if mount_fuse_overlayfs(data, setup.merged):
                # The daemon lives in this mount namespace. pivot_root would make its root the
                # FUSE mount it serves (it re-roots every process whose root is the old root)
                # and it would deadlock on itself: continue in a copy of the namespace, as
                # podman does by mounting fuse-overlayfs in a parent namespace.
                lib.unshare(k.CLONE_NEWNS)
                lib.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
                sys.stderr.write(f"rl: overlayfs refused ({refused}): using fuse-overlayfs "
                                 "(see 'rl doctor overlay')\n")
                return
            sys.stderr.write(f"rl: overlayfs refused ({refused}) and fuse-overlayfs is not "
                             "usable: using a flattened copy of the image (slower start; see "
                             "'rl doctor overlay')\n")
            copy = data["flat"]
            os.makedirs(copy, exist_ok=True)
            flatten_layers([os.path.join(data["chdir"], d) for d in data["lowers"]], copy)
            lib.mount(copy, setup.merged, None, k.MS_BIND | k.MS_REC)
        finally:
            os.fchdir(cwd)
            os.close(cwd)
    else:
        lib.mount(data["source"], setup.merged, None, k.MS_BIND | k.MS_REC)


def mount_fuse_overlayfs(data: dict[str, Any], merged: str) -> bool:
    """Mount the layers with fuse-overlayfs on merged; False when it is not usable here.

    Runs in PID 1 before pivot_root, in the container's mount namespace, so the mount is the
    container's alone. fuse-overlayfs forks its daemon once the mount is ready and the first
    process exits 0: waiting for that is the ready signal. The daemon stays in the container's
    PID namespace (it dies with it) and reads overlay's own whiteouts and user.overlay.opaque.
    """
    if os.environ.get("RL_OVERLAY") == "copy" or not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return False
    exe = next((os.path.join(d, "fuse-overlayfs") for d in os.environ.get("PATH", DEFAULT_PATH).split(":")
                if os.access(os.path.join(d, "fuse-overlayfs"), os.X_OK)), None)
    if exe is None:
        return False
    # Paths relative to the layer store (the caller's working directory here): the daemon's
    # command line is visible in the container's `ps`, and need not show the host's paths.
    here = data["chdir"]
    lowers = ":".join(os.path.relpath(os.path.join(here, d), here) for d in overlay_lowers(data["lowers"]))
    upper, work = os.path.relpath(data["upper"], here), os.path.relpath(data["work"], here)
    merged = os.path.relpath(merged, here)
    options = f"lowerdir={lowers},upperdir={upper},workdir={work}"
    try:
        # Its stdio is /dev/null: a daemon holding the caller's pipes would keep a reader of
        # `rl run`'s output waiting after the container ended.
        devnull = [(os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_RDWR, 0) for fd in (0, 1, 2)]
        pid = os.posix_spawn(exe, [exe, "-o", options, merged], dict(os.environ),
                             file_actions=devnull)
    except OSError as exc:
        # The binary cannot be run (gone, not executable, not a program): not usable here.
        if exc.errno not in (errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOEXEC):
            raise
        return False
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _overlay_op(options: str) -> Any:
    return MountOp("mount", "/", "overlay", "overlay", 0, options)


def set_rlimits(limits: list[tuple[int, int, int]]) -> None:
    """setrlimit for each (resource, soft, hard); raising a hard limit needs CAP_SYS_RESOURCE
    in the host's user namespace (EPERM rootless), which fails the start as runc does."""
    import resource

    for res, soft, hard in limits:
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as exc:
            raise SetupError(f"setrlimit({res}, {soft}, {hard}): {exc}",
                             hint="a hard limit above the current one needs privileges "
                                  "an unprivileged runtime does not have") from None


def listen_for_start(path: str) -> Any:
    """The socket `rl-oci start` connects to (bound on the host's path before pivot_root;
    the descriptor keeps working after it). The relative bind keeps long --root paths within
    the 107 bytes of sun_path."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(os.path.dirname(path))
        sock.bind(os.path.basename(path))
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    sock.listen(1)
    return sock


def enter_root_without_pivot(new_root: str, lib: Any) -> None:
    """--no-pivot: move the rootfs mount over "/" and chroot (for a ramfs root, where
    pivot_root(2) is refused); the old root stays reachable to chroot escapes, as runc warns."""
    os.chdir(new_root)
    lib.mount(new_root, "/", None, k.MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def enter_root(new_root: str, lib: Any) -> None:
    """pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only
    the container's tree (the runc trick; avoids a put_old directory inside the image)."""
    os.chdir(new_root)
    lib.pivot_root(".", ".")
    lib.umount2(".", k.MNT_DETACH)
    os.chdir("/")


def bring_up_loopback() -> None:
    """SIOCSIFFLAGS IFF_UP on lo: an ioctl, so --network none needs no netlink library."""
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s.fileno(), k.SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), k.SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | k.IFF_UP))
    finally:
        s.close()


def run_command(setup: ContainerSetup, user: Any, chan: Channel, lib: Any,
                start: Any = None) -> NoReturn:
    env = dict(setup.env)
    env.setdefault("HOME", user.home)
    if setup.tty:
        attach_pty(setup, chan)
    elif not setup.interactive:
        fd = os.open("/dev/null", os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
    if setup.wait_for_go:
        msg = chan.recv()
        if not msg or msg.get("op") != "go":
            os._exit(125)
    if start is not None:
        wait_for_start(setup, env, chan, start, lib)
    security = setup.security
    if security is not None:
        # Still root with every capability of the namespace: secrets are written and chowned,
        # the bounding set dropped (PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root user
        # no longer has after setresuid). See rootless/security/__init__.py for the order.
        security.apply_before_identity(lib, user)
    set_identity(user, setup.mapping_mode, lib)
    if security is not None:
        security.apply_before_exec(lib, user)
    if setup.workdir:
        enter_workdir(setup.workdir)
    keep = {0, 1, 2, chan.fileno()} | set(range(3, 3 + (setup.preserve_fds or 0)))
    close_fds_except(keep)
    if setup.init:
        run_init(setup.command, env, chan, setup.tty)
    exec_command(setup.command, env, chan)


def wait_for_start(setup: ContainerSetup, env: dict[str, str], chan: Channel, listener: Any,
                   lib: Any) -> None:
    """An OCI container is "created" here: every set-up step is done and the command waits
    for `rl-oci start`. The launcher ("created" -> "ok") records the state before this
    process stops depending on it: PR_SET_PDEATHSIG is cleared, so the helper may exit and the
    caller's subreaper (conmon, containerd-shim, slurmstepd) becomes the parent that collects
    the exit status, as with runc. `chan` becomes the start connection: errors from here on
    (a startContainer hook, the exec) go to `start`."""
    find_executable(setup.command[0], env)  # runc fails `create`, not `start`, for this
    chan.send("created")
    msg = chan.recv()
    if not msg or msg.get("op") != "ok":
        os._exit(1)  # the launcher is gone: nobody recorded this container
    if msg.get("detach"):
        lib.set_pdeathsig(0)
        if not setup.tty:  # (with a terminal, take_terminal made a session already)
            # A session of its own: the caller's process group is not the container's. Slurm
            # kills the whole group of a runtime command once it returns (run_command's
            # killpg), and a ^C in the shell that ran `create` must not reach it either.
            os.setsid()
        chan.send("detached")
    chan.sock.close()

    def stop(signum: int, _frame: Any) -> None:
        # PID 1 of a PID namespace gets no signal it has no handler for (but SIGKILL):
        # `kill` of a created container must still end it (runc's init behaves the same).
        os._exit(128 + signum)

    ending = [s for s in FORWARDED if s != signal.SIGWINCH]
    for sig in ending:
        signal.signal(sig, stop)
    # _socket's own accept (socket.py's wrapper is not imported here); the new descriptor
    # is close-on-exec, as Python makes every descriptor it creates.
    fd, _ = listener._accept()
    listener.close()
    conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0, fd)
    for sig in ending:
        signal.signal(sig, signal.SIG_DFL)
    conn.setblocking(True)
    chan.sock = conn
    msg = chan.recv()
    if not msg or msg.get("op") != "start":
        os._exit(1)
    if setup.hooks is not None:
        setup.hooks.run_in_container("startContainer")


def find_executable(name: str, env: dict[str, str]) -> None:
    """CommandError 127 (or 126) unless `name` resolves to an executable in the container's
    PATH: checked at create time, as runc and crun do, so `create` fails rather than `start`."""
    if "/" in name:
        candidates = [name]
    else:
        candidates = [os.path.join(d or ".", name) for d in env.get("PATH", DEFAULT_PATH).split(":")]
    for path in candidates:
        if os.path.isfile(path):
            if os.access(path, os.X_OK):
                return
            # runc's wording: podman maps "permission denied" to 126 and "executable file
            # not found" to 127 (libpod's OCI runtime error handling).
            raise CommandError(f'exec: "{name}": permission denied', exit_code=126)
    raise CommandError(f'exec: "{name}": executable file not found in $PATH', exit_code=127,
                       hint="check process.args[0] and the PATH in process.env")


def set_identity(user: Any, mapping_mode: str, lib: Any = None) -> None:
    """Become the command's user. With `lib` (PID 1), PR_SET_PDEATHSIG is armed again after:
    a change of effective ids clears it (commit_creds, kernel/cred.c), and PID 1 would outlive
    its helper."""
    try:
        if mapping_mode != "single":
            os.setgroups(user.groups)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
        if lib is not None:
            lib.set_pdeathsig(signal.SIGKILL)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise unmapped_user(user) from None
        raise


def unmapped_user(user: Any) -> SetupError:
    """EINVAL from setresuid or chown: the id has no mapping in the user namespace."""
    return SetupError(
        f"user {user.uid}:{user.gid} is not mapped in the container's user namespace",
        hint="single-id mode maps only root; add /etc/subuid and /etc/subgid ranges "
             "(see 'rl doctor subids') or run as root in the container",
    )


# -- the working directory (podman's rules) --------------------------------------------------

def workdir_creation(flag: str | None, image: str | None, volumes: Any) -> str | None:
    """Who creates a missing working directory, as podman 4.3 does: "image" for the image's
    WorkingDir (made for the container's user), "volume" for a -w below a volume (made by
    the container's root, as runc does), None for any other -w (it must exist: 126)."""
    if not flag:
        return "image" if image else None
    path = posixpath.normpath(flag)
    for vol in volumes or ():
        dest = posixpath.normpath(vol.destination)
        if path == dest or path.startswith(dest.rstrip("/") + "/"):
            return "volume"
    return None


def create_workdir(path: str, creator: str, user: Any) -> None:
    """mkdir -p `path`, in PID 1 after pivot_root and before the switch to the container's user.

    After pivot_root the old root is detached: every path, and every symlink an image holds
    (absolute or relative), resolves inside the container, so nothing can be created on the
    host except under a volume the user mounted. Each directory made is chmod'ed to 0755
    (mkdir's mode is cut by the umask of the user's shell), and the last one is chowned to the
    container's user for an image's WorkingDir (podman: MkdirAll 0755, then chown)."""
    made = ""
    current = "/"
    for part in [p for p in path.split("/") if p]:
        current = posixpath.join(current, part)
        try:
            os.mkdir(current, 0o755)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CommandError(describe_oserror(f'create workdir "{path}"', exc),
                               hint="an image's WorkingDir is created when missing; this path "
                                    "cannot be (a file in the way, or a read-only volume)",
                               exit_code=126) from None
        os.chmod(current, 0o755)
        made = current
    if made and creator == "image" and (user.uid, user.gid) != (0, 0):
        try:
            os.chown(made, user.uid, user.gid)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise unmapped_user(user) from None
            raise


def enter_workdir(path: str) -> None:
    """chdir as the container's user; podman's messages and 126 when it cannot be entered."""
    try:
        os.chdir(path)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and os.path.exists(path):
            message = f'workdir "{path}" is not a directory'
        elif exc.errno in (errno.ENOENT, errno.ENOTDIR):  # ENOTDIR: a file on the way
            message = f'workdir "{path}" does not exist in the container'
        else:
            message = describe_oserror(f'workdir "{path}" cannot be entered', exc)
        raise CommandError(message, exit_code=126,
                           hint="-w must name a directory of the container (an image's own "
                                "WorkingDir is created when missing)") from None


def exec_command(command: list[str], env: dict[str, str], chan: Channel) -> NoReturn:
    """execve with a PATH search in the container's PATH; errors go home as 126/127."""
    try:
        execvpe(command[0], command, env)
    except OSError as exc:
        err = exc.errno or 0
        name = command[0]
        if err in (errno.ENOENT, errno.ENOTDIR):
            if "/" in name:
                message = f"{name}: no such file or directory"
            else:
                message = f"executable file {name!r} not found in $PATH"
            fields = {"message": message, "exit_code": 127,
                      "hint": "check the command name and the image's PATH"}
        else:
            fields = {"message": describe_oserror(f"cannot execute {name!r}", exc),
                      "exit_code": 126, "hint": None}
        chan.send("error", step="exec", errno=err, **fields)
        os._exit(fields["exit_code"])  # type: ignore[arg-type]


def execvpe(name: str, argv: list[str], env: dict[str, str]) -> NoReturn:
    """execve with the shell's PATH search in the container's PATH. Not os.execvpe: its
    get_exec_path() imports `warnings`, and after pivot_root no Python module can be imported.
    Errors as POSIX execvp: a permission error wins over "not found" for the same name."""
    if "/" in name:
        os.execve(name, argv, env)
    first_error: OSError | None = None
    last: OSError | None = None
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), argv, env)
        except (FileNotFoundError, NotADirectoryError) as exc:
            last = exc
        except OSError as exc:
            last = exc
            first_error = first_error or exc
    raise first_error or last or FileNotFoundError(errno.ENOENT, name)


def attach_pty(setup: ContainerSetup, chan: Channel) -> None:
    """Open a pty in the container's own devpts, make it the controlling terminal of PID 1's
    new session, and hand the master to the launcher (SCM_RIGHTS) to proxy."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, k.TIOCSPTLCK, struct.pack("i", 0))
    try:
        slave = fcntl.ioctl(master, k.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError as exc:
        # Kernels before 4.13 have no TIOCGPTPEER (an unknown ioctl: ENOTTY, or EINVAL).
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
        num = struct.unpack("I", fcntl.ioctl(master, k.TIOCGPTN, struct.pack("I", 0)))[0]
        slave = os.open(f"/dev/pts/{num}", os.O_RDWR | os.O_NOCTTY)
    if setup.winsize:
        rows, cols = setup.winsize
        fcntl.ioctl(slave, k.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    chan.send_fd("pty", master)
    os.close(master)
    take_terminal(slave)


def take_terminal(slave: int) -> None:
    """A new session with the pty `slave` as its controlling terminal and as stdin, stdout
    and stderr (TIOCSCTTY needs a session leader without a terminal: setsid first)."""
    os.setsid()
    fcntl.ioctl(slave, k.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


from rootless.runtime.init import run_init  # noqa: E402  (init imports exec_command from here)
