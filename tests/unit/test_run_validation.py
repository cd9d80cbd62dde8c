"""Bad `rl run` values are a UsageError (exit 125) naming the flag, raised while the spec is
built, before any file or namespace exists (issue 13, items 6 and 7). Where podman refuses the
same input, the message says what podman's does."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.cli import app_main
from rootless.errors import UsageError
from rootless.runopts import parse_run_args
from rootless.runspec import MAX_NAME_LENGTH, build_run_spec, parse_env


def spec_of(*args: str):  # type: ignore[no-untyped-def]
    return build_run_spec(parse_run_args([*args, "img"]), {}, environ={})


def refused(*args: str) -> str:
    with pytest.raises(UsageError) as info:
        spec_of(*args)
    assert info.value.exit_code == 125
    return info.value.message


# --- item 6: tracebacks instead of errors


def test_env_file_that_is_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_bytes(b"GOOD=1\n# comment \xff is not UTF-8 either\nBAD=\xff\xfe\n")
    with pytest.raises(UsageError) as info:
        parse_env([str(f)], [], {})
    assert info.value.message == f"--env-file {f}, line 3: not UTF-8 text (byte 0xff at column 5)"


def test_env_file_lines_end_at_newline_only_as_podman(tmp_path: Path) -> None:
    # podman reads the file with a line scanner: "\n" ends a line and one "\r" before it is
    # dropped; other characters (form feed, a lone "\r") belong to the value.
    f = tmp_path / "env"
    f.write_bytes(b"A=1\r\nB=x\x0cy\nC=p\rq\n")
    assert parse_env([str(f)], [], {}) == [("A", "1"), ("B", "x\x0cy"), ("C", "p\rq")]


def test_env_file_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^read --env-file .*: Is a directory \(EISDIR\)$"):
        parse_env([str(tmp_path)], [], {})


def test_name_longer_than_a_file_name_can_be_is_refused() -> None:
    assert spec_of("--name", "a" * MAX_NAME_LENGTH).name == "a" * MAX_NAME_LENGTH
    message = refused("--name", "a" * 300)
    assert message == f"invalid --name: 300 characters, at most {MAX_NAME_LENGTH} are allowed"


def test_relative_volume_from_a_deleted_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    message = refused("-v", "./data:/data")
    assert message == ("invalid -v './data:/data': the current directory: "
                       "No such file or directory (ENOENT)")


# --- item 7: accepted nonsense


@pytest.mark.parametrize(("value", "why"), [
    ("FOO", "not a signal name"),
    ("0", "valid signals are 1 through 64"),
    ("65", "valid signals are 1 through 64"),
    ("-5", "valid signals are 1 through 64"),
])
def test_stop_signal_must_be_a_signal(value: str, why: str) -> None:
    assert refused("--stop-signal", value) == f'invalid --stop-signal "{value}": {why}'


@pytest.mark.parametrize("value", ["TERM", "sigkill", "SIGRTMIN+1", "15", "64"])
def test_stop_signal_accepts_names_and_numbers(value: str) -> None:
    assert spec_of("--stop-signal", value).stop_signal == value


def test_stop_signal_from_settings_is_checked_too() -> None:
    with pytest.raises(UsageError, match="--stop-signal"):
        build_run_spec(parse_run_args(["img"]), {"stop_signal": "NOPE"}, environ={})


@pytest.mark.parametrize("value", ["notanip", "1.2.3", "01.2.3.4", "fe80::1%eth0", "", "1.2.3.4 "])
def test_dns_must_be_an_ip_address(value: str) -> None:
    # podman: "notanip is not an ip address" (net.ParseIP: no zone, no leading zeros).
    assert refused("--dns", value) == f'invalid --dns "{value}": not an IP address'


def test_dns_takes_ipv4_and_ipv6() -> None:
    assert spec_of("--dns", "10.0.0.1", "--dns", "2001:db8::53").dns == ["10.0.0.1", "2001:db8::53"]


def test_add_host_ip_must_be_an_ip_address() -> None:
    # podman: invalid IP address in add-host: "notanip"
    assert refused("--add-host", "foo:notanip") == 'invalid --add-host "foo:notanip": "notanip" is not an IP address'
    assert spec_of("--add-host", "foo:10.0.0.2", "--add-host", "v6:2001:db8::2").add_hosts == [
        "foo:10.0.0.2", "v6:2001:db8::2"]


def test_log_level_names_the_choices() -> None:
    assert refused("--log-level", "bogus") == (
        'invalid --log-level "bogus": choose from debug, info, warning, warn, error')


def test_global_log_level_is_checked_for_every_command(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    assert app_main(["--log-level", "bogus", "ps"]) == 125
    err = capsys.readouterr().err
    assert err.startswith('Error: invalid --log-level "bogus": choose from ') and "Traceback" not in err


@pytest.mark.parametrize("item", ["A\nB=1", "A\tB=1", "\x1bA=1", "A\x7f=1"])
def test_env_name_with_a_control_character_is_refused(item: str) -> None:
    assert refused("-e", item) == f"invalid -e {item!r}: the name contains a control character"


def test_env_file_name_with_a_control_character_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_bytes(b"A\x01B=1\n")
    with pytest.raises(UsageError, match=r"^invalid --env-file .*, line 1 'A\\x01B=1': the name contains a control character$"):
        parse_env([str(f)], [], {})


def test_env_values_may_hold_newlines() -> None:
    assert parse_env([], ["A=line1\nline2"], {}) == [("A", "line1\nline2")]


@pytest.mark.parametrize("value", ["99999999999", "0:99999999999", "2147483648", "-1", "1:-1",
                                   "root:4294967296"])
def test_user_ids_must_be_in_podmans_range(value: str) -> None:
    # podman: "uids and gids must be in range 0-2147483647" (it reports it at start, 126).
    assert refused("--user", value) == (
        f'invalid --user "{value}": uids and gids must be in range 0-2147483647')


@pytest.mark.parametrize("value", ["0", "2147483647", "1000:1000", "nobody", "app:staff", "10:wheel"])
def test_user_names_and_ids_in_range_pass(value: str) -> None:
    assert spec_of("--user", value).user == value
