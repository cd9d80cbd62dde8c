"""RunSpec and friends: what a container run asks for, as plain data. No I/O here.

These are hand-written slotted classes rather than dataclasses on purpose: `rl run` must start
in well under 60 ms and importing `dataclasses` (it pulls in `inspect`) costs ~8 ms on the
target machines. `Record` gives them a keyword constructor, equality and a readable repr.
"""

from __future__ import annotations

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Record:
    """A minimal dataclass replacement: fields come from `__slots__`, defaults from `_defaults`."""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}

    def __init__(self, **kwargs: Any) -> None:
        for name in self.__slots__:
            if name in kwargs:
                value = kwargs.pop(name)
            elif name in self._defaults:
                value = self._defaults[name]
                if isinstance(value, (list, dict)):
                    value = type(value)(value)
            else:
                raise TypeError(f"{type(self).__name__}: missing field {name!r}")
            object.__setattr__(self, name, value)
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown fields {sorted(kwargs)}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, Record):
                value = value.as_dict()
            elif isinstance(value, list):
                value = [v.as_dict() if isinstance(v, Record) else v for v in value]
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: v for k, v in data.items() if k in cls.__slots__})

    def replace(self, **changes: Any) -> Record:
        values = {name: getattr(self, name) for name in self.__slots__}
        values.update(changes)
        return type(self)(**values)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Volume(Record):
    """A bind mount from the host (`-v SRC:DST[:ro]`), a tmpfs (`--tmpfs DST[:opts]`) or an
    overlay of layer directories (kind "overlay", options: its mount options; rl build)."""

    __slots__ = ("kind", "source", "destination", "readonly", "options")
    _defaults = {"readonly": False, "options": ""}

    def describe(self) -> str:
        mode = "ro" if self.readonly else "rw"
        if self.kind in ("tmpfs", "overlay"):
            return f"{self.kind} on {self.destination} ({mode}{',' + self.options if self.options else ''})"
        return f"bind {self.source} on {self.destination} ({mode})"


class Limits(Record):
    """Cgroup limits, already parsed into cgroup v2 units (bytes, max/period, weights)."""

    __slots__ = (
        "memory", "memory_swap", "memory_reservation", "pids", "cpus", "cpu_weight",
        "cpuset_cpus", "cpuset_mems", "io_weight", "extra",
    )
    _defaults = {
        "memory": None, "memory_swap": None, "memory_reservation": None, "pids": None,
        "cpus": None, "cpu_weight": None, "cpuset_cpus": None, "cpuset_mems": None,
        "io_weight": None, "extra": {},
    }

    def any(self) -> bool:
        return any(getattr(self, n) not in (None, {}) for n in self.__slots__)


class RunSpec(Record):
    """Everything `rl run` was asked to do, after defaults, config, profiles and flags merged."""

    __slots__ = (
        # what to run
        "image", "rootfs", "command", "entrypoint", "env", "env_files", "workdir", "user",
        "hostname", "name", "labels",
        # filesystem
        "volumes", "read_only", "read_only_tmpfs",
        # process
        "interactive", "tty", "init", "timeout", "detach", "remove", "stop_signal", "stop_timeout",
        # ids
        "userns", "uidmaps", "gidmaps",
        # network
        "network", "publish", "publish_all", "dns", "dns_search", "dns_options", "add_hosts",
        "no_hosts",
        # limits
        "limits", "cgroups", "cgroup_conf",
        # security
        "cap_add", "cap_drop", "privileged", "security_opts", "secrets", "preserve_fds",
        # images
        "pull", "platform", "tls_verify",
        # lifecycle
        "cidfile", "restart", "log_opts",
        # diagnostics
        "log_level", "quiet",
    )
    _defaults = {
        "image": None, "rootfs": None, "command": [], "entrypoint": None, "env": [],
        "env_files": [], "workdir": None, "user": None, "hostname": None, "name": None,
        "labels": {},
        "volumes": [], "read_only": False, "read_only_tmpfs": True,
        "interactive": False, "tty": False, "init": False, "timeout": None, "detach": False,
        "remove": False, "stop_signal": None, "stop_timeout": 10,
        "userns": "", "uidmaps": [], "gidmaps": [],
        "network": None, "publish": [], "publish_all": False, "dns": [], "dns_search": [],
        "dns_options": [], "add_hosts": [], "no_hosts": False,
        "limits": None, "cgroups": "enabled", "cgroup_conf": [],
        "cap_add": [], "cap_drop": [], "privileged": False, "security_opts": [], "secrets": [],
        "preserve_fds": 0,
        "pull": "missing", "platform": None, "tls_verify": None,
        "cidfile": None, "restart": "no", "log_opts": [],
        "log_level": "warning", "quiet": False,
    }
