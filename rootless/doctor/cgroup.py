"""Cgroup version, the user's own cgroup, and which controllers are delegated to it.

Limits (--memory, --pids-limit, --cpus) need cgroup v2 with the controllers delegated to a
cgroup the user owns: systemd does that for user@UID.service with `Delegate=`. Without it rl
runs containers but cannot limit them, hence warnings.
"""

from __future__ import annotations

import os

from rootless.doctor import OK, WARNING, Check, Host
from rootless.fileio import read_or_empty

WANTED = ("cpu", "cpuset", "io", "memory", "pids")
DELEGATE_FIX = (
    "sudo mkdir -p /etc/systemd/system/user@.service.d\n"
    "sudo tee /etc/systemd/system/user@.service.d/delegate.conf <<'END'\n"
    "[Service]\n"
    "Delegate=cpu cpuset io memory pids\n"
    "END\n"
    "sudo systemctl daemon-reload   (then log out and back in)"
)
UNIFIED_FIX = ("boot with the unified cgroup v2 hierarchy: add systemd.unified_cgroup_hierarchy=1 "
               "to GRUB_CMDLINE_LINUX in /etc/default/grub, run sudo update-grub, reboot")



def check_cgroups(host: Host) -> list[Check]:
    from rootless.cgroups.plan import cgroup2_mount, cgroup_dir, own_cgroup

    proc = host.proc_root
    mountinfo = read_or_empty(f"{proc}/self/mountinfo")
    mount = cgroup2_mount(mountinfo)
    v1 = any(" - cgroup " in line for line in mountinfo.splitlines())
    own = own_cgroup(read_or_empty(f"{proc}/self/cgroup"))
    if mount is None or own is None:
        return [Check("cgroups", "cgroup version", WARNING,
                      "no cgroup v2 hierarchy: resource limits cannot be applied", UNIFIED_FIX),
                Check("delegation", "delegated controllers", WARNING,
                      "not checked: no cgroup v2", UNIFIED_FIX)]
    directory = cgroup_dir(mount, own)
    if v1 or mount[0] != "/sys/fs/cgroup":
        version = f"hybrid (v1 controllers; cgroup v2 at {mount[0]})"
    else:
        version = "v2 (unified)"
    checks = [Check("cgroups", "cgroup version", OK if not v1 else WARNING,
                    f"{version}; your cgroup is {own}",
                    UNIFIED_FIX if v1 else "")]
    available = read_or_empty(f"{directory}/cgroup.controllers").split()
    writable = os.access(directory, os.W_OK) and os.access(f"{directory}/cgroup.procs", os.W_OK)
    missing = [c for c in WANTED if c not in available]
    if not writable:
        checks.append(Check("delegation", "delegated controllers", WARNING,
                            f"{directory} is not writable by {host.user}: nothing is delegated, "
                            "so --memory, --pids-limit and --cpus cannot be applied",
                            DELEGATE_FIX + "\n(rl uses the cgroup of the shell it runs in: "
                            "with systemd, run it from a login session or "
                            "'systemd-run --user --scope -p Delegate=yes rl run ...')"))
    elif missing:
        checks.append(Check("delegation", "delegated controllers", WARNING,
                            f"{directory}: controllers {' '.join(available) or '(none)'}; "
                            f"missing {' '.join(missing)}", DELEGATE_FIX))
    else:
        checks.append(Check("delegation", "delegated controllers", OK,
                            f"{directory}: {' '.join(available)}"))
    return checks
