"""`rl login` and `rl logout`, with podman's behaviour and messages.

`rl login` checks the credentials with the registry (GET /v2/ through its auth flow) before
saving them, 0600, in rl's auth file ($XDG_CONFIG_HOME/rootless/auth.json). `rl logout`
removes them from that file only; credentials rl merely reads (podman's auth.json, docker's
config.json) are left to the tool that wrote them.
"""

from __future__ import annotations

import os
import sys

import typer

from rootless.errors import UsageError


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise UsageError(
        f"invalid value {value!r} for {name}: expected true or false",
        f"write it as {name}=true or {name}=false",
    )


def _read_password_stdin() -> str:
    # podman strips the trailing newline (and only that) from --password-stdin.
    data = sys.stdin.read()
    return data[:-1] if data.endswith("\n") else data


def login(
    registry: str,
    username: str | None,
    password: str | None,
    password_stdin: bool,
    tls_verify: bool,
) -> str:
    """Verify and store credentials; returns the line to print."""
    from rootless.errors import RegistryError
    from rootless.image.auth import Credentials, find_credentials, registry_key, save_credentials
    from rootless.image.registry import RegistryClient
    from rootless.paths import Paths

    env = dict(os.environ)
    paths = Paths.from_env(env)
    host = registry_key(registry)
    if not host:
        raise UsageError("rl login needs a registry, for example: rl login quay.io")
    if password is not None and password_stdin:
        raise UsageError("--password and --password-stdin cannot be used together")
    if password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        password = _read_password_stdin()

    if username is None and password is None:
        existing = find_credentials(host, paths, env)
        if existing is not None:
            typer.echo("Authenticating with existing credentials...")
            with RegistryClient(host, tls_verify=tls_verify, credentials=existing) as client:
                try:
                    client.ping()
                    return f"Existing credentials are valid. Already logged in to {host}"
                except RegistryError:
                    typer.echo(
                        "Existing credentials are invalid, please enter valid username and password"
                    )

    interactive = sys.stdin.isatty()
    if not username:
        if not interactive:
            raise UsageError(
                "rl login: no username given and stdin is not a terminal", "use -u USER"
            )
        username = typer.prompt("Username")
    if password is None:
        if not interactive:
            raise UsageError(
                "rl login: no password given and stdin is not a terminal",
                "use --password-stdin (or -p, which leaves the password in your shell history)",
            )
        password = typer.prompt("Password", hide_input=True)
    if not username or not password:
        raise UsageError("rl login: the username and password must not be empty")

    credentials = Credentials(username, password)
    with RegistryClient(host, tls_verify=tls_verify, credentials=credentials) as client:
        client.ping()
    save_credentials(paths, host, username, password)
    return "Login Succeeded!"


def logout(registry: str | None, all_registries: bool) -> str:
    from rootless.errors import RlError
    from rootless.image.auth import (
        find_credentials,
        registry_key,
        remove_all_credentials,
        remove_credentials,
    )
    from rootless.paths import Paths

    env = dict(os.environ)
    paths = Paths.from_env(env)
    if all_registries:
        if registry:
            raise UsageError("rl logout takes a registry or --all, not both")
        remove_all_credentials(paths)
        return "Removed login credentials for all registries"
    if not registry:
        raise UsageError("rl logout needs a registry (or --all)")
    host = registry_key(registry)
    if remove_credentials(paths, host):
        return f"Removed login credentials for {host}"
    elsewhere = find_credentials(host, paths, env)
    if elsewhere is not None:
        raise RlError(
            f"not logged into {host} with rl",
            f"the credentials in use come from {elsewhere.source}; remove them with the tool "
            "that wrote them (podman logout, docker logout)",
        )
    raise RlError(f"not logged into {host}")


def register(app: typer.Typer) -> None:
    @app.command("login")
    def login_cmd(
        registry: str = typer.Argument(..., help="Registry to log in to, e.g. quay.io"),
        username: str | None = typer.Option(None, "--username", "-u", help="User name."),
        password: str | None = typer.Option(
            None, "--password", "-p", help="Password (prefer --password-stdin)."
        ),
        password_stdin: bool = typer.Option(
            False, "--password-stdin", help="Read the password from stdin."
        ),
        tls_verify: str = typer.Option(
            "true",
            "--tls-verify",
            metavar="BOOL",
            help="Require HTTPS and verify certificates; --tls-verify=false allows plain HTTP.",
        ),
        no_tls_verify: bool = typer.Option(
            False, "--no-tls-verify", help="Same as --tls-verify=false."
        ),
    ) -> None:
        """Log in to a registry: the credentials are checked, then stored for rl pull."""
        verify = _parse_bool("--tls-verify", tls_verify) and not no_tls_verify
        typer.echo(login(registry, username, password, password_stdin, verify))

    @app.command("logout")
    def logout_cmd(
        registry: str | None = typer.Argument(None, help="Registry to log out of."),
        all_registries: bool = typer.Option(
            False, "--all", "-a", help="Remove the credentials of every registry."
        ),
    ) -> None:
        """Remove the credentials rl login stored for a registry."""
        typer.echo(logout(registry, all_registries))
