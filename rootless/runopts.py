"""The flags of `rl run`: one table, one small parser, the help text built from the table.

`rl run` is parsed here rather than by typer/click because importing typer costs ~60 ms and the
start-up target for a whole container run is 60 ms. The parser follows podman's (pflag) rules:
options come before the image; the first positional is the image (or the rootfs directory with
`--rootfs`); everything after it is the command, options included. Short boolean flags combine
(`-it`), values attach (`-eA=1`, `--env=A=1`) or follow (`-e A=1`).
"""

from __future__ import annotations

from rootless.errors import UsageError

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# kind: "bool" takes no value; "str"/"int" one value (last wins); "list" appends.
# (names, dest, kind, metavar, help)
OPTIONS: list[tuple[tuple[str, ...], str, str, str, str]] = [
    # what to run
    (("--rootfs",), "rootfs", "bool", "", "the first argument is a directory to run, not an image"),
    (("--entrypoint",), "entrypoint", "str", "CMD", "override the image's ENTRYPOINT (\"\" clears it)"),
    (("-e", "--env"), "env", "list", "NAME[=VALUE]", "set an environment variable (NAME alone copies the host's)"),
    (("--env-file",), "env_files", "list", "FILE", "read NAME=VALUE lines from a file"),
    (("-w", "--workdir"), "workdir", "str", "DIR", "working directory inside the container"),
    (("-u", "--user"), "user", "str", "USER[:GROUP]", "run as this user (name or uid, from the container's /etc/passwd)"),
    (("-h", "--hostname"), "hostname", "str", "NAME", "the container's hostname (default: its short id)"),
    (("--name",), "name", "str", "NAME", "a name for the container"),
    (("-l", "--label"), "labels", "list", "KEY=VALUE", "set a label on the container"),
    (("--profile",), "profiles", "list", "NAME", "apply a TOML profile (repeatable; later wins)"),
    # filesystem
    (("-v", "--volume"), "volumes", "list", "SRC:DST[:ro]", "bind-mount a host path"),
    (("--tmpfs",), "tmpfs", "list", "DST[:OPTS]", "mount a tmpfs"),
    (("--read-only",), "read_only", "bool", "", "mount the container's root filesystem read-only"),
    (("--read-only-tmpfs",), "read_only_tmpfs", "bool", "", "with --read-only, mount tmpfs on /tmp, /var/tmp, /run (default true)"),
    # process
    (("-i", "--interactive"), "interactive", "bool", "", "keep stdin open"),
    (("-t", "--tty"), "tty", "bool", "", "allocate a pseudo-terminal"),
    (("--init",), "init", "bool", "", "run a minimal init as PID 1 that forwards signals and reaps"),
    (("--timeout",), "timeout", "int", "SECONDS", "kill the container after this many seconds (exit 255)"),
    (("-d", "--detach"), "detach", "bool", "", "run in the background and print the container id"),
    (("--rm",), "remove", "bool", "", "remove the container when it exits"),
    (("--stop-signal",), "stop_signal", "str", "SIGNAL", "signal that stops the container"),
    (("--stop-timeout",), "stop_timeout", "int", "SECONDS", "seconds to wait before killing on stop"),
    (("--preserve-fds",), "preserve_fds", "int", "N", "pass N more file descriptors (3..3+N-1)"),
    # ids
    (("--userns",), "userns", "str", "MODE", "user namespace mode: \"\" (default) or keep-id"),
    (("--uidmap",), "uidmaps", "list", "CONTAINER:HOST:SIZE", "map container uids (host side relative to your ranges)"),
    (("--gidmap",), "gidmaps", "list", "CONTAINER:HOST:SIZE", "map container gids"),
    # network
    (("--network", "--net"), "network", "str", "MODE", "none, host, pasta[:OPTS], slirp4netns[:OPTS] or a network name"),
    (("-p", "--publish"), "publish", "list", "[IP:][HOSTPORT:]PORT[/PROTO]", "publish a container port"),
    (("-P", "--publish-all"), "publish_all", "bool", "", "publish every EXPOSEd port to a random host port"),
    (("--dns",), "dns", "list", "IP", "DNS server for /etc/resolv.conf"),
    (("--dns-search",), "dns_search", "list", "DOMAIN", "DNS search domain"),
    (("--dns-option",), "dns_options", "list", "OPT", "DNS resolver option"),
    (("--add-host",), "add_hosts", "list", "NAME:IP", "add a line to /etc/hosts"),
    (("--no-hosts",), "no_hosts", "bool", "", "do not write /etc/hosts"),
    # limits
    (("-m", "--memory"), "memory", "str", "SIZE", "memory limit (e.g. 64m)"),
    (("--memory-swap",), "memory_swap", "str", "SIZE", "memory plus swap limit (-1 unlimited)"),
    (("--memory-reservation",), "memory_reservation", "str", "SIZE", "memory soft limit"),
    (("--pids-limit",), "pids_limit", "int", "N", "maximum number of processes (-1 unlimited)"),
    (("--cpus",), "cpus", "str", "N", "number of CPUs (e.g. 0.5)"),
    (("-c", "--cpu-shares"), "cpu_shares", "int", "SHARES", "CPU shares (relative weight, cgroup v1 scale)"),
    (("--cpu-weight",), "cpu_weight", "int", "WEIGHT", "cpu.weight (1-10000)"),
    (("--cpuset-cpus",), "cpuset_cpus", "str", "LIST", "CPUs allowed (e.g. 0-1)"),
    (("--cpuset-mems",), "cpuset_mems", "str", "LIST", "memory nodes allowed"),
    (("--blkio-weight",), "blkio_weight", "int", "WEIGHT", "block IO weight (10-1000)"),
    (("--io-weight",), "io_weight", "int", "WEIGHT", "io.weight (1-10000)"),
    (("--cgroup-conf",), "cgroup_conf", "list", "KEY=VALUE", "write any cgroup v2 file"),
    (("--cgroups",), "cgroups", "str", "MODE", "enabled (default), best-effort or disabled"),
    # security
    (("--cap-add",), "cap_add", "list", "CAP", "add a capability"),
    (("--cap-drop",), "cap_drop", "list", "CAP", "drop a capability (ALL drops all)"),
    (("--privileged",), "privileged", "bool", "", "all capabilities of the user namespace, no seccomp, no masks"),
    (("--security-opt",), "security_opts", "list", "OPT", "seccomp=PATH|unconfined, no-new-privileges, mask=, unmask="),
    (("--secret",), "secrets", "list", "SRC[:NAME]", "mount a secret at /run/secrets/NAME"),
    # images
    (("--pull",), "pull", "str", "POLICY", "missing (default), always, never, newer"),
    (("--platform",), "platform", "str", "OS/ARCH", "platform of the image to pull"),
    (("--tls-verify",), "tls_verify", "bool", "", "verify the registry's certificate (default true)"),
    (("-q", "--quiet"), "quiet", "bool", "", "no pull progress"),
    # lifecycle
    (("--cidfile",), "cidfile", "str", "FILE", "write the container id to this file"),
    (("--restart",), "restart", "str", "POLICY", "no or on-failure[:N] (detached containers)"),
    (("--log-opt",), "log_opts", "list", "OPT", "max-size=SIZE for the container's log"),
    (("--log-level",), "log_level", "str", "LEVEL", "debug, info, warning (default) or error"),
    (("--help",), "help", "bool", "", "show this message and exit"),
]

