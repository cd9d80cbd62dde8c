"""`rl secret create|ls|rm`: secrets stored 0600 under the data dir, used with `rl run --secret`.

The data is never printed: `ls` shows names, sizes and dates only.
"""

from __future__ import annotations

import sys

import typer


def _data_dir():  # type: ignore[no-untyped-def]
    from rootless.paths import Paths

    return Paths.from_env().data


def register(app: typer.Typer) -> None:
    group = typer.Typer(name="secret", help="Manage secrets (files mounted at /run/secrets/NAME).",
                        no_args_is_help=True)

    @group.command("create")
    def create_cmd(
        name: str = typer.Argument(..., help="Name of the secret."),
        source: str = typer.Argument(..., help="File to read, or - for stdin."),
        replace: bool = typer.Option(False, "--replace", help="Replace an existing secret."),
    ) -> None:
        """Store a secret from a file or stdin."""
        from rootless.errors import UsageError
        from rootless.security import secrets

        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                with open(source, "rb") as f:
                    data = f.read(secrets.MAX_SIZE + 1)
            except OSError as exc:
                raise UsageError(f"reading {source}: {exc.strerror}") from None
        secrets.create(_data_dir(), name, data, replace=replace)
        typer.echo(name)

    @group.command("ls")
    def ls_cmd(
        quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the names only."),
    ) -> None:
        """List stored secrets (never their contents)."""
        import time

        from rootless.security import secrets

        rows = secrets.listing(_data_dir())
        if quiet:
            for name, _, _ in rows:
                typer.echo(name)
            return
        typer.echo(f"{'NAME':<32} {'SIZE':>8}  CREATED")
        for name, size, mtime in rows:
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))
            typer.echo(f"{name:<32} {size:>8}  {created}")

    @group.command("rm")
    def rm_cmd(
        names: list[str] = typer.Argument(None, help="Secrets to remove."),  # noqa: B008 (typer)
        all_secrets: bool = typer.Option(False, "--all", "-a", help="Remove every secret."),
    ) -> None:
        """Remove secrets."""
        from rootless.errors import UsageError
        from rootless.security import secrets

        data = _data_dir()
        if all_secrets:
            names = [n for n, _, _ in secrets.listing(data)]
        elif not names:
            raise UsageError("rl secret rm needs at least one name (or --all)")
        for name in names:
            secrets.remove(data, name)
            typer.echo(name)

    app.add_typer(group, name="secret")
