"""Entering a user namespace with the right id maps, and explaining why it failed.

The protocol for a child that needs a user namespace (used by the launcher and by layer
unpacking alike):

  1. parent: fork; the child sets PR_SET_PDEATHSIG so it never outlives the parent.
  2. child:  unshare(CLONE_NEWUSER) and send "userns" on the channel.
  3. parent: write the maps from outside (a process may not write its own maps with more than
             its own id: user_namespaces(7)); newuidmap/newgidmap for subordinate ranges, or a
             direct write with setgroups=deny before gid_map for the single-id map; send "go".
  4. child:  setresgid/setresuid(0): it is now root over its namespace's resources.

unshare(CLONE_NEWUSER) is refused in a multi-threaded process (EINVAL), so the fork must happen
from a single-threaded point: `rl pull` starts its unpacking child before any download
thread (start_in_userns), then downloads while it runs.
"""

from __future__ import annotations

import _signal as signal  # signal.py only adds enums: importing it (and enum) costs ~3 ms
import os
import sys

from rootless.errors import RlError, SetupError, describe_oserror
from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.primitives.channel import Channel, error_message, raise_error

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False

if TYPE_CHECKING:
    # collections.abc too: importing it (and collections) costs ~1.5 ms of every start.
    from collections.abc import Callable

    from idmap import IdMapping
    from rootless.paths import Paths

SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"


