"""Container commands with podman's names, flags, output and exit codes: ps, inspect, logs,
exec, stop, kill, rm, start, restart, rename, wait, top, container prune, system prune (and
`rl container ls|ps|rm|...`).

The operations (stop, kill, remove, wait...) are in rootless.runtime.control, shared with other
front ends; this module parses arguments and prints (podman's tables, templates and JSON), the
typer wiring at the bottom. Errors are raised as RlError; rootless.cli prints them.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

from rootless.errors import RlError, StateError, UsageError
from rootless.fileio import read_or_empty
from rootless.paths import Paths
from rootless.runtime import state as st
from rootless.runtime.control import (
    clean_leftovers,
    kill_container,
    listing,
    prune_containers,
    refresh,
    remove_container,
    rename_container,
    resolve,
    start_container,
    stop_container,
    wait_exit,
)
from rootless.runtime.state import Container

if TYPE_CHECKING:
    import typer


def _paths() -> Paths:
    return Paths.from_env()


# -- presenting ------------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """docker's units.HumanDuration, which podman prints."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def status_text(c: Container, now: float) -> str:
    if c.running:
        up = "Up " + human_duration(now - float(c.state.get("started") or now))
        # Its network helper died (rootless.runtime.launcher.NetworkWatch): say so where
        # podman puts a health check's verdict.
        return up + " (no network)" if c.state.get("network_lost") else up
    if c.status == "created":
        return "Created"
    code = c.exit_code
    shown = "unknown" if code is None else str(code)
    finished = c.state.get("finished")
    if finished is None:
        return f"Exited ({shown})"
    return f"Exited ({shown}) {human_duration(now - float(finished))} ago"


def _iso(t: Any) -> str:
    if not t:
        return "0001-01-01T00:00:00Z"
    secs = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{int((t - secs) * 1e9):09d}Z"


