"""Masked and read-only paths: podman's defaults, `--security-opt mask=/unmask=`.

procfs and sysfs expose host-wide kernel state that no namespace covers (kernel memory,
keyrings, interrupt and timer statistics, firmware tables). Masking puts /dev/null over a file
and an empty read-only tmpfs over a directory; read-only paths are bind-remounted ro. With
those mounts on top of /proc, the kernel also refuses a fresh procfs mount elsewhere in the
container ("mount_too_revealing", fs/namespace.c), so the masks cannot be side-stepped.
"""

from __future__ import annotations

from rootless.errors import UsageError

# containers/common pkg/config default masked and read-only paths.
DEFAULT_MASKED = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/proc/interrupts", "/sys/firmware",
    "/sys/fs/selinux", "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY = (
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)


def _paths(opt: str, value: str) -> list[str]:
    out = []
    for path in value.split(":"):
        if not path:
            continue
        if not path.startswith("/") or "/../" in path + "/":
            raise UsageError(f"invalid --security-opt {opt}={value}: {path!r} is not an absolute path")
        out.append(path.rstrip("/") or "/")
    return out


def plan_masks(mask_opts: list[str], unmask_opts: list[str],
               privileged: bool) -> tuple[list[str], list[str]]:
    """(masked, read-only) container paths. --privileged starts from none, as podman does;
    mask= adds, unmask= removes (ALL: every default masked and read-only path)."""
    masked = [] if privileged else list(DEFAULT_MASKED)
    readonly = [] if privileged else list(DEFAULT_READONLY)
    for value in unmask_opts:
        if value == "ALL":
            masked, readonly = [], []
            continue
        gone = set(_paths("unmask", value))
        masked = [p for p in masked if p not in gone]
        readonly = [p for p in readonly if p not in gone]
    for value in mask_opts:
        for path in _paths("mask", value):
            if path not in masked:
                masked.append(path)
    return masked, readonly
