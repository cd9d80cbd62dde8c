"""`rl-oci features` (runtime-spec features.md) and `rl-oci spec` (a default config.json)."""

from __future__ import annotations

import json
import os

from rootless.runtime.oci.config import HOOK_KINDS, NAMESPACES
from rootless.runtime.oci.state import OciStateError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def features() -> dict[str, Any]:
    """What this runtime understands, for engines that ask before they write a config."""
    from rootless.runtime.oci.plan import MOUNT_FLAGS, PROPAGATION
    from rootless.security.caps import CAP_NAMES, read_last_cap
    from rootless.security.libseccomp import _OPS

    options = sorted({*MOUNT_FLAGS, "bind", "rbind", "tmpcopyup",
                      *PROPAGATION, *("r" + p for p in PROPAGATION)})
    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": list(HOOK_KINDS),
        "mountOptions": options,
        "linux": {
            "namespaces": list(NAMESPACES),
            "capabilities": [f"CAP_{n}" for n in CAP_NAMES[: read_last_cap() + 1]],
            "cgroup": {"v1": False, "v2": unified, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                            "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG",
                            "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": sorted(_OPS),
                "archs": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                          "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
                "knownFlags": [],
                "supportedFlags": [],
            },
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
        },
        "annotations": {
            "run.oci.rl.cgroups": "enabled | best-effort (default) | disabled: what a "
                                  "linux.resources limit that cannot be applied does",
        },
    }


def default_config() -> dict[str, Any]:
    """A rootless config.json for a rootfs/ beside it: your id as root (and your subordinate
    ids above it, when /etc/subuid has them, through the default mapping at create time), the
    host's network (as `runc spec --rootless`: a rootless container has no other without a
    user-mode network helper), a terminal running sh."""
    from rootless.runtime.mounts import DEFAULT_TMPFS_OPTS
    from rootless.security.caps import DEFAULT_CAPS
    from rootless.security.masks import DEFAULT_MASKED, DEFAULT_READONLY

    caps = [f"CAP_{c}" for c in DEFAULT_CAPS]
    return {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {kind: list(caps) for kind in ("bounding", "effective",
                                                           "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "rl-oci",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", DEFAULT_TMPFS_OPTS]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "none", "source": "/sys",
             "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
            # cgroup2 of the container's own cgroup namespace where the host is unified;
            # the host's /sys/fs/cgroup bound read-only elsewhere (rootless.runtime.oci.plan)
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user",
                                                 "cgroup")],
            "maskedPaths": list(DEFAULT_MASKED),
            "readonlyPaths": list(DEFAULT_READONLY),
        },
    }


def write_spec(bundle: str, version: str) -> None:
    """Write bundle/config.json; runc refuses to overwrite one, and so does this."""
    del version
    path = os.path.join(bundle, "config.json")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise OciStateError(f"File {path} exists. Remove it first") from None
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(default_config(), indent=2) + "\n")