def _ports(publish: list[str]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for text in publish or []:
        port, _, proto = text.partition("/")
        parts = port.rsplit(":", 2)
        ip, host = ("", "") if len(parts) == 1 else (("", parts[0]) if len(parts) == 2 else (parts[0], parts[1]))
        out.setdefault(f"{parts[-1]}/{proto or 'tcp'}", []).append({"HostIp": ip, "HostPort": host})
    return out


def _exit_code(c: Container) -> int:
    """-1 for an exited container whose status is unknown (docker's convention)."""
    if c.exit_code is not None:
        return c.exit_code
    return -1 if c.status == "exited" else 0


def ps_record(c: Container, now: float) -> dict[str, Any]:
    spec = c.config.get("spec") or {}
    cmd = c.config.get("command") or []
    return {
        "Id": c.cid, "ID": c.cid[:12], "Names": [c.name] if c.name else [],
        "Image": c.config.get("image") or c.config.get("rootfs") or "",
        "ImageID": (c.config.get("image_id") or "").removeprefix("sha256:"),
        "Command": cmd, "Created": int(c.config.get("created") or 0),
        "CreatedAt": _iso(c.config.get("created")),
        "RunningFor": human_duration(now - float(c.config.get("created") or now)) + " ago",
        "State": c.status, "Status": status_text(c, now),
        "ExitCode": _exit_code(c),
        "Exited": c.status == "exited", "ExitedAt": int(c.state.get("finished") or 0),
        "StartedAt": int(c.state.get("started") or 0), "Pid": c.pid,
        "Ports": [f"{m['HostIp'] or '0.0.0.0'}:{m['HostPort']}->{k}" for k, v in
                  _ports(spec.get("publish") or []).items() for m in v],
        "Labels": spec.get("labels") or {}, "AutoRemove": bool(spec.get("remove")),
    }


def inspect_record(paths: Paths, c: Container) -> dict[str, Any]:
    """podman inspect's shape for what rl knows; no environment and no secret content."""
    from rootless.runtime.logs import log_path

    cfg = c.config
    spec = cfg.get("spec") or {}
    cmd = cfg.get("command") or []
    limits = spec.get("limits") or {}
    restart = spec.get("restart") or "no"
    mode, _, count = restart.partition(":")
    restarts = 0
    try:
        with open(f"{st.runtime_dir(paths, c.cid)}/restarts") as f:
            restarts = int(f.read() or 0)
    except FileNotFoundError:
        pass  # never restarted
    mounts = [{"Type": v.get("kind"), "Source": v.get("source") or "", "Destination": v.get("destination"),
               "RW": not v.get("readonly"), "Options": (v.get("options") or "").split(",") if v.get("options") else []}
              for v in spec.get("volumes") or []]
    return {
        "Id": c.cid,
        "Created": _iso(cfg.get("created")),
        "Path": cmd[0] if cmd else "",
        "Args": cmd[1:],
        "State": {
            "Status": c.status, "Running": c.running, "Paused": False, "Restarting": False,
            "OOMKilled": False, "Dead": False, "Pid": c.pid,
            "ExitCode": _exit_code(c),
            "Error": "; ".join(filter(None, [c.state.get("error"), *c.state.get("problems", [])])),
            "StartedAt": _iso(c.state.get("started")), "FinishedAt": _iso(c.state.get("finished")),
        },
        "Image": (cfg.get("image_id") or "").removeprefix("sha256:"),
        "ImageName": cfg.get("image") or "",
        "Rootfs": cfg.get("rootfs") or "",
        "Name": c.name,
        "RestartCount": restarts,
        "Driver": "overlay",
        "LogPath": log_path(paths, c.cid),
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.get("hostname") or "", "Cmd": cmd, "User": cfg.get("user") or "",
            "WorkingDir": cfg.get("workdir") or "/", "Labels": spec.get("labels") or {},
            "StopSignal": cfg.get("stop_signal") or "SIGTERM",
            "StopTimeout": spec.get("stop_timeout") or 10, "Timeout": spec.get("timeout") or 0,
            "Secrets": [{"Name": s.split(":")[-1]} for s in spec.get("secrets") or []],
        },
        "HostConfig": {
            "AutoRemove": bool(spec.get("remove")),
            "RestartPolicy": {"Name": mode, "MaximumRetryCount": int(count or 0)},
            "NetworkMode": cfg.get("network") or "",
            "PortBindings": _ports(spec.get("publish") or []),
            "Memory": limits.get("memory") or 0, "MemorySwap": limits.get("memory_swap") or 0,
            "MemoryReservation": limits.get("memory_reservation") or 0,
            "PidsLimit": limits.get("pids") or 0, "CpuWeight": limits.get("cpu_weight") or 0,
            "CpusetCpus": limits.get("cpuset_cpus") or "", "Cpus": limits.get("cpus") or 0,
            "CapAdd": spec.get("cap_add") or [], "CapDrop": spec.get("cap_drop") or [],
            "Privileged": bool(spec.get("privileged")), "ReadonlyRootfs": bool(spec.get("read_only")),
            "LogConfig": {"Type": "k8s-file", "Path": log_path(paths, c.cid),
                          "Size": next((o.partition("=")[2] for o in spec.get("log_opts") or []
                                        if o.startswith("max-size=")), "-1")},
        },
        "NetworkSettings": {"Ports": _ports(spec.get("publish") or [])},
    }


