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

import _socket  # socket.py's wrappers cost start-up time and add nothing here
import errno
import fcntl
import os
import signal
import struct
import sys

from rootless.errors import CommandError, RlError, SetupError, describe_oserror
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.primitives.channel import Channel, error_message
from rootless.primitives.mounts import MountFailure, MountOp, apply_plan, remount_bind
from rootless.runtime.flatten import flatten_layers
from rootless.runtime.proc import close_fds_except
from rootless.runtime.rootfs import overlay_lowers
from rootless.runtime.users import resolve_user

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

# Everything PID 1 uses after pivot_root must be imported before it: the host's Python
# installation is not visible from inside the container.

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ContainerSetup:
    """Everything PID 1 needs, computed by the launcher before the fork (plain data)."""

    __slots__ = (
        "rootfs_data", "merged", "plan", "hostname", "read_only", "command", "env", "workdir",
        "user", "tty", "winsize", "interactive", "init", "bring_up_lo", "wait_for_go",
        "security", "preserve_fds", "mapping_mode", "debug",
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
        # Not dumpable while set-up holds the channel and host paths (ptrace by the host
        # user's other processes is refused); execve restores the default.
        lib.set_dumpable(False)
        lib.set_name("rl:[pid1]")
        step = "create the mount namespace"
        lib.unshare(k.CLONE_NEWNS)
        lib.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
        step = "mount the root filesystem"
        mount_rootfs(setup, lib)
        step = "mount the container's filesystems"
        apply_plan(setup.merged, setup.plan, lib, log=_debug_logger(setup))
        step = "pivot_root into the container"
        enter_root(setup.merged, lib)
        if setup.read_only:
            step = "make the root filesystem read-only"
            remount_bind("/", k.MS_RDONLY, lib)
        step = "set the hostname"
        lib.sethostname(setup.hostname)
        if setup.bring_up_lo:
            step = "bring up the loopback interface"
            bring_up_loopback()
        run_command(setup, chan, lib)
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
        _, status = os.waitpid(pid, 0)
    except OSError:
        return False
    return os.waitstatus_to_exitcode(status) == 0


def _overlay_op(options: str) -> Any:
    return MountOp("mount", "/", "overlay", "overlay", 0, options)


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


def run_command(setup: ContainerSetup, chan: Channel, lib: Any) -> NoReturn:
    user = resolve_user(setup.user)
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
    security = setup.security
    if security is not None:
        # Still root with every capability of the namespace: secrets are written and chowned,
        # the bounding set dropped (PR_CAPBSET_DROP needs CAP_SETPCAP, which a non-root user
        # no longer has after setresuid). See rootless/security/__init__.py for the order.
        security.apply_before_identity(lib, user)
    set_identity(user, setup.mapping_mode)
    if security is not None:
        security.apply_before_exec(lib, user)
    if setup.workdir:
        try:
            os.chdir(setup.workdir)
        except OSError as exc:
            raise CommandError(
                describe_oserror(f"workdir {setup.workdir!r} cannot be entered", exc),
                hint="the directory must exist in the container; create it or use another -w",
                exit_code=126,
            ) from None
    keep = {0, 1, 2, chan.fileno()} | set(range(3, 3 + (setup.preserve_fds or 0)))
    close_fds_except(keep)
    if setup.init:
        run_init(setup.command, env, chan, setup.tty)
    exec_command(setup.command, env, chan)


def set_identity(user: Any, mapping_mode: str) -> None:
    try:
        if mapping_mode != "single":
            os.setgroups(user.groups)
        os.setresgid(user.gid, user.gid, user.gid)
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise SetupError(
                f"user {user.uid}:{user.gid} is not mapped in the container's user namespace",
                hint="single-id mode maps only root; add /etc/subuid and /etc/subgid ranges "
                     "(see 'rl doctor subids') or run as root in the container",
            ) from None
        raise


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
    except OSError:
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
