"""Which keys config.toml and profiles accept, and what each value must look like.

The `rl run` keys are the `dest` names of `rootless.runopts.OPTIONS`, so a new flag is a new
profile key without touching this file; the values take the shapes the flag parser produces
(strings, ints, bools, lists of strings). Each check raises ValueError with a sentence that
the loader turns into a ConfigError naming the file, the key and the line.
"""

from __future__ import annotations

import re
from typing import Any

from rootless.runopts import OPTIONS

# Flags that make no sense as a stored default: they change how the command line itself is
# read (--rootfs turns the image argument into a directory) or what rl does (--help).
_NOT_STORABLE = {"rootfs", "help", "profiles"}

# dest -> kind ("bool", "int", "str", "list"), plus the two positionals of `rl run`.
RUN_KEYS: dict[str, str] = {dest: kind for _n, dest, kind, _m, _h in OPTIONS
                            if dest not in _NOT_STORABLE}
RUN_KEYS["image"] = "str"
RUN_KEYS["command"] = "list"

# Keys only a profile file has (not values of a run).
PROFILE_KEYS = {"extends", "description", "clear"}

# config.toml: table -> key -> kind. [run] takes RUN_KEYS.
CONFIG_TABLES: dict[str, dict[str, str]] = {
    "storage": {"path": "str"},
    "registries": {"search": "list", "insecure": "list", "mirrors": "table",
                   "credentials_file": "str"},
}

# Names people reach for that difflib would not connect to the real key.
SYNONYMS = {
    "ports": "publish", "port": "publish", "environment": "env", "mounts": "volumes",
    "mount": "volumes", "net": "network", "readonly": "read_only", "rm": "remove",
    "memory_limit": "memory", "pids": "pids_limit", "cmd": "command", "args": "command",
    "caps_drop": "cap_drop", "caps_add": "cap_add", "security_opt": "security_opts",
    "volume": "volumes", "label": "labels", "secret": "secrets", "dir": "workdir",
}

_ENUMS = {
    "pull": ("missing", "always", "never", "newer"),
    "cgroups": ("enabled", "best-effort", "disabled", "no-conmon", "split"),
    "userns": ("", "keep-id"),
    "log_level": ("debug", "info", "warning", "warn", "error"),
}
_SIZES = ("memory", "memory_reservation", "memory_swap")
_NON_NEGATIVE = ("timeout", "stop_timeout", "preserve_fds")
_VOLUME_OPTS = {"ro", "rw", "z", "Z", "rbind", "bind", "private", "rprivate", "shared",
                "rshared", "slave", "rslave", "nosuid", "suid", "nodev", "dev", "noexec",
                "exec", "U"}
_PUBLISH = re.compile(
    r"(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+|):)??"
    r"(?:(?P<host>\d*(?:-\d+)?):)?(?P<port>\d+(?:-\d+)?)(?:/(?P<proto>tcp|udp|sctp))?"
)
_CAP = re.compile(r"(?:CAP_)?[A-Z_]+|ALL", re.IGNORECASE)


def kind_name(kind: str) -> str:
    return {"bool": "true or false", "int": "a whole number", "str": "a string",
            "list": "a list of strings", "table": "a table"}[kind]


def check_type(kind: str, value: Any) -> Any:
    """The value in the parser's shape, or ValueError saying what was expected."""
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind == "str":
        if isinstance(value, str):
            return value
    elif kind == "list":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif kind == "table":
        if isinstance(value, dict):
            return value
    shown = "a table" if isinstance(value, dict) else repr(value)
    raise ValueError(f"expected {kind_name(kind)}, got {shown}")


def check_run_value(key: str, value: Any) -> Any:
    """Type and range checks for one `rl run` key; returns the value as the parser gives it."""
    kind = RUN_KEYS[key]
    if key in _SIZES + ("cpus",) and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # `memory = 67108864` and `cpus = 0.5` are natural in TOML
    value = check_type(kind, value)
    if key in _ENUMS and value not in _ENUMS[key]:
        choices = ", ".join(repr(c) for c in _ENUMS[key])
        raise ValueError(f"{value!r} is not one of {choices}")
    if key in _SIZES and not (key == "memory_swap" and value == "-1"):
        _check_size(key, value)
    elif key == "cpus":
        try:
            ok = float(value) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{value!r} is not a positive number of CPUs, e.g. \"0.5\"")
    elif key == "pids_limit" and (value == 0 or value < -1):
        raise ValueError(f"{value} is not a positive number or -1 (unlimited)")
    elif key in _NON_NEGATIVE and value < 0:
        raise ValueError(f"{value} is negative")
    elif key == "publish":
        for item in value:
            _check_publish(item)
    elif key == "volumes":
        for item in value:
            _check_volume(item)
    elif key == "tmpfs":
        for item in value:
            if not item.startswith("/"):
                raise ValueError(f"{item!r}: the container path must be absolute")
    elif key == "env":
        for item in value:
            if not item.partition("=")[0] or "\0" in item:
                raise ValueError(f"{item!r} is not NAME=VALUE (or NAME)")
    elif key in ("cap_add", "cap_drop"):
        for item in value:
            if not _CAP.fullmatch(item):
                raise ValueError(f"{item!r} is not a capability name such as NET_RAW or ALL")
    elif key == "workdir" and value and not value.startswith("/"):
        raise ValueError(f"{value!r}: the working directory must be an absolute path")
    return value


def _check_size(key: str, value: str) -> None:
    from rootless.errors import UsageError
    from rootless.limits import parse_size

    try:
        size = parse_size(value, key)
    except UsageError:
        raise ValueError(f"{value!r} is not a size such as \"512m\" or \"2g\"") from None
    if key == "memory" and size < 6 * (1 << 20):
        raise ValueError(f"{value!r} is below the 6m minimum memory limit")


def _check_publish(item: str) -> None:
    m = _PUBLISH.fullmatch(item)
    if not m:
        raise ValueError(f"{item!r} is not [IP:][HOSTPORT:]PORT[/tcp|udp]")
    for part in (m.group("host"), m.group("port")):
        for number in filter(None, (part or "").split("-")):
            if not 1 <= int(number) <= 65535:
                raise ValueError(f"{item!r}: port {number} is outside 1-65535")


def _check_volume(item: str) -> None:
    parts = item.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise ValueError(f"{item!r} is not SRC:DST[:OPTIONS]")
    if not parts[1].startswith("/"):
        raise ValueError(f"{item!r}: the container path {parts[1]!r} must be absolute")
    for opt in parts[2].split(",") if len(parts) == 3 and parts[2] else []:
        if opt not in _VOLUME_OPTS:
            raise ValueError(f"{item!r}: unknown volume option {opt!r}")


def closest(key: str, valid: list[str], cutoff: float = 0.6) -> str | None:
    """The valid key the user most likely meant, for "did you mean" hints."""
    import difflib

    norm = key.replace("-", "_").lower()
    if norm in valid:
        return norm
    if SYNONYMS.get(norm) in valid:
        return SYNONYMS[norm]
    found = difflib.get_close_matches(norm, valid, n=1, cutoff=cutoff)
    return found[0] if found else None
