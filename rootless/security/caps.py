"""Capabilities: podman's default set, --cap-add/--cap-drop/--privileged, and applying them.

The container's root holds every capability *of its user namespace* after setresuid(0); these
are still worth cutting down, because each one opens kernel code paths (capabilities(7),
user_namespaces(7)). Rules used below:
  - PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set, so the bounding set is dropped
    while PID 1 is still root, before the switch to the container user.
  - setresuid() from 0 to non-zero ids clears the permitted and effective sets unless
    PR_SET_KEEPCAPS is on; ambient capabilities need the capability in permitted and
    inheritable first (prctl(2) PR_CAP_AMBIENT_RAISE).
"""

from __future__ import annotations

import errno

from rootless.errors import UsageError
from rootless.kernel import constants as k

TYPE_CHECKING = False  # typing costs ~2 ms of `rl run`: annotations only
if TYPE_CHECKING:
    from typing import Any

# <linux/capability.h>, index = capability number.
CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

# containers.conf default_capabilities (podman 4+).
DEFAULT_CAPS = (
    "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
)

# <linux/prctl.h> values the kernel package does not name yet.
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT_RAISE = 2


def cap_number(name: str) -> int:
    """CAP_NET_ADMIN, net_admin, NET_ADMIN -> 12. UsageError (125) for an unknown name."""
    upper = name.strip().upper()
    if upper.startswith("CAP_"):
        upper = upper[4:]
    try:
        return CAP_NAMES.index(upper)
    except ValueError:
        raise UsageError(f"unknown capability {name!r}",
                         hint="use a name from capabilities(7), with or without CAP_, or ALL") from None


def mask_of(names: list[str] | tuple[str, ...]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << cap_number(name)
    return mask


def all_caps(last_cap: int) -> int:
    return (1 << (last_cap + 1)) - 1


def _split(values: list[str]) -> list[str]:
    # podman accepts both repeated flags and comma lists: --cap-add=a,b
    return [v for item in values for v in item.split(",") if v.strip()]


def plan_caps(cap_add: list[str], cap_drop: list[str], privileged: bool,
              last_cap: int) -> tuple[int, int]:
    """(container set, added set) as bit masks. The container set is root's bounding,
    permitted and effective set; the added set is what a non-root --user receives (podman
    gives a non-root user only the capabilities named with --cap-add)."""
    adds, drops = _split(cap_add), _split(cap_drop)
    everything = all_caps(last_cap)
    add_all = any(a.strip().upper() in ("ALL", "CAP_ALL") for a in adds)
    drop_all = any(d.strip().upper() in ("ALL", "CAP_ALL") for d in drops)
    added = everything if add_all else mask_of([a for a in adds if a.strip().upper() != "ALL"])
    dropped = 0 if drop_all else mask_of([d for d in drops if d.strip().upper() != "ALL"])
    both = added & dropped & ~(everything if add_all else 0)
    if both:
        names = ", ".join(CAP_NAMES[i] for i in range(last_cap + 1) if both >> i & 1)
        raise UsageError(f"capability {names} cannot be both added and dropped")
    if privileged:
        base = everything
    elif drop_all:
        base = 0
    else:
        base = mask_of(DEFAULT_CAPS)
    caps = (base | added) & ~dropped & everything
    return caps, added & caps


def names_of(mask: int) -> list[str]:
    return [f"CAP_{n}" for i, n in enumerate(CAP_NAMES) if mask >> i & 1]


def read_last_cap(path: str = "/proc/sys/kernel/cap_last_cap") -> int:
    try:
        with open(path) as f:
            return min(int(f.read()), len(CAP_NAMES) - 1)
    except FileNotFoundError:  # kernels before 3.2 have no cap_last_cap
        return len(CAP_NAMES) - 1


# -- applying (PID 1) ------------------------------------------------------------------------

def drop_bounding_set(lib: Any, keep: int, last_cap: int) -> None:
    """Remove from the bounding set every capability not in keep: no later execve (a setuid
    or file-capability binary) can bring them back."""
    for cap in range(last_cap + 1):
        if keep >> cap & 1:
            continue
        try:
            lib.prctl(k.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: the kernel does not know this capability
                raise


def clear_ambient(lib: Any) -> None:
    try:
        lib.prctl(k.PR_CAP_AMBIENT, k.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # kernels before 4.3 have no ambient set
            raise


def keep_caps_across_setuid(lib: Any) -> None:
    lib.prctl(PR_SET_KEEPCAPS, 1)


def set_process_caps(lib: Any, effective: int, inheritable: int = 0) -> None:
    """capset: permitted = effective; can only lower what the process holds."""
    lib.capset(effective, effective, inheritable)


def raise_ambient(lib: Any, mask: int, last_cap: int) -> None:
    for cap in range(last_cap + 1):
        if mask >> cap & 1:
            lib.prctl(k.PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
