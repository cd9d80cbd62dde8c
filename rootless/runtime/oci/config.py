"""Reading a bundle's config.json and checking it before anything exists.

Every problem is an OciConfigError whose message starts with the field, in the spec's own
spelling (`process.args`, `linux.namespaces[2].path`), so the user knows what to fix. Unknown
properties are ignored, as the spec requires (config.md, "Extensibility"); values rl-oci
cannot honour for an unprivileged user are refused here rather than silently dropped.
"""

from __future__ import annotations

import os

import rootless.jsonc as json
from rootless.errors import RlError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class OciConfigError(RlError):
    """config.json is malformed or asks for what rl-oci cannot do (runc's exit status 1)."""

    exit_code = 1


NAMESPACES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable",
                "runbindable")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
              "poststop")
# getrlimit(2) resources, by the names config.json uses.
RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE",
           "RLIMIT_RSS", "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS",
           "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE",
           "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
CAP_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")


def load(bundle: str) -> dict[str, Any]:
    """config.json of `bundle`, checked; OciConfigError naming the field otherwise."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise OciConfigError(f"{path}: no such file (the bundle must hold config.json)") from None
    except OSError as exc:
        raise OciConfigError(f"{path}: {exc.strerror}") from None
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise OciConfigError(f"config.json: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise OciConfigError("config.json: expected a JSON object")
    check(config)
    return config


def _fail(field: str, problem: str) -> OciConfigError:
    return OciConfigError(f"config.json: {field}: {problem}")


def _obj(parent: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(field, "expected an object")
    return value


def _list(parent: dict[str, Any], key: str, field: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(field, "expected a list")
    return value


def _str(value: Any, field: str, *, absolute: bool = False, required: bool = False) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str):
        raise _fail(field, "expected a string")
    if absolute and not value.startswith("/"):
        raise _fail(field, f"{value!r} is not an absolute path")


def _int(value: Any, field: str, lo: int | None = None, hi: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "expected an integer")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(field, f"{value} is out of range")


def _bool(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise _fail(field, "expected true or false")


def _strings(values: list[Any], field: str) -> None:
    for i, item in enumerate(values):
        if not isinstance(item, str):
            raise _fail(f"{field}[{i}]", "expected a string")


def check(config: dict[str, Any]) -> None:
    version = config.get("ociVersion")
    if not isinstance(version, str) or not version:
        raise _fail("ociVersion", "missing (the runtime-spec version the config follows)")
    if version.split(".")[0] != "1":
        raise _fail("ociVersion", f"{version!r} is not supported (rl-oci implements the "
                                  "runtime-spec 1.x)")
    root = _obj(config, "root", "root")
    _str(root.get("path"), "root.path", required=True)
    _bool(root.get("readonly"), "root.readonly")
    _str(config.get("hostname"), "hostname")
    _str(config.get("domainname"), "domainname")
    annotations = _obj(config, "annotations", "annotations")
    for key, value in annotations.items():
        _str(value, f"annotations[{key!r}]")
    if config.get("process") is not None:
        check_process(_obj(config, "process", "process"), "process")
    for i, mount in enumerate(_list(config, "mounts", "mounts")):
        field = f"mounts[{i}]"
        if not isinstance(mount, dict):
            raise _fail(field, "expected an object")
        _str(mount.get("destination"), f"{field}.destination", absolute=True, required=True)
        _str(mount.get("source"), f"{field}.source")
        _str(mount.get("type"), f"{field}.type")
        _strings(_list(mount, "options", f"{field}.options"), f"{field}.options")
        if mount.get("uidMappings") or mount.get("gidMappings"):
            raise _fail(f"{field}.uidMappings", "id-mapped mounts are not supported by rl-oci")
    hooks = _obj(config, "hooks", "hooks")
    for kind in HOOK_KINDS:
        for i, hook in enumerate(_list(hooks, kind, f"hooks.{kind}")):
            field = f"hooks.{kind}[{i}]"
            if not isinstance(hook, dict):
                raise _fail(field, "expected an object")
            _str(hook.get("path"), f"{field}.path", absolute=True, required=True)
            _strings(_list(hook, "args", f"{field}.args"), f"{field}.args")
            _strings(_list(hook, "env", f"{field}.env"), f"{field}.env")
            _int(hook.get("timeout"), f"{field}.timeout", 1)
    check_linux(_obj(config, "linux", "linux"))


def check_process(process: dict[str, Any], field: str) -> None:
    """`process` of config.json, or of `exec --process FILE` (field names the source)."""
    args = process.get("args")
    if not isinstance(args, list) or not args:
        raise _fail(f"{field}.args", "must be a non-empty list of strings")
    _strings(args, f"{field}.args")
    env = _list(process, "env", f"{field}.env")
    _strings(env, f"{field}.env")
    _str(process.get("cwd"), f"{field}.cwd", absolute=True)
    _bool(process.get("terminal"), f"{field}.terminal")
    _bool(process.get("noNewPrivileges"), f"{field}.noNewPrivileges")
    size = _obj(process, "consoleSize", f"{field}.consoleSize")
    _int(size.get("height"), f"{field}.consoleSize.height", 0, 65535)
    _int(size.get("width"), f"{field}.consoleSize.width", 0, 65535)
    user = _obj(process, "user", f"{field}.user")
    _int(user.get("uid"), f"{field}.user.uid", 0, 2**32 - 2)
    _int(user.get("gid"), f"{field}.user.gid", 0, 2**32 - 2)
    _int(user.get("umask"), f"{field}.user.umask", 0, 0o777)
    for i, gid in enumerate(_list(user, "additionalGids", f"{field}.user.additionalGids")):
        _int(gid, f"{field}.user.additionalGids[{i}]", 0, 2**32 - 2)
    _int(process.get("oomScoreAdj"), f"{field}.oomScoreAdj", -1000, 1000)
    caps = _obj(process, "capabilities", f"{field}.capabilities")
    from rootless.security.caps import CAP_NAMES

    for kind in CAP_SETS:
        names = _list(caps, kind, f"{field}.capabilities.{kind}")
        _strings(names, f"{field}.capabilities.{kind}")
        for name in names:
            if not name.startswith("CAP_") or name[4:] not in CAP_NAMES:
                # runtime-spec: a value that cannot be mapped to the kernel MUST be an error.
                raise _fail(f"{field}.capabilities.{kind}", f"unknown capability {name!r}")
    seen = set()
    for i, limit in enumerate(_list(process, "rlimits", f"{field}.rlimits")):
        where = f"{field}.rlimits[{i}]"
        if not isinstance(limit, dict):
            raise _fail(where, "expected an object")
        kind = limit.get("type")
        if kind not in RLIMITS:
            raise _fail(f"{where}.type", f"unknown resource {kind!r} (see getrlimit(2))")
        if kind in seen:
            raise _fail(f"{where}.type", f"{kind} is given twice")
        seen.add(kind)
        _int(limit.get("soft"), f"{where}.soft", 0, 2**64 - 1)
        _int(limit.get("hard"), f"{where}.hard", 0, 2**64 - 1)
        if int(limit.get("soft") or 0) > int(limit.get("hard") or 0):
            raise _fail(where, "soft is above hard")
    if process.get("apparmorProfile"):
        raise _fail(f"{field}.apparmorProfile",
                    "AppArmor profiles cannot be applied: rl-oci has no LSM support")
    if process.get("selinuxLabel"):
        raise _fail(f"{field}.selinuxLabel",
                    "SELinux labels cannot be applied: rl-oci has no LSM support")


def check_linux(linux: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(_list(linux, "namespaces", "linux.namespaces")):
        field = f"linux.namespaces[{i}]"
        if not isinstance(ns, dict):
            raise _fail(field, "expected an object")
        kind = ns.get("type")
        if kind not in NAMESPACES:
            raise _fail(f"{field}.type", f"unknown namespace type {kind!r}")
        if kind in seen:
            raise _fail(f"{field}.type", f"the {kind} namespace is listed twice")
        seen.add(kind)
        _str(ns.get("path"), f"{field}.path", absolute=True)
    for key in ("uidMappings", "gidMappings"):
        for i, m in enumerate(_list(linux, key, f"linux.{key}")):
            field = f"linux.{key}[{i}]"
            if not isinstance(m, dict):
                raise _fail(field, "expected an object")
            for part in ("containerID", "hostID", "size"):
                if m.get(part) is None:
                    raise _fail(f"{field}.{part}", "missing")
                _int(m.get(part), f"{field}.{part}", 1 if part == "size" else 0, 2**32 - 1)
    for i, dev in enumerate(_list(linux, "devices", "linux.devices")):
        field = f"linux.devices[{i}]"
        if not isinstance(dev, dict):
            raise _fail(field, "expected an object")
        _str(dev.get("path"), f"{field}.path", absolute=True, required=True)
        if dev.get("type") not in ("c", "b", "u", "p"):
            raise _fail(f"{field}.type", f"{dev.get('type')!r}: expected c, b, u or p")
        for part in ("major", "minor"):
            if dev["type"] != "p" and dev.get(part) is None:
                raise _fail(f"{field}.{part}", "missing")
            _int(dev.get(part), f"{field}.{part}", 0)
        _int(dev.get("fileMode"), f"{field}.fileMode", 0, 0o7777)
        _int(dev.get("uid"), f"{field}.uid", 0)
        _int(dev.get("gid"), f"{field}.gid", 0)
    _str(linux.get("cgroupsPath"), "linux.cgroupsPath")
    _obj(linux, "resources", "linux.resources")
    propagation = linux.get("rootfsPropagation")
    if propagation not in (None, "", *PROPAGATIONS):
        raise _fail("linux.rootfsPropagation", f"{propagation!r}: expected one of "
                                               + ", ".join(PROPAGATIONS))
    for key in ("maskedPaths", "readonlyPaths"):
        paths = _list(linux, key, f"linux.{key}")
        _strings(paths, f"linux.{key}")
        for i, path in enumerate(paths):
            _str(path, f"linux.{key}[{i}]", absolute=True)
    for key, value in _obj(linux, "sysctl", "linux.sysctl").items():
        _str(value, f"linux.sysctl[{key!r}]")
        if "/" in key or ".." in key.split("."):
            raise _fail(f"linux.sysctl[{key!r}]", "not a sysctl name")
    seccomp = _obj(linux, "seccomp", "linux.seccomp")
    if seccomp:
        _str(seccomp.get("defaultAction"), "linux.seccomp.defaultAction", required=True)
        if seccomp.get("listenerPath"):
            raise _fail("linux.seccomp.listenerPath", "seccomp notification is not supported")
    if linux.get("intelRdt"):
        raise _fail("linux.intelRdt", "Intel RDT needs root (resctrl): not supported rootless")
    personality = _obj(linux, "personality", "linux.personality")
    if personality.get("domain") not in (None, "LINUX", "LINUX32"):
        raise _fail("linux.personality.domain", f"{personality.get('domain')!r}: expected "
                                                "LINUX or LINUX32")
