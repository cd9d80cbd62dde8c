"""Parsing resource-limit flags (podman's units) into cgroup v2 values. No I/O."""

from __future__ import annotations

from rootless.errors import UsageError
from rootless.spec import Limits

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int, flag: str) -> int:
    """'64m' -> 67108864. Units b, k, m, g, t (1024-based, as podman); 'kb'/'mb' accepted."""
    if isinstance(text, int):
        return text
    raw = text.strip().lower()
    if raw.endswith("ib"):
        raw = raw[:-2]
    elif raw.endswith("b") and len(raw) > 1 and raw[-2] in "kmgt":
        raw = raw[:-1]
    num = raw.rstrip("bkmgt")
    unit = raw[len(num):]
    try:
        value = float(num)
    except ValueError:
        raise UsageError(f"invalid size {text!r} for {flag}: expected a number with an optional unit (b, k, m, g)") from None
    # float() also takes 'nan', 'inf' and '1e3'; a size is plain digits with an optional point.
    if unit not in _UNITS or value < 0 or not num.replace(".", "", 1).isdigit():
        raise UsageError(f"invalid size {text!r} for {flag}: expected a number with an optional unit (b, k, m, g)")
    return int(value * _UNITS[unit])


def _int(settings: dict[str, Any], key: str, flag: str) -> int:
    value = settings[key]
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"invalid {flag} {value!r}: expected a whole number") from None


def parse_limits(settings: dict[str, Any]) -> Limits | None:
    """Build Limits from the merged settings; None when no limit was asked for."""
    out: dict[str, Any] = {}
    if settings.get("memory") not in (None, ""):
        mem = parse_size(settings["memory"], "--memory")
        if mem < 6 * (1 << 20):
            raise UsageError("minimum memory limit allowed is 6MB")
        out["memory"] = mem
    if settings.get("memory_swap") not in (None, ""):
        swap = settings["memory_swap"]
        out["memory_swap"] = -1 if str(swap) == "-1" else parse_size(swap, "--memory-swap")
        if out["memory_swap"] != -1 and "memory" in out and out["memory_swap"] < out["memory"]:
            raise UsageError("--memory-swap must be larger than or equal to --memory")
        if "memory" not in out:
            raise UsageError("--memory-swap needs --memory")
    if settings.get("memory_reservation") not in (None, ""):
        out["memory_reservation"] = parse_size(settings["memory_reservation"], "--memory-reservation")
        if "memory" in out and out["memory_reservation"] > out["memory"]:
            raise UsageError("--memory-reservation must be smaller than or equal to --memory")
    if settings.get("pids_limit") is not None:
        pids = _int(settings, "pids_limit", "--pids-limit")
        if pids == 0 or pids < -1:
            raise UsageError(f"invalid --pids-limit {pids}: use a positive number or -1 for unlimited")
        out["pids"] = "max" if pids == -1 else pids
    if settings.get("cpus") not in (None, ""):
        try:
            cpus = float(settings["cpus"])
        except ValueError:
            raise UsageError(f"invalid --cpus {settings['cpus']!r}: expected a number such as 0.5") from None
        # cpu.max takes a quota of at least 1000 us per period (kernel/sched/core.c).
        period = 100000
        if not 0.01 <= cpus < 1e6:
            raise UsageError(f"invalid --cpus {settings['cpus']!r}: use a number of CPUs from 0.01 up, such as 0.5")
        out["cpus"] = f"{round(cpus * period)} {period}"
    if settings.get("cpu_shares") is not None:
        shares = _int(settings, "cpu_shares", "--cpu-shares")
        if not 2 <= shares <= 262144:
            raise UsageError("--cpu-shares must be between 2 and 262144")
        # The conversion crun and runc use from cgroup v1 shares to cgroup v2 weight.
        out["cpu_weight"] = 1 + ((shares - 2) * 9999) // 262142
    if settings.get("cpu_weight") is not None:
        weight = _int(settings, "cpu_weight", "--cpu-weight")
        if not 1 <= weight <= 10000:
            raise UsageError("--cpu-weight must be between 1 and 10000")
        out["cpu_weight"] = weight
    for key, flag in (("cpuset_cpus", "--cpuset-cpus"), ("cpuset_mems", "--cpuset-mems")):
        if settings.get(key) not in (None, ""):
            value = str(settings[key])
            _check_cpuset(value, flag)
            out[key] = value
    if settings.get("blkio_weight") is not None:
        w = _int(settings, "blkio_weight", "--blkio-weight")
        if not 10 <= w <= 1000:
            raise UsageError("--blkio-weight must be between 10 and 1000")
        out["io_weight"] = 1 + ((w - 10) * 9999) // 990
    if settings.get("io_weight") is not None:
        w = _int(settings, "io_weight", "--io-weight")
        if not 1 <= w <= 10000:
            raise UsageError("--io-weight must be between 1 and 10000")
        out["io_weight"] = w
    extra: dict[str, str] = {}
    for item in settings.get("cgroup_conf", []) or []:
        key, sep, value = str(item).partition("=")
        if not sep or not key or "/" in key or key.startswith("."):
            raise UsageError(f"invalid --cgroup-conf {item!r}: expected FILE=VALUE, e.g. memory.high=50m")
        extra[key] = value
    if extra:
        out["extra"] = extra
    return Limits(**out) if out else None


def _check_cpuset(value: str, flag: str) -> None:
    for part in value.split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise UsageError(f"invalid {flag} {value!r}: expected a list such as 0-2,4")
