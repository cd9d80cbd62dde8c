"""The `rl` entry point. `rl run` and `rl build` take fast paths that never import typer
(start-up time); everything else goes to the typer app in rootless.cli."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    entry = argv is None
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "run":
        code = run_main(argv[1:])
        if entry and not os.environ.get("RL_NO_FAST_EXIT"):
            exit_now(code)
        return code
    if argv[:1] == ["build"] or argv[:2] == ["image", "build"]:
        # A fully cached rebuild costs little more than reading the cache: no typer either.
        from rootless.cli.build_fast import build_fast

        code = build_fast(argv[1:] if argv[0] == "build" else argv[2:])
        if code is not None:
            if entry and not os.environ.get("RL_NO_FAST_EXIT"):
                exit_now(code)
            return code
    if argv and argv[0] == "ps":
        # A CI runner polls `rl ps`: the plain flags are parsed without typer (see ps_fast).
        from rootless.errors import RlError

        try:
            from rootless.cli.container_cmds import ps_fast

            fast = ps_fast(argv[1:])
        except RlError as exc:
            return report(exc)
        if fast is not None:
            return fast
    from rootless.cli import app_main

    return app_main(argv)


def exit_now(code: int) -> None:
    """Skip the interpreter's finalisation (~12 ms of module teardown on these machines): the
    container is gone and every file rl wrote is closed (`rl run`, `rl build`, `rl-oci`)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass  # the reader left (`rl run ... | head`), as in a shell pipeline
    except OSError as exc:
        from rootless.errors import describe_oserror

        sys.stderr.write(f"Error: {describe_oserror('writing the output', exc)}\n")
        code = code or 125
    sys.stderr.flush()
    os._exit(code)


def report(exc: BaseException, debug: bool = False) -> int:
    """The one place that prints an error: `Error: ...` then the hint; traceback only at debug."""
    from rootless.errors import RlError

    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, RlError):
        sys.stderr.write(f"Error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"Hint: {exc.hint}\n")
        return exc.exit_code
    sys.stderr.write(f"Error: {type(exc).__name__}: {exc}\n")
    return 125


def run_main(args: list[str]) -> int:
    # First: a SIGTERM, SIGHUP or ^C from here on ends the run through its clean-up, with
    # 128+N (rootless.runtime.interrupt), instead of killing rl half-way through planning.
    from rootless.runtime.interrupt import Interrupted, hold_signals, raise_on_signals

    try:
        try:
            raise_on_signals()
            return _run(args)
        finally:
            hold_signals()  # the exit that follows is not to be cut short either
    except Interrupted as exc:
        sys.stderr.write(f"Error: {exc.message}\n")
        return exc.exit_code


def _run(args: list[str]) -> int:
    from rootless.errors import RlError

    debug = "--log-level=debug" in args or ("--log-level" in args and "debug" in args)
    try:
        from rootless.runopts import parse_run_args, run_help

        parsed = parse_run_args(args)
        if parsed.flags.get("help"):
            sys.stdout.write(run_help())
            return 0
        from rootless.paths import Paths
        from rootless.runspec import build_run_spec

        paths = Paths.from_env()
        settings = load_settings(parsed, paths)
        spec = build_run_spec(parsed, settings)
        if spec.detach:
            from rootless.runtime.detach import run_detached  # type: ignore[import-not-found]

            return run_detached(spec, paths)
        from rootless.runtime.launcher import run

        return run(spec, paths)
    except RlError as exc:
        return report(exc, debug)


def load_settings(parsed, paths) -> dict:  # type: ignore[no-untyped-def]
    """Values from config.toml and profiles (lowest first). Only read when something asks for
    them, so a plain `rl run` does not pay for TOML parsing."""
    profiles = list(parsed.flags.get("profiles", []))
    env_profile = os.environ.get("RL_PROFILE")
    if env_profile and not profiles:
        profiles = [p for p in env_profile.split(",") if p]
    if not profiles and not os.path.exists(paths.config_file_path):
        return {}
    from rootless.config import run_settings  # type: ignore[attr-defined]

    return run_settings(paths, profiles)


if __name__ == "__main__":
    sys.exit(main())
