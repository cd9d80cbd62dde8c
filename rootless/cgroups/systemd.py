"""A delegated cgroup from the systemd user manager: a transient scope with Delegate=yes.

Used when the user's own cgroup is not delegated (a login shell sits in session-N.scope, owned
by root). The scope is asked for over D-Bus with the helper's pid in it: the user manager, and
through it the system manager, may move a process out of the session scope, which the user
may not (delegation containment). `systemd-run --user --scope` cannot do this for an existing
process; busctl (systemd's own D-Bus client) stands in when jeepney is not installed.
"""

from __future__ import annotations

import os
import time

from rootless.cgroups.plan import cgroup_dir, own_cgroup
from rootless.errors import CgroupError, describe_oserror

# typing only for annotations: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MANAGER = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1",
           "org.freedesktop.systemd1.Manager")
SIGNATURE = "ssa(sv)a(sa(sv))"


def user_manager_cgroup(mount: tuple[str, str], uid: int) -> str | None:
    """user@UID.service's cgroup, where systemd's delegated controllers show, if it exists."""
    path = f"{mount[0]}/user.slice/user-{uid}.slice/user@{uid}.service"
    return path if os.path.isdir(path) else None


def session_bus() -> str | None:
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    if address:
        return address
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.exists(f"{runtime}/bus"):
        return f"unix:path={runtime}/bus"
    return None


def reachable() -> bool:
    return session_bus() is not None


def scope_properties(pid: int, description: str) -> list[tuple[str, tuple[str, Any]]]:
    """StartTransientUnit's properties (org.freedesktop.systemd1(5))."""
    return [
        ("Description", ("s", description)),
        ("PIDs", ("au", [pid])),
        ("Delegate", ("b", True)),
        # Forget the unit once it is over, failed or not: no `systemctl --user reset-failed`.
        ("CollectMode", ("s", "inactive-or-failed")),
    ]


def busctl_args(unit: str, pid: int, description: str) -> list[str]:
    """The same call through `busctl --user call` (busctl(1): a signature, then its values)."""
    return ["busctl", "--user", "--quiet", "call", *MANAGER, "StartTransientUnit", SIGNATURE,
            unit, "fail", "4", "Description", "s", description, "PIDs", "au", "1", str(pid),
            "Delegate", "b", "true", "CollectMode", "s", "inactive-or-failed", "0"]


class Scope:
    __slots__ = ("unit", "path")

    def __init__(self, unit: str, path: str) -> None:
        self.unit, self.path = unit, path

    def release(self) -> None:
        # Nothing to do: systemd stops the scope once it is empty and removes its cgroups.
        pass


def start_scope(mount: tuple[str, str], name: str, pid: int, log: Any) -> Scope:
    """Ask the user manager for `name.scope` holding `pid`; wait until `pid` is in it."""
    unit = f"{name}.scope"
    description = f"rl container {name[3:]}"
    try:
        _call_jeepney(unit, pid, description)
    except ImportError:
        _call_busctl(unit, pid, description)
    deadline = time.monotonic() + 5
    while True:
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                path = own_cgroup(f.read()) or ""
        except (FileNotFoundError, ProcessLookupError):
            # ENOENT, ESRCH: the helper has exited; waiting for the move is pointless.
            raise CgroupError(f"the container's helper (pid {pid}) exited before the systemd"
                              f" user manager moved it into {unit}") from None
        except OSError as exc:
            raise CgroupError(describe_oserror(f"cannot read /proc/{pid}/cgroup", exc)) from None
        if path.endswith("/" + unit):
            scope = Scope(unit, cgroup_dir(mount, path))
            log(f"cgroup: systemd scope {scope.path}")
            return scope
        if time.monotonic() > deadline:
            raise CgroupError(f"the systemd user manager did not move the container into {unit}"
                              f" (its cgroup is {path or 'unknown'})")
        time.sleep(0.002)


def scope_message(unit: str, pid: int, description: str) -> Any:
    """The StartTransientUnit method call, as a jeepney message."""
    from jeepney import DBusAddress, new_method_call

    address = DBusAddress(MANAGER[1], bus_name=MANAGER[0], interface=MANAGER[2])
    return new_method_call(address, "StartTransientUnit", SIGNATURE,
                           (unit, "fail", scope_properties(pid, description), []))


def _call_jeepney(unit: str, pid: int, description: str) -> None:
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import DBusErrorResponse, unwrap_msg

    message = scope_message(unit, pid, description)
    try:
        with open_dbus_connection(bus=session_bus() or "SESSION") as conn:
            unwrap_msg(conn.send_and_get_reply(message, timeout=10))
    except DBusErrorResponse as exc:
        raise CgroupError(f"the systemd user manager refused a scope for the container: {exc}",
                          hint="check `systemctl --user status`") from None
    except (OSError, TimeoutError) as exc:
        raise CgroupError(f"cannot reach the systemd user manager over D-Bus: {exc}",
                          hint="check DBUS_SESSION_BUS_ADDRESS and `systemctl --user status`") from None


def _call_busctl(unit: str, pid: int, description: str) -> None:
    import shutil
    import subprocess

    if shutil.which("busctl") is None:
        raise CgroupError("cannot ask the systemd user manager for a scope: neither the jeepney"
                          " Python package nor busctl is installed",
                          hint="pip install jeepney (or install systemd's busctl)")
    result = subprocess.run(busctl_args(unit, pid, description), capture_output=True, text=True,
                            timeout=10)
    if result.returncode != 0:
        raise CgroupError("the systemd user manager refused a scope for the container:"
                          f" {result.stderr.strip() or 'busctl failed'}",
                          hint="check `systemctl --user status`")