def default_mapping(
    userns: str = "",
    uidmaps: list[str] | None = None,
    gidmaps: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[IdMapping, tuple[str, str] | None]:
    """The user's id mapping for a run (and the newuidmap/newgidmap pair when usable)."""
    import idmap

    env = os.environ if env is None else env  # type: ignore[assignment]
    uid, gid, user = idmap.current_user()
    helpers = idmap.find_helpers(env.get("PATH"))
    # RL_SUBUID_FILE/RL_SUBGID_FILE let tests and `rl doctor` point at fixture files; they
    # grant nothing: newuidmap checks the real /etc/subuid itself.
    subuids = idmap.read_subids(env.get("RL_SUBUID_FILE", SUBUID_FILE), user, uid)
    subgids = idmap.read_subids(env.get("RL_SUBGID_FILE", SUBGID_FILE), user, gid)
    try:
        mapping = idmap.plan_mapping(
            uid=uid, gid=gid, user=user, subuids=subuids, subgids=subgids,
            helpers_available=helpers is not None, userns=userns,
            uidmaps=uidmaps or (), gidmaps=gidmaps or (),
        )
    except idmap.IdMapError as exc:
        raise RlError(str(exc), hint=getattr(exc, "hint", None)) from None
    return mapping, helpers


def apply_mapping(pid: int, mapping: IdMapping, helpers: tuple[str, str] | None) -> None:
    import idmap

    try:
        idmap.apply_mapping(pid, mapping, helpers)
    except idmap.IdMapError as exc:
        raise SetupError(str(exc), hint=getattr(exc, "hint", None)) from None
    except OSError as exc:
        raise SetupError(
            describe_oserror(f"writing the id maps of process {pid}", exc),
            hint="see 'rl doctor uidmap-works' and 'rl doctor subids'",
        ) from None


def unshare_user(lib: object | None = None) -> None:
    """unshare(CLONE_NEWUSER) with an error that says why the host refused it."""
    try:
        (lib or libc()).unshare(k.CLONE_NEWUSER)  # type: ignore[attr-defined]
    except OSError as exc:
        raise userns_error(exc) from None


def unshare_user_nested(mapping: IdMapping, lib: object | None = None) -> None:
    """unshare(CLONE_NEWUSER) inside the user namespace this process joined (an rl network's),
    with `mapping.nested()` written by a child that stays in the joined namespace.

    user_namespaces(7): the maps of a namespace are written from its parent namespace (or from
    itself, one id only). The launcher is not in the joined namespace; this process will not be
    after the unshare; its child, forked first, is, with the capabilities setns gave it, and
    holds every capability in the new namespace too (its creator has the same host uid, and it
    is a child of the writer's namespace)."""
    import idmap

    lib = lib or libc()
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    said_r, said_w = os.pipe2(os.O_CLOEXEC)
    me = os.getpid()
    writer = os.fork()
    if writer == 0:  # the map writer: stays in the joined namespace
        code = 1
        try:
            os.close(go_w)
            os.close(said_r)
            if os.read(go_r, 1) == b"1":  # EOF: the unshare failed, nothing to write
                idmap.apply_mapping(me, mapping.nested(), None)
                code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            hint = getattr(exc, "hint", None)
            os.write(said_w, (f"{exc}" + (f"\n{hint}" if hint else "")).encode())
        finally:
            os._exit(code)
    os.close(go_r)
    os.close(said_w)
    try:
        try:
            unshare_user(lib)
            os.write(go_w, b"1")
        finally:
            os.close(go_w)
        said = b""
        while chunk := os.read(said_r, 4096):
            said += chunk
    finally:
        os.close(said_r)
        _, status = os.waitpid(writer, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        message, _, hint = said.decode(errors="replace").partition("\n")
        raise SetupError(message or f"the map writer exited with status {status}",
                         hint=hint or "see 'rl doctor uidmap-works'")


def become_root(mapping: IdMapping, lib: object | None = None) -> None:
    """Inside the new namespace: take uid/gid 0 (the invoking user on the host by default; the
    first subordinate id with --userns=keep-id), keeping PR_SET_PDEATHSIG armed."""
    if mapping.mode != "single" and setgroups_allowed():
        # setgroups is allowed only when /proc/self/setgroups is "allow": newgidmap leaves it
        # "deny" when the map holds only the user's own gid (shadow, after CVE-2018-7169).
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    # When the host ids change (keep-id maps container root to a subordinate id) the kernel
    # clears the parent-death signal (commit_creds in kernel/cred.c): arm it again.
    (lib or libc()).set_pdeathsig(signal.SIGKILL)  # type: ignore[attr-defined]


def setgroups_allowed() -> bool:
    from rootless.fileio import read_or_empty

    return read_or_empty("/proc/self/setgroups").strip() != "deny"


def userns_error(exc: OSError, sysctl_root: str = "/proc/sys") -> RlError:
    """Turn a failed unshare(CLONE_NEWUSER) into an error naming the host setting to change."""
    cause, fix = diagnose_userns(sysctl_root)
    message = describe_oserror("creating a user namespace (unshare CLONE_NEWUSER)", exc)
    if cause:
        message += f"; {cause}"
    hint = f"{fix} (see 'rl doctor userns-sysctl')" if fix else "see 'rl doctor userns'"
    return SetupError(message, hint=hint)


def diagnose_userns(sysctl_root: str = "/proc/sys") -> tuple[str | None, str | None]:
    """The host setting that blocks unprivileged user namespaces, and the command that fixes it."""

    def read(name: str) -> str | None:
        try:
            with open(os.path.join(sysctl_root, name)) as f:
                return f.read().strip()
        except FileNotFoundError:  # a setting this kernel does not have (Debian's, Ubuntu's)
            return None

    if read("user/max_user_namespaces") == "0":
        return ("user.max_user_namespaces is 0",
                "sudo sysctl -w user.max_user_namespaces=28633 (and set it in /etc/sysctl.d/)")
    if read("kernel/unprivileged_userns_clone") == "0":
        return ("kernel.unprivileged_userns_clone is 0",
                "sudo sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d/)")
    if read("kernel/apparmor_restrict_unprivileged_userns") == "1":
        return ("AppArmor restricts unprivileged user namespaces "
                "(kernel.apparmor_restrict_unprivileged_userns=1)",
                "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an "
                "AppArmor profile for rl with 'userns,'")
    return None, None


def run_in_userns(
    fn: Callable[[], None],
    *,
    paths: Paths | None = None,
    name: str = "rl:[userns]",
    mapping: IdMapping | None = None,
    helpers: tuple[str, str] | None = None,
) -> None:
    """Run fn() as root in a new user namespace with the user's default mapping.

    fn runs in a forked child; an RlError or OSError it raises is re-raised here with the same
    message and hint. Call from a single-threaded point only.
    """
    start_in_userns(fn, paths=paths, name=name, mapping=mapping, helpers=helpers).wait()


class UsernsChild:
    """A child started by start_in_userns, running fn() as root in its namespace."""

    def __init__(self, pid: int, channel: Channel, name: str) -> None:
        self.pid = pid
        self.name = name
        self._channel = channel

    def wait(self) -> None:
        """Wait for fn() to return; re-raise what it raised (see run_in_userns)."""
        try:
            msg = self._channel.recv()
            if msg and msg.get("op") == "error":
                raise_error(msg)
        finally:
            self._channel.close()
            _, status = os.waitpid(self.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SetupError(f"{self.name} exited with status {os.waitstatus_to_exitcode(status)}")


def start_in_userns(
    fn: Callable[[], None],
    *,
    paths: Paths | None = None,
    name: str = "rl:[userns]",
    mapping: IdMapping | None = None,
    helpers: tuple[str, str] | None = None,
) -> UsernsChild:
    """run_in_userns without the wait: returns once the child runs as root in its namespace,
    so that the caller may work (and start threads) while fn() runs; then call wait()."""
    del paths  # the mapping does not depend on the storage location (yet)
    if mapping is None:
        mapping, helpers = default_mapping()
    parent, child = Channel.pair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            parent.close()
            lib = libc()
            lib.set_pdeathsig(signal.SIGKILL)
            lib.set_name(name)
            try:
                unshare_user(lib)
                child.send("userns")
                go = child.recv()
                if not go or go.get("op") != "go":
                    os._exit(1)
                become_root(mapping)
                fn()
            except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent
                child.send("error", **error_message(name, exc))
                code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    child.close()
    started = UsernsChild(pid, parent, name)
    try:
        msg = parent.recv()
        if msg and msg.get("op") == "userns":
            apply_mapping(pid, mapping, helpers)
            parent.send("go")
            return started
        if msg and msg.get("op") == "error":
            raise_error(msg)
    except BaseException:
        parent.close()
        os.waitpid(pid, 0)
        raise
    started.wait()  # the child ended before its namespace existed: report how
    raise SetupError(f"{name} ended before its user namespace existed")
