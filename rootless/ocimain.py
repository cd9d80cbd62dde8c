"""`rl-oci`: runc's command line over rl's launcher, for engines that drive an OCI runtime
(podman --runtime, conmon, Slurm's oci.conf, containerd's --runc-binary).

    rl-oci [--root DIR] [--log FILE] [--log-format text|json] [--systemd-cgroup]
           [--rootless true|false|auto] [--cgroup-manager cgroupfs|systemd|disabled] [--debug]
           COMMAND [OPTIONS] ID ...

Options are parsed by hand (no typer, no argparse): `rl-oci run` is measured against `runc
run` and every import counts. Flags are accepted with one or two dashes and as `--flag=value`
or `--flag value`, as runc's urfave/cli and Go's flag package do. Errors: "Error: ..." on
stderr and a line in --log (runc's JSON lines, which conmon reads), exit status 1.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = "0.1.0"
SPEC_VERSION = "1.1.0"

# name -> (kind, destination); kind: bool, str, int, list. Aliases share a destination.
GLOBAL = {
    "root": ("str", "root"), "log": ("str", "log"), "log-format": ("str", "log_format"),
    "systemd-cgroup": ("bool", "systemd_cgroup"), "rootless": ("rootless", "rootless"),
    "debug": ("bool", "debug"), "cgroup-manager": ("str", "cgroup_manager"),
    "criu": ("str", "criu"), "help": ("bool", "help"), "h": ("bool", "help"),
    "version": ("bool", "version"), "v": ("bool", "version"),
}
CREATE = {
    "bundle": ("str", "bundle"), "b": ("str", "bundle"),
    "console-socket": ("str", "console_socket"), "pid-file": ("str", "pid_file"),
    "preserve-fds": ("int", "preserve_fds"), "no-pivot": ("bool", "no_pivot"),
    "no-new-keyring": ("bool", "no_new_keyring"), "no-subreaper": ("bool", "no_subreaper"),
    "detach": ("bool", "detach"), "d": ("bool", "detach"), "keep": ("bool", "keep"),
}
COMMANDS: dict[str, dict[str, tuple[str, str]]] = {
    "create": CREATE,
    "run": CREATE,
    "start": {},
    "state": {},
    "list": {"format": ("str", "format"), "f": ("str", "format"), "quiet": ("bool", "quiet"),
             "q": ("bool", "quiet")},
    "ps": {"format": ("str", "format"), "f": ("str", "format")},
    "kill": {"all": ("bool", "all"), "a": ("bool", "all")},
    "delete": {"force": ("bool", "force"), "f": ("bool", "force")},
    "exec": {"process": ("str", "process"), "p": ("str", "process"),
             "console-socket": ("str", "console_socket"), "tty": ("bool", "tty"),
             "t": ("bool", "tty"), "detach": ("bool", "detach"), "d": ("bool", "detach"),
             "pid-file": ("str", "pid_file"), "cwd": ("str", "cwd"), "env": ("list", "env"),
             "e": ("list", "env"), "user": ("str", "user"), "u": ("str", "user"),
             "additional-gids": ("list", "additional_gids"), "g": ("list", "additional_gids"),
             "cap": ("list", "cap"), "c": ("list", "cap"),
             "no-new-privs": ("bool", "no_new_privs"), "preserve-fds": ("int", "preserve_fds"),
             "process-label": ("str", "process_label"), "apparmor": ("str", "apparmor"),
             "ignore-paused": ("bool", "ignore_paused"), "cgroup": ("str", "cgroup")},
    "features": {},
    "spec": {"bundle": ("str", "bundle"), "b": ("str", "bundle"),
             "rootless": ("bool", "rootless")},
    "version": {},
    "pause": {},
    "resume": {},
    "update": {"resources": ("str", "resources"), "r": ("str", "resources"),
               "memory": ("str", "memory"), "memory-swap": ("str", "memory_swap"),
               "memory-reservation": ("str", "memory_reservation"),
               "kernel-memory": ("str", "kernel_memory"),
               "kernel-memory-tcp": ("str", "kernel_memory_tcp"),
               "pids-limit": ("int", "pids_limit"), "cpu-quota": ("int", "cpu_quota"),
               "cpu-period": ("int", "cpu_period"), "cpu-shares": ("int", "cpu_shares"),
               "cpuset-cpus": ("str", "cpuset_cpus"), "cpuset-mems": ("str", "cpuset_mems"),
               "blkio-weight": ("int", "blkio_weight"),
               "cpu-rt-period": ("int", "cpu_rt_period"),
               "cpu-rt-runtime": ("int", "cpu_rt_runtime")},
}
USAGE = """usage: rl-oci [global options] COMMAND [options] ID
commands: create run start state list ps kill delete exec features spec version pause resume
          update
