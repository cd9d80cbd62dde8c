"""From parsed `rl run` flags (and config/profile values) to a validated RunSpec.

Validation happens here, before any namespace or file exists: a bad value is a UsageError
(exit 125) naming the flag.
"""

from __future__ import annotations

import os

from rootless.errors import UsageError, describe_oserror
from rootless.runopts import ParsedRun, check_log_level
from rootless.spec import RunSpec, Volume

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Keys of the merged settings dict that RunSpec takes as they are.
_DIRECT = (
    "entrypoint", "workdir", "user", "hostname", "name", "read_only", "read_only_tmpfs",
    "interactive", "tty", "init", "timeout", "detach", "remove", "stop_signal", "stop_timeout",
    "userns", "uidmaps", "gidmaps", "network", "publish", "publish_all", "dns", "dns_search",
    "dns_options", "add_hosts", "no_hosts", "cgroups", "cgroup_conf", "cap_add", "cap_drop",
    "privileged", "security_opts", "secrets", "preserve_fds", "pull", "platform", "tls_verify",
    "cidfile", "restart", "log_opts", "log_level", "quiet",
)


def build_run_spec(parsed: ParsedRun, settings: dict[str, Any] | None = None,
                   environ: dict[str, str] | None = None) -> RunSpec:
    """`settings` holds values from config.toml and profiles (already merged, lowest first);
    flags given on the command line win over them."""
    environ = dict(os.environ) if environ is None else environ
    merged: dict[str, Any] = dict(settings or {})
    for key, value in parsed.flags.items():
        # Lists given on the command line add to those of config.toml and profiles (as
        # podman's --env adds to containers.conf's env, as in rootless.config.layers).
        inherited = merged.get(key)
        merged[key] = inherited + value if isinstance(value, list) and isinstance(inherited, list) else value
    fields: dict[str, Any] = {k: merged[k] for k in _DIRECT if k in merged}

    if merged.get("rootfs"):
        if not parsed.target:
            raise UsageError("--rootfs needs a directory", hint="rl run --rootfs DIR [COMMAND...]")
        fields["rootfs"] = parsed.target
    else:
        fields["image"] = parsed.target or merged.get("image")
        if not fields["image"]:
            raise UsageError("rl run requires at least 1 arg(s), only received 0",
                             hint="rl run [OPTIONS] IMAGE [COMMAND [ARG...]]")
    fields["command"] = list(parsed.command) or list(merged.get("command") or [])
    fields["env"] = parse_env(merged.get("env_files", []), merged.get("env", []), environ)
    fields["volumes"] = [parse_volume(v) for v in merged.get("volumes", [])] + [
        parse_tmpfs(t) for t in merged.get("tmpfs", [])]
    fields["labels"] = dict(_split_kv(lbl, "--label") for lbl in merged.get("labels", []))
    if "timeout" in fields and fields["timeout"] is not None and fields["timeout"] < 0:
        raise UsageError("--timeout must be 0 or more seconds")
    if fields.get("pull", "missing") not in ("missing", "always", "never", "newer"):
        raise UsageError(f"invalid --pull policy {fields['pull']!r}: use missing, always, never or newer")
    if fields.get("cgroups", "enabled") not in ("enabled", "best-effort", "disabled", "no-conmon", "split"):
        raise UsageError(f"invalid --cgroups mode {fields['cgroups']!r}: use enabled, best-effort or disabled")
    check_log_level(fields.get("log_level", "warning"))
    if fields.get("name") is not None:
        check_name(fields["name"])
    if fields.get("stop_signal") is not None:
        check_stop_signal(fields["stop_signal"])
    if fields.get("user") is not None:
        check_user_ids(fields["user"])
    for server in fields.get("dns", []):
        if not is_ip_address(server):
            raise UsageError(f'invalid --dns "{server}": not an IP address')
    for entry in fields.get("add_hosts", []):
        check_add_host(entry)
    from rootless.limits import parse_limits

    fields["limits"] = parse_limits(merged)
    spec = RunSpec(**fields)
    if spec.log_opts or (spec.restart or "no") != "no":
        # --log-opt and --restart are refused before anything exists, in the foreground too.
        from rootless.runtime.detach import check_lifecycle_options

        check_lifecycle_options(spec)
    return spec


# A name becomes a file name in rl's state (names/NAME, locks/name-NAME), and Linux file
# systems allow 255 bytes in one (NAME_MAX); the rest is room for the affixes rl's state puts
# around it. podman has no limit of its own: its names live in a database.
MAX_NAME_LENGTH = 200


