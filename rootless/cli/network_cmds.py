"""`rl network create|ls|inspect|rm`: container-to-container networks.

A network is a definition on disk (rootless.network.ipam); its namespaces and its slirp4netns
exist only while containers use it (rootless.network.netns_holder), so `create` starts nothing.
"""

from __future__ import annotations

import json
import os
import time

import typer


def _paths():  # type: ignore[no-untyped-def]
    from rootless.paths import Paths

    return Paths.from_env()


def _live(paths, name: str) -> dict | None:  # type: ignore[no-untyped-def]
    from rootless.network import netns_holder

    return netns_holder.read_state(netns_holder.state_dir(paths, name))


def _parse_opts(opts: list[str]) -> dict[str, str]:
    from rootless.errors import UsageError

    known = {"allow_host_loopback": ("true", "false"), "mtu": None}
    out: dict[str, str] = {}
    for item in opts:
        key, sep, value = item.partition("=")
        if key not in known or not sep:
            raise UsageError(f"invalid --opt {item!r}",
                             hint="known: allow_host_loopback=true|false, mtu=68-65520")
        allowed = known[key]
        if allowed and value not in allowed:
            raise UsageError(f"invalid --opt {item!r}: expected {' or '.join(allowed)}")
        if key == "mtu" and not (value.isdigit() and 68 <= int(value) <= 65520):
            raise UsageError(f"invalid --opt {item!r}: expected 68-65520")
        out[key] = value
    return out


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="network", help="Manage container-to-container networks.",
                        no_args_is_help=True)

    @group.command("create")
    def create_cmd(
        name: str = typer.Argument(..., help="Name of the network."),
        subnet: str = typer.Option(None, "--subnet", help="IPv4 subnet, e.g. 10.89.5.0/24 "
                                   "(default: the first free 10.89.N.0/24)."),
        opt: list[str] = typer.Option(None, "--opt", "-o",  # noqa: B008 (typer)
                                      help="allow_host_loopback=true (10.0.2.2 is the host's "
                                           "127.0.0.1), mtu=N."),
    ) -> None:
        """Create a network (its namespaces start with its first container)."""
        from rootless.network import ipam

        ipam.create(_paths(), name, subnet, _parse_opts(opt or []))
        typer.echo(name)

    @group.command("ls")
    def ls_cmd(
        fmt: str = typer.Option("", "--format", help="json, or empty for a table."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the names only."),
    ) -> None:
        """List networks."""
        from rootless.errors import UsageError
        from rootless.network import ipam

        paths = _paths()
        rows = []
        for d in ipam.listing(paths):
            live = _live(paths, d["name"])
            rows.append(dict(d, containers=len(live["members"]) if live else 0))
        if fmt == "json":
            typer.echo(json.dumps([_public(r) for r in rows], indent=2))
            return
        if fmt:
            raise UsageError(f"unknown --format {fmt!r}: expected json")
        if quiet:
            for r in rows:
                typer.echo(r["name"])
            return
        typer.echo(f"{'NETWORK ID':<14}{'NAME':<24}{'SUBNET':<20}CONTAINERS")
        for r in rows:
            typer.echo(f"{r['id'][:12]:<14}{r['name']:<24}{r['subnet']:<20}{r['containers']}")

    @group.command("inspect")
    def inspect_cmd(names: list[str] = typer.Argument(..., help="Networks.")) -> None:  # noqa: B008
        """Show networks as JSON, with their running containers."""
        from rootless.errors import UsageError
        from rootless.network import ipam

        paths = _paths()
        out = []
        for name in names:
            d = ipam.load(paths, name)
            if d is None:
                raise UsageError(f"network {name!r} not found")
            live = _live(paths, name) or {}
            out.append(dict(_public(d), containers=live.get("members", []),
                            holder_pid=live.get("pid")))
        typer.echo(json.dumps(out, indent=2))

    @group.command("rm")
    def rm_cmd(
        names: list[str] = typer.Argument(..., help="Networks to remove."),  # noqa: B008
        force: bool = typer.Option(False, "--force", "-f",
                                   help="Kill the containers that use the network first."),
    ) -> None:
        """Remove networks (refused while containers use them, unless -f)."""
        for name in names:
            remove(_paths(), name, force)
            typer.echo(name)

    app.add_typer(group)


def _public(d: dict) -> dict:  # type: ignore[type-arg]
    return {k: d[k] for k in ("name", "id", "driver", "subnet", "gateway", "options", "created") if k in d}


def remove(paths, name: str, force: bool, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    from rootless.errors import RlError, UsageError
    from rootless.network import ipam, netns_holder

    fd = ipam.lock(paths, name)
    if fd is None:
        raise UsageError(f"network {name!r} not found")
    directory = netns_holder.state_dir(paths, name)
    try:
        live = netns_holder.read_state(directory)
        members = (live or {}).get("members") or []
        if members and not force:
            users = ", ".join(m.get("name") or m.get("hostname") or m["ip"] for m in members)
            raise RlError(f"network {name!r} is in use by {len(members)} container(s): {users}",
                          hint="stop them first, or use 'rl network rm -f' to kill them",
                          exit_code=2)
        # Under the lock no container can join; once unlinked, none can find the network.
        os.unlink(ipam.definition_path(paths, name))
        if members:
            conn = netns_holder.connect(directory)
            if conn is not None:
                conn.send("shutdown")
                conn.recv()
                conn.close()
    finally:
        os.close(fd)
    # The holder exits by itself once its last member is gone (it needs the lock we held).
    deadline = time.monotonic() + timeout
    while netns_holder.read_state(directory) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
