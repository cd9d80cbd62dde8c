"""The CLI's conventions: --version, --help with examples, `Error:` + hint + 125 without a
traceback (unless --log-level debug), data on stdout, no colour off a terminal or with
NO_COLOR, and docs/cli in step with the CLI."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rootless import __version__
from rootless.cli import app_main
from rootless.cli.doctor_cmds import use_colour

REPO = Path(__file__).resolve().parents[2]
MINE = [["doctor"], ["info"], ["profile", "list"], ["profile", "show"], ["profile", "new"],
        ["config", "show"]]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("RL_PROFILE", raising=False)
    return tmp_path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["--version"]) == 0
    assert capsys.readouterr().out == f"rl version {__version__}\n"


@pytest.mark.parametrize("words", MINE, ids=" ".join)
def test_help_has_examples(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main([*words, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: rl {' '.join(words)}")
    assert "Examples:" in out and f"rl {' '.join(words)}" in out.split("Examples:")[1]


def test_profile_new_then_show_json(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    assert app_main(["profile", "new", "t"]) == 0
    path = Path(capsys.readouterr().out.strip())
    path.write_text(path.read_text() + 'network = "none"\nenv = ["A=1"]\n')
    assert app_main(["profile", "show", "t", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["settings"]["network"]["value"] == "none"
    assert data["settings"]["env"]["from"][0].startswith(f"{path}, line ")
    assert app_main(["profile", "list", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "t" and row["error"] is None


def test_config_error_format(capsys: pytest.CaptureFixture[str], isolated: Path) -> None:
    profiles = isolated / "xdg_config_home" / "rootless" / "profiles"
    profiles.mkdir(parents=True)
    (profiles / "bad.toml").write_text("netwrok = 'none'\n")
    assert app_main(["profile", "show", "bad"]) == 125
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"Error: {profiles / 'bad.toml'}, line 1: unknown key 'netwrok'\n"
                            "Hint: did you mean 'network'?\n")


def test_traceback_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["profile", "show", "missing"]) == 125
    assert "Traceback" not in capsys.readouterr().err
    assert app_main(["--log-level", "debug", "profile", "show", "missing"]) == 125
    assert "Traceback" in capsys.readouterr().err


def test_usage_errors_exit_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert app_main(["doctor", "--no-such-flag"]) == 125
    assert "No such option" in capsys.readouterr().err
    assert app_main(["profile", "list", "--format", "yaml"]) == 125
    assert capsys.readouterr().err.startswith("Error: --format 'yaml'")


def test_colour_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert use_colour(Tty()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "")
    assert not use_colour(Tty())


def test_docs_are_generated_from_the_cli() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gen-docs.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (REPO / "docs" / "cli" / "rl-run.md").read_text().count("--profile NAME") == 1