global options: --root DIR --log FILE --log-format text|json --systemd-cgroup --rootless VALUE
                --cgroup-manager cgroupfs|systemd|disabled --debug --version
"""


class Usage(Exception):
    """A bad command line: runc's exit status 1 as for every other error."""


class Options:
    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        return None


def parse(args: list[str], table: dict[str, tuple[str, str]]) -> tuple[dict[str, Any], list[str]]:
    """Flags until the first argument that is not one (urfave/cli's rule): (values, rest)."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return values, args[i + 1:]
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if name not in table:
            raise Usage(f"flag provided but not defined: -{name}")
        kind, dest = table[name]
        if kind == "bool":
            values[dest] = value.lower() not in ("false", "0") if eq else True
        elif kind == "rootless":
            # runc's --rootless takes true|false|auto; alone it means true.
            if not eq and i + 1 < len(args) and args[i + 1] in ("true", "false", "auto"):
                i += 1
                value = args[i]
            values[dest] = value or "true"
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    raise Usage(f"flag needs an argument: -{name}")
                value = args[i]
            if kind == "int":
                try:
                    parsed: Any = int(value)
                except ValueError:
                    raise Usage(f"invalid value {value!r} for flag -{name}: expected a number") from None
            else:
                parsed = value
            if kind == "list":
                values.setdefault(dest, []).append(parsed)
            else:
                values[dest] = parsed
        i += 1
    return values, args[i:]


class Logger:
    """--log FILE in --log-format: runc's logrus lines. json: {"level", "msg", "time"} (what
    conmon and podman read an error from); text: time="..." level=... msg="...". Without
    --log, messages go to stderr only."""

    def __init__(self, path: str | None, fmt: str | None) -> None:
        self.path = path
        self.fmt = fmt or "text"

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        import json
        import time

        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.fmt == "json":
            line = json.dumps({"level": level, "msg": msg, "time": stamp})
        else:
            line = f"time={json.dumps(stamp)} level={level} msg={json.dumps(msg)}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except OSError as exc:
            # The log is a copy of what stderr says: say there why it has no copy.
            sys.stderr.write(f"rl-oci: cannot write --log {self.path}: {exc.strerror}\n")

    def warn(self, text: str) -> None:
        level, _, msg = text.partition(": ")
        if level not in ("warning", "debug"):
            level, msg = "warning", text
        self.write(level, msg)
        if not self.path or level != "debug":
            sys.stderr.write(f"rl-oci: {text}\n")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        from rootless.main import exit_now

        exit_now(run_command_line(sys.argv[1:]))
    return run_command_line(argv)


def run_command_line(argv: list[str]) -> int:
    logger = Logger(None, None)
    try:
        values, rest = parse(argv, GLOBAL)
        g = Options(values)
        logger = Logger(g.log, g.log_format)
        if g.log_format not in (None, "text", "json"):
            raise Usage(f"invalid --log-format {g.log_format!r}: expected text or json")
        if g.version:
            return version()
        if g.help or not rest:
            sys.stdout.write(USAGE)
            return 0 if g.help else 1
        command, args = rest[0], rest[1:]
        if command not in COMMANDS:
            raise Usage(f"unknown command {command!r}")
        values, positional = parse(args, COMMANDS[command])
        opts = Options(values)
        if g.debug:
            opts.debug = True
        opts.cgroup_manager = "disabled" if g.cgroup_manager == "disabled" else g.cgroup_manager
        from rootless.runtime.oci.state import default_root

        root = os.path.abspath(g.root) if g.root else default_root()
        return dispatch(command, opts, positional, root, logger)
    except Usage as exc:
        return report(logger, str(exc), g_debug=False)
    except KeyboardInterrupt:
        return report(logger, "interrupted", g_debug=False)
    except Exception as exc:  # noqa: BLE001 - the one place errors are printed
        from rootless.errors import RlError

        debug = "--debug" in argv
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, RlError):
            text = exc.message + (f" ({exc.hint})" if exc.hint else "")
            return report(logger, text, debug)
        return report(logger, f"{type(exc).__name__}: {exc}", debug)


def report(logger: Logger, text: str, g_debug: bool) -> int:
    sys.stderr.write(f"Error: {text}\n")
    logger.write("error", text)
    return 1


def need_id(command: str, positional: list[str]) -> str:
    if not positional:
        raise Usage(f'"{command}" requires a container id')
    return positional[0]


def dispatch(command: str, opts: Any, positional: list[str], root: str, logger: Logger) -> int:
    if command == "version":
        return version()
    if command == "features":
        from rootless.runtime.oci.features import features
        from rootless.runtime.oci.state import dump

        sys.stdout.write(dump(features()) + "\n")
        return 0
    if command == "spec":
        from rootless.runtime.oci.features import write_spec

        write_spec(opts.bundle or ".", VERSION)
        return 0
    if command == "list":
        return list_containers(root, opts)
    cid = need_id(command, positional)
    if command in ("create", "run"):
        from rootless.runtime.oci import lifecycle

        # create is run --detach without the start; run waits for the container unless -d.
        opts.start = command == "run"
        if command == "create":
            opts.detach = True
        return lifecycle.create(root, cid, opts, logger.warn)
    from rootless.runtime.oci import lifecycle
    from rootless.runtime.oci.state import Record, act_as_owner, dump

    act_as_owner(Record(root, cid))
    if command == "start":
        lifecycle.start(root, cid, logger.warn)
    elif command == "state":
        sys.stdout.write(dump(Record(root, cid).load().oci_state()) + "\n")
    elif command == "kill":
        from rootless.runtime.proc import parse_signal

        text = positional[1] if len(positional) > 1 else "SIGTERM"
        try:
            sig = parse_signal(text)
        except ValueError:
            raise Usage(f"invalid signal {text!r}") from None
        lifecycle.kill(root, cid, sig, bool(opts.all))
    elif command == "delete":
        lifecycle.delete(root, cid, bool(opts.force), logger.warn)
    elif command in ("pause", "resume"):
        lifecycle.pause(root, cid, command == "pause")
    elif command == "ps":
        return ps(root, cid, opts, positional[1:])
    elif command == "update":
        lifecycle.update(root, cid, update_resources(opts))
    elif command == "exec":
        return lifecycle.exec_process(root, cid, exec_process_spec(root, cid, opts,
                                                                    positional[1:]), opts)
    return 0


def version() -> int:
    sys.stdout.write(f"rl-oci version {VERSION}\nspec: {SPEC_VERSION}\n")
    return 0


def list_containers(root: str, opts: Any) -> int:
    from rootless.runtime.oci.state import dump, list_records

    states = [rec.oci_state() for rec in list_records(root)]
    if opts.quiet:
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif opts.format == "json":
        sys.stdout.write(dump(states) + "\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for r in rows:
            sys.stdout.write("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
    return 0


def ps(root: str, cid: str, opts: Any, ps_args: list[str]) -> int:
    """runc's ps: the container's pids as JSON, or ps(1)'s table (default -ef) limited to
    them."""
    import json
    import subprocess

    from rootless.runtime.oci.lifecycle import container_pids
    from rootless.runtime.oci.state import Record

    rec = Record(root, cid).load()
    pids = container_pids(rec) if rec.status() != "stopped" else []
    if opts.format == "json":
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    if not out:
        return 0
    header = out[0].split()
    if "PID" not in header:
        raise Usage("ps's output has no PID column")
    column = header.index("PID")
    sys.stdout.write(out[0] + "\n")
    wanted = {str(p) for p in pids}
    for line in out[1:]:
        fields = line.split()
        if len(fields) > column and fields[column] in wanted:
            sys.stdout.write(line + "\n")
    return 0


def exec_process_spec(root: str, cid: str, opts: Any, command: list[str]) -> dict[str, Any]:
    """exec's process: --process FILE as it is, or the container's own process with exec's
    flags over it (runc's rules: args replaced, env added, cwd, user, caps added)."""
    import json

    from rootless.runtime.oci.config import OciConfigError, check_process
    from rootless.runtime.oci.state import Record

    if opts.process:
        try:
            with open(opts.process, "rb") as f:
                process = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise OciConfigError(f"--process {opts.process}: {exc}") from None
        if not isinstance(process, dict):
            raise OciConfigError(f"--process {opts.process}: expected a JSON object")
        check_process(process, "process")
        return process
    if not command:
        raise Usage("exec needs a command or --process FILE")
    base = dict(Record(root, cid).load().config().get("process") or {})
    base["args"] = command
    base["terminal"] = bool(opts.tty)
    if opts.env:
        base["env"] = list(base.get("env") or []) + list(opts.env)
    if opts.cwd:
        base["cwd"] = opts.cwd
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise Usage(f"invalid --user {opts.user!r}: expected UID[:GID]")
        base["user"] = dict(base.get("user") or {}, uid=int(uid), gid=int(gid or 0))
    if opts.additional_gids:
        user = dict(base.get("user") or {})
        user["additionalGids"] = [int(g) for item in opts.additional_gids for g in item.split(",")]
        base["user"] = user
    if opts.cap:
        caps = {k: list(v) for k, v in (base.get("capabilities") or {}).items()}
        for cap in opts.cap:
            for kind in ("bounding", "effective", "permitted", "inheritable", "ambient"):
                caps.setdefault(kind, [])
                if cap not in caps[kind]:
                    caps[kind].append(cap)
        base["capabilities"] = caps
    if opts.no_new_privs:
        base["noNewPrivileges"] = True
    check_process(base, "exec")
    return base


def update_resources(opts: Any) -> dict[str, Any]:
    """update's flags (or -r FILE, "-" for stdin) as linux.resources."""
    import json

    if opts.resources:
        try:
            raw = sys.stdin.read() if opts.resources == "-" else open(opts.resources).read()
            data = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise Usage(f"--resources {opts.resources}: {exc}") from None
        if not isinstance(data, dict):
            raise Usage(f"--resources {opts.resources}: expected a JSON object")
        return data
    from rootless.limits import parse_size

    res: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    for flag, key in (("memory", "limit"), ("memory_swap", "swap"),
                      ("memory_reservation", "reservation")):
        value = getattr(opts, flag)
        if value is not None:
            memory[key] = -1 if value == "-1" else parse_size(value, "--" + flag.replace("_", "-"))
    if memory:
        res["memory"] = memory
    if opts.pids_limit is not None:
        res["pids"] = {"limit": opts.pids_limit}
    cpu = {key: getattr(opts, flag) for flag, key in (
        ("cpu_quota", "quota"), ("cpu_period", "period"), ("cpu_shares", "shares"),
        ("cpuset_cpus", "cpus"), ("cpuset_mems", "mems")) if getattr(opts, flag) is not None}
    if cpu:
        res["cpu"] = cpu
    if opts.blkio_weight is not None:
        res["blockIO"] = {"weight": opts.blkio_weight}
    if opts.kernel_memory or opts.kernel_memory_tcp or opts.cpu_rt_period or opts.cpu_rt_runtime:
        raise Usage("kernel memory and real-time cpu limits exist on cgroup v1 only")
    return res


if __name__ == "__main__":
    sys.exit(main())