def render(template: str, obj: Any) -> str:
    """The part of Go's text/template people put in --format: {{.A.B}}, {{json .A}},
    {{.A | json}}, literal text, \\t and \\n."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def value(path: str) -> Any:
        cur = obj
        for part in [p for p in path.split(".") if p]:
            if isinstance(cur, dict):
                if part in cur:
                    cur = cur[part]
                    continue
                low = {k.lower(): k for k in cur}
                if part.lower() in low:
                    cur = cur[low[part.lower()]]
                    continue
            raise UsageError(f"template: can't evaluate field {part} in {template!r}")
        return cur

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if v is None:
            return "<no value>"
        if isinstance(v, list):
            return "[" + " ".join(text(x) for x in v) + "]"
        if isinstance(v, dict):
            return "map[" + " ".join(f"{k}:{text(x)}" for k, x in sorted(v.items())) + "]"
        return str(v)

    def sub(m: re.Match[str]) -> str:
        inner = m.group(1).strip()
        as_json = False
        if inner.startswith("json "):
            as_json, inner = True, inner[5:].strip()
        elif inner.endswith("| json"):
            as_json, inner = True, inner[:-6].strip()
        if inner == ".":
            v = obj
        elif inner.startswith("."):
            v = value(inner)
        else:
            raise UsageError(f"template: unsupported action {{{{{m.group(1)}}}}}")
        return json.dumps(v) if as_json else text(v)

    return re.sub(r"\{\{(.*?)\}\}", sub, template)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _ps_matches(rec: dict[str, Any], filters: list[str]) -> bool:
    by_key: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise UsageError(f"invalid filter {f!r}: expected KEY=VALUE")
        by_key.setdefault(key, []).append(value)
    for key, values in by_key.items():
        if key == "status":
            for v in values:
                if v not in ("created", "running", "exited", "paused", "restarting", "removing",
                             "stopping", "unknown"):
                    raise UsageError(f"invalid status filter {v!r}: use created, running or exited")
            ok = rec["State"] in values
        elif key == "name":
            ok = any(re.search(v, n) for v in values for n in rec["Names"])
        elif key == "id":
            ok = any(rec["Id"].startswith(v) for v in values)
        elif key == "label":
            ok = all(_label_matches(rec["Labels"], v) for v in values)
        elif key == "exited":
            ok = rec["Exited"] and str(rec["ExitCode"]) in values
        elif key == "ancestor":
            ok = any(v in (rec["Image"], rec["ImageID"]) or rec["ImageID"].startswith(v) for v in values)
        else:
            raise UsageError(f"invalid filter {key!r}: use status, name, id, label, exited or ancestor")
        if not ok:
            return False
    return True


def _ps_template_view(rec: dict[str, Any]) -> dict[str, Any]:
    """podman's ps templates see strings where its JSON has lists (.Names, .Command...)."""
    view = dict(rec)
    view["Names"] = ",".join(rec["Names"])
    view["Command"] = " ".join(rec["Command"])
    view["Ports"] = ", ".join(rec["Ports"])
    view["Labels"] = ",".join(f"{k}={v}" for k, v in sorted(rec["Labels"].items()))
    view["CreatedAt"] = time.strftime("%Y-%m-%d %H:%M:%S %z %Z", time.localtime(rec["Created"]))
    return view


