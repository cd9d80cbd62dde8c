"""The typer app for every command but the hot path of `rl run` (see rootless.main).

Each group of commands lives in its own module with a `register(app)` function; this module
only assembles them and maps errors to exit codes.
"""

from __future__ import annotations

import importlib
import sys

from rootless import __version__

# typer is imported inside the functions below: the package is also imported by the fast
# paths in rootless.main (`rl ps` without typer), and importing typer costs 60-150 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import typer

# Modules that add commands; each has register(app: typer.Typer).
COMMAND_MODULES = [
    "rootless.cli.image_cmds",
    "rootless.cli.login_cmds",
    "rootless.cli.secret_cmds",
    "rootless.cli.config_cmds",
    "rootless.cli.doctor_cmds",
    "rootless.cli.container_cmds",
    "rootless.cli.network_cmds",
    "rootless.cli.build_cmds",
]


def version_callback(value: bool) -> None:
    import typer

    if value:
        typer.echo(f"rl version {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    # A module global, not a local: typer resolves the commands' string annotations
    # (`ctx: typer.Context`) in this module's namespace.
    global typer
    import typer

    app = typer.Typer(
        name="rl",
        help="Rootless containers centred on user namespaces.",
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def main(
        ctx: typer.Context,
        version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                     help="Print the version and exit."),
        log_level: str = typer.Option("warning", "--log-level", metavar="LEVEL",
                                      help="debug, info, warning or error; debug also prints "
                                           "tracebacks."),
    ) -> None:
        """rl runs OCI containers as an ordinary user: no daemon, no setuid code of its own."""
        from rootless.runopts import check_log_level

        check_log_level(log_level)
        ctx.obj = {"log_level": log_level}

    @app.command(
        "run",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                          "help_option_names": []},
        add_help_option=False,
    )
    def run_cmd(ctx: typer.Context) -> None:
        """Run a command in a new container (see 'rl run --help')."""
        from rootless.main import run_main

        args = list(ctx.args)
        level = (ctx.obj or {}).get("log_level", "warning")
        if level != "warning" and not any(a.startswith("--log-level") for a in args):
            args = ["--log-level", level, *args]  # `rl --log-level debug run ...`
        raise typer.Exit(run_main(args))

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)
    return app


def app_main(argv: list[str]) -> int:
    import typer

    from rootless.errors import RlError
    from rootless.main import report

    debug = "--log-level=debug" in argv or any(
        a == "--log-level" and argv[i + 1:i + 2] == ["debug"] for i, a in enumerate(argv))
    app = build_app()
    try:
        # Without standalone mode click returns typer.Exit's code instead of raising it.
        result = app(args=argv, prog_name="rl", standalone_mode=False)
    except RlError as exc:
        return report(exc, debug)
    except typer.Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # click's usage errors (typer >= 0.22 vendors click as typer._click)
        if callable(getattr(exc, "show", None)) and hasattr(exc, "exit_code"):
            exc.show(file=sys.stderr)  # type: ignore[attr-defined]
            return 125
        if type(exc).__name__ == "Abort":
            return 130
        return report(exc, debug)
    return result if isinstance(result, int) else 0
