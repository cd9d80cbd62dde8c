"""Profiles and config.toml applied by the real `rl run`, as the unprivileged user."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def write(rl, rel: str, text: str) -> Path:  # type: ignore[no-untyped-def]
    path = Path(rl.env["XDG_CONFIG_HOME"]) / "rootless" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_profile_values_and_cli_lists_add(rl, run_bb) -> None:  # type: ignore[no-untyped-def]
    write(rl, "config.toml", '[run]\nenv = ["FROM_CONFIG=1"]\n')
    write(rl, "profiles/p.toml", 'env = ["FROM_PROFILE=2"]\nhostname = "profiled"\n')
    proc = run_bb("sh", "-c", 'echo $FROM_CONFIG $FROM_PROFILE $FROM_CLI; hostname',
                  opts=["--profile", "p", "-e", "FROM_CLI=3"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "2", "3", "profiled"]


def test_flags_win_and_later_profiles_win(rl, run_bb) -> None:  # type: ignore[no-untyped-def]
    write(rl, "profiles/a.toml", 'hostname = "from-a"\n')
    write(rl, "profiles/b.toml", 'hostname = "from-b"\n')
    assert run_bb("hostname", opts=["--profile", "a", "--profile", "b"]).stdout.strip() == "from-b"
    assert run_bb("hostname", opts=["--profile", "b", "--profile", "a"]).stdout.strip() == "from-a"
    assert run_bb("hostname", opts=["--profile", "a", "--hostname", "flag"]).stdout.strip() == "flag"


def test_rl_profile_environment_variable(rl, run_bb) -> None:  # type: ignore[no-untyped-def]
    write(rl, "profiles/ro.toml", "read_only = true\n")
    proc = run_bb("sh", "-c", "touch /etc/x 2>/dev/null && echo writable || echo readonly",
                  env={"RL_PROFILE": "ro"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "readonly"
    assert run_bb("sh", "-c", "touch /etc/x && echo writable").stdout.strip() == "writable"


def test_clear_in_profile(rl, run_bb) -> None:  # type: ignore[no-untyped-def]
    write(rl, "config.toml", '[run]\nenv = ["SECRET=leak"]\n')
    write(rl, "profiles/clean.toml", 'clear = ["env"]\nenv = ["ONLY=1"]\n')
    proc = run_bb("sh", "-c", "echo ${SECRET:-none} $ONLY", opts=["--profile", "clean"])
    assert proc.stdout.split() == ["none", "1"], proc.stderr


@pytest.mark.parametrize("files,profile,needle", [
    ({"profiles/bad.toml": "read_onyl = true\n"}, "bad", "line 1: unknown key 'read_onyl'"),
    ({"profiles/bad.toml": 'memory = "lots"\n'}, "bad", "invalid value for 'memory'"),
    ({"profiles/bad.toml": "env = [\n"}, "bad", "invalid TOML"),
    ({"profiles/x.toml": 'extends = "y"\n', "profiles/y.toml": 'extends = "x"\n'}, "x",
     "x -> y -> x"),
    ({}, "nowhere", "profile 'nowhere' not found"),
])
def test_config_errors_exit_125_before_running(rl, run_bb, files: dict[str, str],  # type: ignore[no-untyped-def]
                                               profile: str, needle: str) -> None:
    for rel, text in files.items():
        write(rl, rel, text)
    proc = run_bb("sh", "-c", "echo RAN", opts=["--profile", profile])
    assert proc.returncode == 125
    assert "RAN" not in proc.stdout
    assert proc.stderr.startswith("Error: ") and needle in proc.stderr
    assert "Hint: " in proc.stderr and "Traceback" not in proc.stderr


def test_broken_config_toml_stops_every_run(rl, run_bb) -> None:  # type: ignore[no-untyped-def]
    path = write(rl, "config.toml", "[run]\n\ntimeout = \"soon\"\n")
    proc = run_bb("true")
    assert proc.returncode == 125
    assert f"Error: {path}, line 3: invalid value for 'run.timeout'" in proc.stderr


def test_profile_commands(rl) -> None:  # type: ignore[no-untyped-def]
    proc = rl("profile", "new", "mine")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path.is_file() and "# pids_limit = 1024" in path.read_text()
    assert rl("profile", "new", "mine").returncode == 125
    write(rl, "profiles/base.toml", 'env = ["A=1"]\n')
    write(rl, "profiles/ci.toml", 'extends = "base"\ndescription = "for CI"\nremove = true\n')
    listing = rl("profile", "list")
    assert listing.returncode == 0
    assert any(line.split()[:2] == ["ci", "base"] and "for CI" in line
               for line in listing.stdout.splitlines())
    assert rl("profile", "list", "-q").stdout.split() == ["base", "ci", "mine"]
    shown = rl("profile", "show", "ci")
    assert shown.returncode == 0
    assert "remove = true" in shown.stdout and "ci.toml, line 3" in shown.stdout
    assert '"A=1",' in shown.stdout and "base.toml, line 1" in shown.stdout
    config = rl("config", "show")
    assert config.returncode == 0 and "[registries]" in config.stdout