def _label_matches(labels: dict[str, str], want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def ps_output(paths: Paths, all_: bool, quiet: bool, fmt: str | None, filters: list[str],
              no_trunc: bool, last: int | None = None) -> str:
    containers = listing(paths, full=False)
    now = time.time()
    records = [ps_record(c, now) for c in containers]
    if not all_ and not any(f.startswith("status=") for f in filters):
        records = [r for r in records if r["State"] == "running"]
    records = [r for r in records if _ps_matches(r, filters)]
    if last is not None and last >= 0:
        records = records[:last]
    if quiet:
        return "".join((r["Id"] if no_trunc else r["ID"]) + "\n" for r in records)
    if fmt in ("json", "{{json .}}"):
        return json.dumps(records, indent=4) + "\n"
    if fmt:
        header = None
        if fmt.startswith("table"):
            fmt = fmt[5:].strip()
            header = re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: m.group(1).upper(),
                            fmt.replace("\\t", "\t"))
        lines = [render(fmt, _ps_template_view(r)) for r in records]
        if header is not None:
            lines.insert(0, header)
        return "".join(line + "\n" for line in lines)
    rows = [["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]]
    for r in records:
        cmd = " ".join(r["Command"])
        if not no_trunc and len(cmd) > 20:
            cmd = cmd[:17] + "..."
        rows.append([r["Id"] if no_trunc else r["ID"], r["Image"], cmd, r["RunningFor"], r["Status"],
                     ", ".join(r["Ports"]), ",".join(r["Names"])])
    return _table(rows) + "\n"


# -- top ---------------------------------------------------------------------------------------

def top_output(c: Container) -> str:
    """The container's processes: every host process in PID 1's PID namespace, shown with
    the pids and user ids the container sees (NSpid, uid_map)."""
    pid1 = int(c.state["pid"])
    try:
        target = os.stat(f"/proc/{pid1}/ns/pid").st_ino
    except OSError:
        raise StateError(f"container {c.cid[:12]} is not running: no processes") from None
    uid_map = _read_map(f"/proc/{pid1}/uid_map")
    users = _passwd(pid1)
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(read_or_empty("/proc/uptime").split()[0])
    rows = [["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]]
    for name in sorted((n for n in os.listdir("/proc") if n.isdigit()), key=int):
        try:
            if os.stat(f"/proc/{name}/ns/pid").st_ino != target:
                continue
            status = dict(line.split(":\t", 1) for line in read_or_empty(f"/proc/{name}/status").splitlines()
                          if ":\t" in line)
            stat = read_or_empty(f"/proc/{name}/stat")
            fields = stat[stat.rfind(")") + 2:].split()
            args = read_or_empty(f"/proc/{name}/cmdline").replace("\0", " ").strip()
        except OSError:
            continue
        if not stat:
            continue
        nspid = status.get("NSpid", name).split()[-1]
        ppid = _container_pid(int(fields[1]), target)
        host_uid = int(status.get("Uid", "0").split()[1])
        cuid = _to_container(host_uid, uid_map)
        user = users.get(cuid, str(cuid))
        elapsed = max(uptime - int(fields[19]) / ticks, 0.001)
        cpu = (int(fields[11]) + int(fields[12])) / ticks
        tty_nr = int(fields[4])
        tty = f"pts/{(tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00)}" if tty_nr >> 8 == 136 else "?"
        rows.append([user, nspid, ppid, f"{100 * cpu / elapsed:.3f}", _clock(elapsed), tty,
                     _clock(cpu), args or f"[{status.get('Name', '').strip()}]"])
    return _table(rows) + "\n"


def _container_pid(host_pid: int, pidns: int) -> str:
    """The pid the container sees for host_pid; "0" when it is outside the container."""
    try:
        if not host_pid or os.stat(f"/proc/{host_pid}/ns/pid").st_ino != pidns:
            return "0"
    except OSError:
        return "0"
    m = re.search(r"^NSpid:\s*(.*)$", read_or_empty(f"/proc/{host_pid}/status"), re.M)
    return m.group(1).split()[-1] if m else "0"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60}m{s % 60}s" if s >= 3600 else f"{s // 60}m{seconds % 60:.6f}s"



def _read_map(path: str) -> list[tuple[int, int, int]]:
    out = []
    for line in read_or_empty(path).splitlines():
        parts = line.split()
        if len(parts) == 3:
            out.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return out


def _to_container(host: int, mapping: list[tuple[int, int, int]]) -> int:
    for inside, outside, count in mapping:
        if outside <= host < outside + count:
            return inside + host - outside
    return 65534


def _passwd(pid1: int) -> dict[int, str]:
    out: dict[int, str] = {}
    # The container's own file, whatever it is: a directory, a loop or an unreadable file there
    # only costs `top` its user names (numeric ids are shown instead).
    passwd = read_or_empty(f"/proc/{pid1}/root/etc/passwd",
                           missing=(errno.ENOENT, errno.ENOTDIR, errno.ESRCH, errno.EACCES,
                                    errno.EISDIR, errno.ELOOP))
    for line in passwd.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            out.setdefault(int(parts[2]), parts[0])
    return out


# -- commands ----------------------------------------------------------------------------------

def _each(refs: list[str], action: Any, exit_code: int = 125) -> None:
    """podman's multi-container commands: act on each, print each, report the first error
    at the end (after trying the others)."""
    paths = _paths()
    first: RlError | None = None
    for ref in refs:
        try:
            c = resolve(paths, ref, exit_code)
            out = action(paths, c, ref)
            if out is not None:
                sys.stdout.write(f"{out}\n")
                sys.stdout.flush()
        except RlError as exc:
            if first is not None:
                sys.stderr.write(f"Error: {first.message}\n")
            first = exc
    if first is not None:
        raise first


def _need(refs: list[str], what: str, all_: bool = False) -> None:
    if not refs and not all_:
        raise UsageError(f"{what} requires at least one argument")


def ps_fast(argv: list[str]) -> int | None:
    """`rl ps` without typer (importing it costs ~150 ms; a CI runner polls ps): the plain
    flags only; None sends anything else (--help, unknown flags) to the typer command."""
    all_ = quiet = no_trunc = False
    fmt: str | None = None
    filters: list[str] = []
    last: int | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, attached = arg.partition("=")
        if arg in ("-a", "--all"):
            all_ = True
        elif arg in ("-q", "--quiet"):
            quiet = True
        elif arg == "--no-trunc":
            no_trunc = True
        elif arg in ("-aq", "-qa"):
            all_ = quiet = True
        elif arg in ("-l", "--latest"):
            all_, last = True, 1
        elif name in ("--format", "--filter", "-f", "--last", "-n"):
            if eq:
                value = attached
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                return None
            if name == "--format":
                fmt = value
            elif name in ("--last", "-n"):
                if not value.lstrip("-").isdigit():
                    return None
                all_, last = True, int(value)
            else:
                filters.append(value)
        else:
            return None
        i += 1
    sys.stdout.write(ps_output(_paths(), all_, quiet, fmt, filters, no_trunc, last))
    return 0


def register(app: typer.Typer) -> None:
    import typer

    # Mutable defaults as singletons (ruff B008).
    refs_arg = typer.Argument(None, metavar="CONTAINER...")
    filters_opt = typer.Option([], "--filter", "-f", help="status=, name=, id=, label=, exited=, ancestor=")
    env_opt = typer.Option([], "--env", "-e", help="Set an environment variable.")

    container_app = typer.Typer(help="Manage containers.", no_args_is_help=True)
    system_app = typer.Typer(help="Manage rl itself.", no_args_is_help=True)
    app.add_typer(container_app, name="container")
    app.add_typer(system_app, name="system")

    def ps(
        all_: bool = typer.Option(False, "--all", "-a", help="Show all containers, not only running ones."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the container ids."),
        fmt: str | None = typer.Option(None, "--format", help="json, or a Go template ({{.ID}} {{.Names}} ...)."),
        filters: list[str] = filters_opt,
        no_trunc: bool = typer.Option(False, "--no-trunc", help="Do not truncate ids and commands."),
        last: int | None = typer.Option(None, "--last", "-n", help="Show the n most recently created."),
        latest: bool = typer.Option(False, "--latest", "-l", help="Show the latest created container."),
    ) -> None:
        """List containers."""
        sys.stdout.write(ps_output(_paths(), all_ or latest or last is not None, quiet, fmt,
                                   list(filters), no_trunc, 1 if latest else last))

    def inspect(
        refs: list[str] = refs_arg,
        fmt: str | None = typer.Option(None, "--format", "-f", help="A Go template ({{.State.Status}})."),
    ) -> None:
        """Show a container's configuration and state as JSON."""
        _need(refs, "inspect")
        paths = _paths()
        records, first = [], None
        for ref in refs:
            try:
                records.append(inspect_record(paths, resolve(paths, ref)))
            except RlError as exc:
                first = first or exc
        if fmt and fmt not in ("json", "{{json .}}"):
            for r in records:
                typer.echo(render(fmt, r))
        else:
            typer.echo(json.dumps(records, indent=4))
        if first is not None:
            raise first

    def logs(
        ref: str = typer.Argument(..., metavar="CONTAINER"),
        follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the container stops."),
        tail: int | None = typer.Option(None, "--tail", help="Only the last N lines."),
        since: str | None = typer.Option(None, "--since", help="Only output since this time (10m, RFC 3339, unix time)."),
    ) -> None:
        """Print the output of a detached container."""
        from rootless.runtime import logs as logmod

        paths = _paths()
        c = resolve(paths, ref)
        path = logmod.log_path(paths, c.cid)
        since_t = logmod.parse_since(since) if since else None
        out, err = sys.stdout.buffer, sys.stderr.buffer
        records = logmod.read_all(path + ".1") if os.path.exists(path + ".1") else []
        offset, ino = 0, None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                ino = os.fstat(fd).st_ino
                data = f.read()
            recs, rest = logmod.parse_records(data)
            records += recs
            offset = len(data) - len(rest)
        except FileNotFoundError:
            pass
        logmod.emit(logmod.select_records(records, tail, since_t), out, err)
        if follow:
            def running() -> bool:
                return refresh(paths, c).running

            if ino is not None and os.path.exists(path) and os.stat(path).st_ino != ino:
                offset = 0
            logmod.follow(path, offset, running, out, err)

    def exec_(
        ctx: typer.Context,
        interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open."),
        tty: bool = typer.Option(False, "--tty", "-t", help="Allocate a pseudo-terminal."),
        env: list[str] = env_opt,
        workdir: str | None = typer.Option(None, "--workdir", "-w", help="Working directory inside the container."),
        user: str | None = typer.Option(None, "--user", "-u", help="Run as this user."),
        detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background."),
        privileged: bool = typer.Option(False, "--privileged", help="All capabilities of the container's namespace."),
    ) -> None:
        """Run a command in a running container."""
        from rootless.runspec import parse_env
        from rootless.runtime.exec import ExecOptions, exec_in

        args = list(ctx.args)
        if len(args) < 2:
            raise UsageError("exec requires the name or ID of a container and a command",
                             hint="rl exec [OPTIONS] CONTAINER COMMAND [ARG...]")
        paths = _paths()
        c = resolve(paths, args[0])
        opts = ExecOptions(command=args[1:], interactive=interactive, tty=tty,
                           env=parse_env([], list(env), dict(os.environ)), workdir=workdir,
                           user=user, detach=detach, privileged=privileged)
        raise typer.Exit(exec_in(c, opts))

    def stop(
        refs: list[str] = refs_arg,
        timeout: int | None = typer.Option(None, "--time", "-t", help="Seconds to wait before SIGKILL."),
        all_: bool = typer.Option(False, "--all", "-a", help="Stop all running containers."),
        ignore: bool = typer.Option(False, "--ignore", "-i", help="Ignore containers that do not exist."),
    ) -> None:
        """Stop running containers (stop signal, then SIGKILL after the timeout)."""
        _need(refs, "stop", all_)
        paths = _paths()
        if timeout is not None and timeout < 0:
            raise UsageError("--time must be 0 or more seconds")
        if all_:
            refs = [c.cid for c in st.list_containers(paths) if c.running]
        refs = _existing(paths, refs) if ignore else refs
        def act_stop(p: Paths, c: Container, ref: str) -> str:
            stop_container(p, c, timeout)
            return ref

        _each(refs, act_stop, exit_code=1)

    def kill(
        refs: list[str] = refs_arg,
        sig: str = typer.Option("KILL", "--signal", "-s", help="Signal name or number."),
        all_: bool = typer.Option(False, "--all", "-a", help="Signal all running containers."),
    ) -> None:
        """Send a signal to the containers' PID 1."""
        from rootless.runtime.proc import parse_signal

        _need(refs, "kill", all_)
        try:
            signum = parse_signal(sig)
        except ValueError:
            raise UsageError(f"invalid signal: {sig}") from None
        paths = _paths()
        if all_:
            refs = [c.cid for c in st.list_containers(paths) if c.running]

        def act(p: Paths, c: Container, ref: str) -> str:
            kill_container(c, signum)
            return ref

        _each(refs, act)

    def rm(
        refs: list[str] = refs_arg,
        force: bool = typer.Option(False, "--force", "-f", help="Kill and remove running containers."),
        volumes: bool = typer.Option(False, "--volumes", "-v", help="Remove anonymous volumes (rl has none)."),
        all_: bool = typer.Option(False, "--all", "-a", help="Remove all containers."),
        ignore: bool = typer.Option(False, "--ignore", "-i", help="Ignore containers that do not exist."),
    ) -> None:
        """Remove containers and their storage."""
        del volumes
        _need(refs, "rm", all_)
        paths = _paths()
        if all_:
            refs = [c.cid for c in st.list_containers(paths)]
        refs = _existing(paths, refs) if ignore else refs
        def act_rm(p: Paths, c: Container, ref: str) -> str:
            remove_container(p, c, force)
            return ref

        _each(refs, act_rm, exit_code=1)
        clean_leftovers(paths)

    def start(
        refs: list[str] = refs_arg,
        attach: bool = typer.Option(False, "--attach", "-a", help="Run in the foreground and return its exit code."),
        interactive: bool = typer.Option(False, "--interactive", "-i", help="Keep stdin open (with -a)."),
    ) -> None:
        """Start stopped containers."""
        from rootless.runtime.detach import start_existing

        del interactive
        _need(refs, "start")
        paths = _paths()
        if attach:
            if len(refs) != 1:
                raise UsageError("you cannot start and attach multiple containers at once")
            c = resolve(paths, refs[0])
            if c.running:
                raise StateError(f"container {c.cid[:12]} is already running")
            raise typer.Exit(start_existing(paths, c.cid, c.config, attach=True))

        def act(p: Paths, c: Container, ref: str) -> str:
            start_container(p, c)
            return ref

        _each(refs, act)

    def restart(
        refs: list[str] = refs_arg,
        timeout: int | None = typer.Option(None, "--time", "-t", help="Seconds to wait before SIGKILL."),
    ) -> None:
        """Stop and start containers again."""
        _need(refs, "restart")

        def act(p: Paths, c: Container, ref: str) -> str:
            stop_container(p, c, timeout)
            start_container(p, c)
            return c.cid

        _each(refs, act)

    def rename(ref: str = typer.Argument(..., metavar="CONTAINER"),
               new: str = typer.Argument(..., metavar="NAME")) -> None:
        """Rename a container."""
        from rootless.runspec import check_name

        check_name(new)
        paths = _paths()
        rename_container(paths, resolve(paths, ref), new)

    def wait(refs: list[str] = refs_arg) -> None:
        """Wait for containers to stop and print their exit codes."""
        _need(refs, "wait")

        def act(p: Paths, c: Container, ref: str) -> str:
            code = wait_exit(p, c)
            return str(-1 if code is None else code)

        _each(refs, act)

    def top(ref: str = typer.Argument(..., metavar="CONTAINER")) -> None:
        """Show the processes of a running container."""
        paths = _paths()
        c = resolve(paths, ref)
        if not c.running:
            raise StateError(f"top can only be used on running containers: {c.cid[:12]} is "
                             f"{c.status}: container state improper")
        sys.stdout.write(top_output(c))

    def prune(force: bool = typer.Option(False, "--force", "-f", help="Do not ask for confirmation.")) -> None:
        """Remove all stopped containers."""
        if not force and sys.stdin.isatty() and not typer.confirm(
                "WARNING! This will remove all non running containers.\nAre you sure you want "
                "to continue?", default=False):
            return
        for cid in prune_containers(_paths()):
            typer.echo(cid)

    def system_prune(
        force: bool = typer.Option(False, "--force", "-f", help="Do not ask for confirmation."),
        all_: bool = typer.Option(False, "--all", "-a", help="Also remove images no container uses."),
    ) -> None:
        """Remove stopped containers and unused images."""
        if not force and sys.stdin.isatty() and not typer.confirm(
                "WARNING! This command removes:\n\t- all stopped containers\n\t- all dangling "
                "images\nAre you sure you want to continue?", default=False):
            return
        paths = _paths()
        removed = prune_containers(paths)
        if removed:
            typer.echo("Deleted Containers")
            for cid in removed:
                typer.echo(cid)
        try:
            from rootless.cli.image_cmds import prune_cmd
        except ImportError:
            return
        images = prune_cmd(all_, True)
        if images:
            typer.echo("Deleted Images")
            for line in images:
                typer.echo(line)

    # Annotations are strings resolved in this module's globals, where typer is not (it is
    # imported lazily so that `rl ps` can run without it): give typer the class itself.
    exec_.__annotations__["ctx"] = typer.Context
    ctx_settings = {"ignore_unknown_options": True, "allow_extra_args": True,
                    "allow_interspersed_args": False}
    for target in (app, container_app):
        target.command("ps")(ps)
        target.command("inspect")(inspect)
        target.command("logs")(logs)
        target.command("exec", context_settings=ctx_settings)(exec_)
        target.command("stop")(stop)
        target.command("kill")(kill)
        target.command("rm")(rm)
        target.command("start")(start)
        target.command("restart")(restart)
        target.command("rename")(rename)
        target.command("wait")(wait)
        target.command("top")(top)
    container_app.command("ls")(ps)
    container_app.command("list")(ps)
    container_app.command("prune")(prune)
    system_app.command("prune")(system_prune)


def _existing(paths: Paths, refs: list[str]) -> list[str]:
    out = []
    for ref in refs:
        try:
            resolve(paths, ref)
            out.append(ref)
        except RlError:
            pass
    return out