# The values of --log-level (rl run's and rl's own).
LOG_LEVELS = ("debug", "info", "warning", "warn", "error")


def check_log_level(level: str) -> None:
    if level not in LOG_LEVELS:
        raise UsageError(f'invalid --log-level "{level}": choose from {", ".join(LOG_LEVELS)}')


_BY_NAME: dict[str, tuple[str, str]] = {}
for _names, _dest, _kind, _meta, _help in OPTIONS:
    for _n in _names:
        _BY_NAME[_n] = (_dest, _kind)

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class ParsedRun:
    """The flags given on the command line (only those given) and the positionals."""

    __slots__ = ("flags", "target", "command")

    def __init__(self, flags: dict[str, Any], target: str | None, command: list[str]) -> None:
        self.flags = flags
        self.target = target
        self.command = command


def parse_run_args(argv: list[str]) -> ParsedRun:
    """Parse `rl run` arguments (without the leading 'run')."""
    flags: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, attached = arg.partition("=")
            if name not in _BY_NAME:
                raise UsageError(f"unknown flag: {name}", hint="see 'rl run --help'")
            dest, kind = _BY_NAME[name]
            if kind == "bool":
                if eq:
                    flags[dest] = _parse_bool(name, attached)
                else:
                    flags[dest] = True
                i += 1
                continue
            if eq:
                value = attached
                i += 1
            else:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[i + 1]
                i += 2
            _store(flags, name, dest, kind, value)
            continue
        # short flags: -it, -eA=1, -e A=1, -p8080:80
        j = 1
        while j < len(arg):
            name = "-" + arg[j]
            if name not in _BY_NAME:
                raise UsageError(f"unknown shorthand flag: {arg[j]!r} in {arg}", hint="see 'rl run --help'")
            dest, kind = _BY_NAME[name]
            if kind == "bool":
                flags[dest] = True
                j += 1
                continue
            rest = arg[j + 1:]
            if rest:
                value = rest[1:] if rest.startswith("=") else rest
                i += 1
            else:
                if i + 1 >= len(argv):
                    raise UsageError(f"flag needs an argument: {name!r} in {arg}")
                value = argv[i + 1]
                i += 2
            _store(flags, name, dest, kind, value)
            break
        else:
            i += 1
    target = argv[i] if i < len(argv) else None
    command = argv[i + 1:] if i < len(argv) else []
    return ParsedRun(flags, target, command)


def _parse_bool(name: str, value: str) -> bool:
    low = value.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise UsageError(f'invalid argument "{value}" for "{name}" flag: expected true or false')


def _store(flags: dict[str, Any], name: str, dest: str, kind: str, value: str) -> None:
    if kind == "list":
        flags.setdefault(dest, []).append(value)
    elif kind == "int":
        try:
            flags[dest] = int(value)
        except ValueError:
            raise UsageError(f'invalid argument "{value}" for "{name}" flag: not an integer') from None
    else:
        flags[dest] = value


def run_help() -> str:
    """The text of `rl run --help`, made from OPTIONS so it cannot drift from the parser."""
    lines = [
        "Usage: rl run [OPTIONS] IMAGE [COMMAND [ARG...]]",
        "       rl run [OPTIONS] --rootfs DIR [COMMAND [ARG...]]",
        "",
        "  Run a command in a new rootless container.",
        "",
        "Examples:",
        "  rl run alpine sh",
        "  rl run --rm -it -v $PWD:/src -w /src python:3.12 pytest",
        "  rl run --rm --network none --rootfs ./busybox-rootfs echo hi",
        "",
        "Options:",
    ]
    for names, _dest, kind, meta, text in OPTIONS:
        shown = ", ".join(names)
        if kind != "bool":
            shown += f" {meta}"
        lines.append(f"  {shown:<42} {text}")
    return "\n".join(lines) + "\n"
