"""The kernel's version and the sysctls that allow or forbid unprivileged user namespaces."""

from __future__ import annotations

import os

from rootless.doctor import FAILURE, OK, WARNING, Check, Host

# Features rl relies on, and the kernel that brought each.
_FEATURES = [
    ((3, 8), "unprivileged user namespaces"),
    ((4, 6), "cgroup namespaces"),
    ((5, 6), "time namespaces"),
    ((5, 11), "overlayfs in a user namespace with userxattr"),
]


def kernel_version(release: str) -> tuple[int, int]:
    parts = release.split("-")[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


def check_kernel(host: Host) -> list[Check]:
    release = host.env.get("RL_KERNEL_RELEASE") or os.uname().release
    version = kernel_version(release)
    missing = [what for needed, what in _FEATURES if version < needed]
    if version < (3, 8):
        return [Check("kernel", "kernel", FAILURE, f"Linux {release}: too old for rootless "
                      "containers", "upgrade to Linux 5.11 or later")]
    if missing:
        return [Check("kernel", "kernel", WARNING,
                      f"Linux {release}: lacks {', '.join(missing)}",
                      "upgrade to Linux 5.11 or later (fuse-overlayfs stands in for overlayfs)")]
    return [Check("kernel", "kernel", OK, f"Linux {release}")]


def check_userns_sysctls(host: Host) -> list[Check]:
    from rootless.primitives.userns import diagnose_userns

    cause, fix = diagnose_userns(host.sysctl_root)
    if cause:
        if "apparmor" in cause.lower():
            fix = apparmor_fix(host)
        return [Check("userns-sysctl", "user namespace sysctls", FAILURE, cause, fix or "")]
    shown = []
    for name in ("user.max_user_namespaces", "kernel.unprivileged_userns_clone",
                 "kernel.apparmor_restrict_unprivileged_userns"):
        value = host.sysctl(name)
        if value is not None:
            shown.append(f"{name}={value}")
    return [Check("userns-sysctl", "user namespace sysctls", OK,
                  ", ".join(shown) + " (unprivileged user namespaces allowed)")]


def apparmor_fix(host: Host) -> str:
    """Ubuntu 23.10+: an AppArmor profile with `userns,` for rl, or the sysctl off."""
    exe = os.path.realpath(host.which("rl") or "/usr/local/bin/rl")
    return (
        "either allow rl to create user namespaces with an AppArmor profile:\n"
        "  sudo tee /etc/apparmor.d/rl <<'END'\n"
        "  abi <abi/4.0>,\n"
        "  include <tunables/global>\n"
        f"  profile rl {exe} flags=(unconfined) {{\n"
        "    userns,\n"
        "  }\n"
        "  END\n"
        "  sudo apparmor_parser -r /etc/apparmor.d/rl\n"
        "or turn the restriction off for everyone:\n"
        "  sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0\n"
        "  echo kernel.apparmor_restrict_unprivileged_userns=0 | "
        "sudo tee /etc/sysctl.d/60-rl-userns.conf"
    )
