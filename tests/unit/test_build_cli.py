"""`rl build`'s command line without typer (rootless.cli.build_fast): pflag's rules, the same
flags as the typer command that prints --help, and typer taking what the fast parser does not."""

from __future__ import annotations

import pytest

from rootless.cli import build_app
from rootless.cli.build_fast import FLAGS, build_options, parse_build_argv
from rootless.errors import UsageError


def opts(*argv: str) -> dict:
    parsed = parse_build_argv(list(argv))
    assert parsed is not None
    return build_options(parsed[1], "warning") | {"context": parsed[0]}


def test_values_lists_and_flags() -> None:
    o = opts("-t", "a", "--tag=b", "-f", "F", "--build-arg", "X=1", "-q", "--no-cache", "ctx")
    assert (o["tags"], o["file"], o["build_args"], o["quiet"], o["no_cache"], o["context"]) == \
        (["a", "b"], "F", ["X=1"], True, True, "ctx")
    assert opts()["context"] is None and opts("-")["context"] == "-"


def test_pull_alone_is_always_and_takes_no_value() -> None:
    # podman 4: --pull (=true) pulls always; pflag never gives an optional value the next word
    o = opts("--pull", "ctx")
    assert (o["pull"], o["context"]) == ("always", "ctx")
    assert opts("--pull=never", ".")["pull"] == "never"
    assert opts("--pull=false", ".")["pull"] == "missing"
    assert opts(".")["pull"] == "missing"
    with pytest.raises(UsageError):
        opts("--pull=sometimes", ".")


def test_bools_never_take_the_next_word() -> None:
    assert opts("--layers=false", ".")["layers"] is False
    assert opts("--layers", ".")["layers"] is True
    assert opts("--tls-verify=false", ".")["tls_verify"] is False
    assert opts(".")["tls_verify"] is None
    assert parse_build_argv(["--tls-verify", "false", "."]) is None  # two contexts: typer says
    with pytest.raises(UsageError):
        opts("--layers=maybe", ".")


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["--nope", "."], ["-qt", "x", "."],
                                  ["-t"], ["a", "b"], ["--squash=true", "."]])
def test_what_the_fast_parser_leaves_to_typer(argv: list[str]) -> None:
    assert parse_build_argv(argv) is None


def test_the_fast_parser_knows_every_option_of_the_typer_command() -> None:
    import typer.main

    command = typer.main.get_command(build_app()).commands["build"]  # type: ignore[attr-defined]
    typer_opts = {o for p in command.params for o in p.opts if o.startswith("-")} - {"--help"}
    assert typer_opts == set(FLAGS)