def check_name(name: str) -> None:
    import re

    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", name):
        raise UsageError(f"invalid container name {name!r}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"invalid --name: {len(name)} characters, at most {MAX_NAME_LENGTH} are allowed")


def check_stop_signal(text: str) -> None:
    """What `rl stop` sends first: a signal name (TERM, SIGTERM, sigterm, RTMIN+N) or number;
    podman refuses anything else at create time ("invalid signal", "valid signals are 1
    through 64")."""
    from rootless.runtime.proc import parse_signal

    try:
        parse_signal(text)
    except ValueError:
        number = text.removeprefix("-")
        why = "valid signals are 1 through 64" if number.isdigit() else "not a signal name"
        raise UsageError(f'invalid --stop-signal "{text}": {why}') from None


# podman's range for --user ids (its message, too): the kernel's uid_t is 32 bits, and ids
# above 2^31-1 are refused by much of user space as negative numbers.
MAX_ID = 2**31 - 1


def check_user_ids(text: str) -> None:
    """Numeric parts of USER[:GROUP] must be valid ids; names are resolved in the container."""
    for part in text.split(":", 1):
        number = part.removeprefix("-")
        if number.isdigit() and (part.startswith("-") or int(number) > MAX_ID):
            raise UsageError(f'invalid --user "{text}": uids and gids must be in range 0-{MAX_ID}')


def is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address as podman reads one (Go's net.ParseIP): no zone (%eth0)."""
    import ipaddress

    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_add_host(entry: str) -> None:
    """NAME:IP; the IP may be IPv6 and hold colons itself."""
    name, sep, address = entry.partition(":")
    if not name or not sep:
        raise UsageError(f'invalid --add-host "{entry}": expected NAME:IP')
    if not is_ip_address(address):
        raise UsageError(f'invalid --add-host "{entry}": "{address}" is not an IP address')


def _split_kv(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise UsageError(f"invalid {flag} {text!r}: expected KEY=VALUE")
    return key, value


def parse_env(env_files: list[str], env: list[str], environ: dict[str, str]) -> list[tuple[str, str]]:
    """--env-file lines first, then -e, as podman. `NAME` alone copies the host's value (and is
    dropped when the host has none); `NAME=` sets it empty."""
    out: list[tuple[str, str]] = []
    for path in env_files:
        for number, raw in enumerate(env_file_lines(path), 1):
            raw = raw.lstrip(b" \t")
            if not raw.strip() or raw.startswith(b"#"):
                continue  # comments are skipped unread: only entries must be UTF-8
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UsageError(
                    f"--env-file {path}, line {number}: not UTF-8 text "
                    f"(byte {raw[exc.start]:#04x} at column {exc.start + 1})",
                    hint="environment files are read as UTF-8; convert it (e.g. iconv -t UTF-8)") from None
            out.extend(_one_env(line, environ, f"--env-file {path}, line {number}"))
    for item in env:
        out.extend(_one_env(item, environ, "-e"))
    return out


def env_file_lines(path: str) -> list[bytes]:
    """The file's lines as bytes: text that is not UTF-8 must become an error naming the line,
    not a traceback. As podman's line scanner, a line ends at LF and loses one CR before it;
    any other character (form feed, a lone CR) belongs to the line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(describe_oserror(f"read --env-file {path}", exc)) from None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _one_env(item: str, environ: dict[str, str], flag: str) -> list[tuple[str, str]]:
    name, sep, value = item.partition("=")
    if not name:
        raise UsageError(f"invalid {flag} value {item!r}: the name is empty")
    if "\0" in item:
        raise UsageError(f"invalid {flag} value for {name}: contains a NUL byte")
    if any(ord(c) < 0x20 or c == "\x7f" for c in name):
        # A value may span lines; a name with a newline or escape in it is a typing accident
        # that no shell or program could use.
        raise UsageError(f"invalid {flag} {item!r}: the name contains a control character")
    if sep:
        return [(name, value)]
    if name.endswith("*"):
        prefix = name[:-1]
        return [(k, v) for k, v in environ.items() if k.startswith(prefix)]
    return [(name, environ[name])] if name in environ else []


_VOLUME_OPTS = {"ro", "rw", "z", "Z", "rbind", "bind", "private", "rprivate", "shared", "rshared",
                "slave", "rslave", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "U"}


def parse_volume(text: str) -> Volume:
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 3:
        raise UsageError(f"invalid volume {text!r}: expected SRC:DST[:OPTIONS]")
    src, dst = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 and parts[2] else []
    for opt in opts:
        if opt not in _VOLUME_OPTS:
            raise UsageError(f"invalid volume option {opt!r} in {text!r}")
    if not src.startswith(("/", ".", "~")):
        raise UsageError(f"named volume {src!r} is not supported",
                         hint="give a host path (absolute or starting with ./)")
    try:
        src = os.path.abspath(os.path.expanduser(src))
    except OSError as exc:  # a relative path and a current directory that was removed
        raise UsageError(describe_oserror(f"invalid -v {text!r}: the current directory", exc)) from None
    if not os.path.exists(src):
        raise UsageError(f"invalid volume {text!r}: {src}: no such file or directory",
                         hint="create the host directory first")
    if not dst.startswith("/"):
        raise UsageError(f"invalid volume {text!r}: the container path must be absolute")
    return Volume(kind="bind", source=src, destination=os.path.normpath(dst), readonly="ro" in opts)


def parse_tmpfs(text: str) -> Volume:
    dst, _, opts = text.partition(":")
    if not dst.startswith("/"):
        raise UsageError(f"invalid --tmpfs {text!r}: the container path must be absolute")
    options = [o for o in opts.split(",") if o] if opts else []
    readonly = "ro" in options
    options = [o for o in options if o not in ("ro", "rw")]
    return Volume(kind="tmpfs", source=None, destination=os.path.normpath(dst), readonly=readonly,
                  options=",".join(options))
