"""`rl info`: what rl would use on this host, as `podman info` shows it (versions, storage,
id mappings, cgroups, network helpers, registries). Data only; `rl doctor` judges it."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from rootless import __version__
from rootless.errors import RlError, describe_oserror
from rootless.fileio import read_or_empty


def _read(path: str) -> str:
    """A host file's text, "" when it is not there (ENOENT: a minimal host without
    /etc/os-release; see fileio.MISSING); any other errno is an error naming the file."""
    try:
        return read_or_empty(path)
    except OSError as exc:
        raise RlError(describe_oserror(f"reading {path}", exc)) from None


def _os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return "unknown"


def _memory() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _count(path: Any) -> int:
    try:
        with os.scandir(path) as entries:
            return sum(1 for entry in entries if not entry.name.startswith("."))
    except FileNotFoundError:
        return 0  # ENOENT: the store has not been created yet (nothing pulled or run)
    except OSError as exc:
        raise RlError(describe_oserror(f"listing {path}", exc)) from None


def gather(env: dict[str, str] | None = None) -> dict[str, Any]:
    import idmap
    from rootless.cgroups.plan import cgroup2_mount, cgroup_dir, own_cgroup
    from rootless.config import load_config
    from rootless.doctor import Host
    from rootless.doctor.network import tool_version
    from rootless.doctor.session import mount_of

    host = Host(env)
    paths = host.paths
    mountinfo = _read("/proc/self/mountinfo")
    uid_file = host.env.get("RL_SUBUID_FILE", "/etc/subuid")
    gid_file = host.env.get("RL_SUBGID_FILE", "/etc/subgid")
    subid_error = None
    try:
        subuids = idmap.read_subids(uid_file, host.user, host.uid)
        subgids = idmap.read_subids(gid_file, host.user, host.gid)
    except idmap.IdMapError as exc:  # shown below; `rl doctor subids` says how to fix it
        subuids, subgids, subid_error = [], [], str(exc)
    helpers = idmap.find_helpers(host.env.get("PATH"))
    try:
        mapping = idmap.plan_mapping(uid=host.uid, gid=host.gid, user=host.user,
                                     subuids=subuids, subgids=subgids,
                                     helpers_available=helpers is not None)
        idmaps: dict[str, Any] = {
            "mode": mapping.mode,
            "uidmap": [r.line() for r in mapping.uid_map],
            "gidmap": [r.line() for r in mapping.gid_map],
        }
    except idmap.IdMapError as exc:
        idmaps = {"mode": "unavailable", "error": str(exc)}
    if subid_error:
        idmaps["subid_error"] = subid_error
    mount = cgroup2_mount(mountinfo)
    own = own_cgroup(_read("/proc/self/cgroup"))
    cgroups: dict[str, Any] = {"version": "none"}
    if mount and own is not None:
        hybrid = any(" - cgroup " in line for line in mountinfo.splitlines())
        directory = cgroup_dir(mount, own)
        cgroups = {"version": "hybrid" if hybrid else "v2", "mount": mount[0], "path": own,
                   "controllers": _read(f"{directory}/cgroup.controllers").split(),
                   "writable": os.access(directory, os.W_OK)}
    network = {}
    for name in ("pasta", "slirp4netns"):
        path = host.which(name)
        network[name] = {"path": path, "version": tool_version(path) if path else None}
    existing = paths.data
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    config = load_config(paths, host.env)
    return {
        "host": {
            "hostname": platform.node(), "os": _os_name(), "kernel": os.uname().release,
            "arch": platform.machine(), "cpus": os.cpu_count(), "memory": _memory(),
            "user": host.user, "uid": host.uid, "gid": host.gid,
        },
        "version": {"rl": __version__, "python": sys.version.split()[0]},
        "idmappings": idmaps,
        "uidmap_helpers": list(helpers) if helpers else None,
        "cgroups": cgroups,
        "network": network,
        "store": {
            "path": str(paths.data), "filesystem": mount_of(existing, mountinfo)[1],
            "images": _count(paths.images), "layers": _count(paths.layers),
            "containers": _count(paths.containers),
            "runtime": str(paths.runtime), "config": str(paths.config_file),
            "config_exists": config.exists,
        },
        "registries": config.as_dict()["registries"],
    }


def format_text(data: Any, indent: int = 0) -> str:
    """A YAML-like rendering (podman info's default shape) without a YAML dependency."""
    lines: list[str] = []
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, dict) and not value:
            lines.append(f"{pad}{key}: {{}}")
        elif isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(format_text(value, indent + 1).rstrip("\n"))
        elif isinstance(value, list):
            if not value:
                lines.append(f"{pad}{key}: []")
            else:
                lines.append(f"{pad}{key}:")
                lines.extend(f"{pad}- {item}" for item in value)
        else:
            shown = "null" if value is None else str(value).lower() if isinstance(value, bool) \
                else value
            lines.append(f"{pad}{key}: {shown}")
    return "\n".join(line for line in lines if line) + "\n"
