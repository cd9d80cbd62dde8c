"""Pure functions over recorded text: where the cgroup v2 hierarchy is, which cgroup a process
is in, and which files a container's limits become. No I/O here."""

from __future__ import annotations

# typing only for annotations: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

class Write:
    """One cgroup file to write: `file` = `value`, asked for by `flag` (shown as `shown`)."""

    __slots__ = ("file", "value", "flag", "shown")

    def __init__(self, file: str, value: str, flag: str, shown: str) -> None:
        self.file, self.value, self.flag, self.shown = file, value, flag, shown

    @property
    def controller(self) -> str | None:
        return controller_of(self.file)

    def describe(self) -> str:
        return f"{self.file}={self.value}"

    def label(self) -> str:
        """How the user asked for it: '--memory 64 MiB'."""
        return f"{self.flag} {self.shown}"

    def __repr__(self) -> str:
        return f"Write({self.file!r}, {self.value!r}, {self.flag!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Write) and (self.file, self.value, self.flag) == (
            other.file, other.value, other.flag)


def controller_of(file: str) -> str | None:
    """'memory.max' -> 'memory'; the core's own files (cgroup.*) need no controller."""
    prefix = file.partition(".")[0]
    return None if prefix == "cgroup" else prefix


def format_size(n: int) -> str:
    """67108864 -> '64 MiB'; sizes that are not whole units stay in bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def plan_writes(limits: Any) -> list[Write]:
    """The files to write in the container's cgroup, in order, for a `rootless.spec.Limits`
    (podman's flags in cgroup v2 terms: Documentation/admin-guide/cgroup-v2.rst)."""
    out: list[Write] = []
    if limits.cpuset_cpus is not None:
        out.append(Write("cpuset.cpus", limits.cpuset_cpus, "--cpuset-cpus", limits.cpuset_cpus))
    if limits.cpuset_mems is not None:
        out.append(Write("cpuset.mems", limits.cpuset_mems, "--cpuset-mems", limits.cpuset_mems))
    if limits.memory_reservation is not None:
        # A soft limit: memory.low protects this much from reclaim (what crun and runc write).
        out.append(Write("memory.low", str(limits.memory_reservation), "--memory-reservation",
                         format_size(limits.memory_reservation)))
    if limits.memory is not None:
        out.append(Write("memory.max", str(limits.memory), "--memory", format_size(limits.memory)))
    if limits.memory_swap is not None:
        # podman's --memory-swap counts memory plus swap; cgroup v2's memory.swap.max is swap only.
        if limits.memory_swap == -1:
            out.append(Write("memory.swap.max", "max", "--memory-swap", "-1"))
        else:
            swap = max(0, limits.memory_swap - (limits.memory or 0))
            out.append(Write("memory.swap.max", str(swap), "--memory-swap",
                             format_size(limits.memory_swap)))
    if limits.pids is not None:
        out.append(Write("pids.max", str(limits.pids), "--pids-limit", str(limits.pids)))
    if limits.cpus is not None:
        quota, _, period = limits.cpus.partition(" ")
        shown = f"{int(quota) / int(period):g}" if quota.isdigit() and period.isdigit() else quota
        out.append(Write("cpu.max", limits.cpus, "--cpus", shown))
    if limits.cpu_weight is not None:
        out.append(Write("cpu.weight", str(limits.cpu_weight), "--cpu-weight", str(limits.cpu_weight)))
    if limits.io_weight is not None:
        out.append(Write("io.weight", f"default {limits.io_weight}", "--io-weight",
                         str(limits.io_weight)))
    for file, value in (limits.extra or {}).items():
        out.append(Write(file, value, "--cgroup-conf", f"{file}={value}"))
    return out


def needed_controllers(writes: list[Write]) -> list[str]:
    seen: list[str] = []
    for w in writes:
        c = w.controller
        if c is not None and c not in seen:
            seen.append(c)
    return seen


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """The unified-hierarchy path from /proc/PID/cgroup (the '0::/path' line), or None."""
    for line in proc_self_cgroup.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            return path
    return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (proc_pid_mountinfo(5)).
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_mount(mountinfo: str) -> tuple[str, str] | None:
    """(mount point, root within the hierarchy) of the cgroup2 mount in /proc/self/mountinfo.
    Prefers /sys/fs/cgroup when there are several (the unified layout)."""
    found: list[tuple[str, str]] = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep or not right.startswith("cgroup2 "):
            continue
        fields = left.split()
        if len(fields) >= 5:
            found.append((_unescape(fields[4]), _unescape(fields[3])))
    for mount in found:
        if mount[0] == "/sys/fs/cgroup":
            return mount
    return found[0] if found else None


def cgroup_dir(mount: tuple[str, str], path: str) -> str:
    """The directory of cgroup `path` (from /proc/PID/cgroup) under a cgroup2 mount."""
    point, root = mount
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root):]
    return point.rstrip("/") + "/" + path.strip("/") if path.strip("/") else point


def parse_keyed(text: str) -> dict[str, int]:
    """'oom_kill 1\\nmax 0' (memory.events, pids.events, cpu.stat, cgroup.events) -> dict."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def stale_owner(name: str) -> int | None:
    """The launcher pid recorded in a container cgroup's name 'rl-<12 hex>-<pid>', else None."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != "rl" or len(parts[1]) != 12 or not parts[2].isdigit():
        return None
    if any(ch not in "0123456789abcdef" for ch in parts[1]):
        return None
    return int(parts[2])
