"""`rl doctor` (is this host ready, and what exactly to fix) and `rl info` (what rl uses)."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from rootless.errors import UsageError


def use_colour(stream: object = None) -> bool:
    """Colour only on a terminal, never with NO_COLOR set (https://no-color.org)."""
    stream = sys.stdout if stream is None else stream
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def doctor(only: list[str], as_json: bool) -> tuple[str, int]:
    from rootless.config.schema import closest
    from rootless.doctor import CHECK_IDS, Host, can_run, format_text, run_checks
    from rootless.doctor import as_json as to_json

    for name in only:
        if name not in CHECK_IDS:
            guess = closest(name, CHECK_IDS)
            raise UsageError(f"rl doctor: unknown check {name!r}",
                             hint=(f"did you mean '{guess}'? " if guess else "")
                             + f"the checks are: {' '.join(CHECK_IDS)}")
    checks = run_checks(Host(), only or None)
    text = (json.dumps(to_json(checks), indent=2) + "\n" if as_json
            else format_text(checks, colour=use_colour()))
    return text, 0 if can_run(checks) else 1


def info(fmt: str) -> str:
    from rootless.info import format_text, gather

    if fmt not in ("text", "json"):
        raise UsageError(f"--format {fmt!r}: use text or json")
    data = gather()
    return json.dumps(data, indent=2) + "\n" if fmt == "json" else format_text(data)


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor_cmd(
        checks: Annotated[list[str] | None, typer.Argument(metavar="CHECK",
            help="Only these checks (e.g. userns subids delegation).")] = None,
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
        fmt: str = typer.Option("text", "--format", help="text or json (same as --json)."),
    ) -> None:
        """Check this host for rootless containers and say exactly what to fix.

        Each check prints ok, warning or failure, what it found and the fix. Exit status 0
        when rl can run containers here, 1 when a failure stops it. The checks: kernel,
        userns-sysctl, userns, overlay, namespaces, subids, uidmap, uidmap-works, cgroups,
        delegation, user-session, runtime-dir, storage, network, tun, fuse, ports, ping.

        Examples:

          rl doctor

          rl doctor userns subids

          rl doctor --json | jq '.checks[] | select(.status != "ok")'
        """
        if fmt not in ("text", "json"):
            raise UsageError(f"--format {fmt!r}: use text or json")
        text, code = doctor(list(checks or []), as_json or fmt == "json")
        typer.echo(text, nl=False)
        raise typer.Exit(code)

    @app.command("info")
    def info_cmd(
        fmt: str = typer.Option("text", "--format", "-f", help="text or json."),
    ) -> None:
        """Show what rl uses here: versions, storage, id mappings, cgroups, network helpers
        and registries.

        Examples:

          rl info

          rl info --format json | jq .idmappings
        """
        typer.echo(info(fmt), nl=False)
