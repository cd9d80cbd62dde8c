"""Bad values given to the real `rl run` (issue 13, items 6 and 7): exit 125, one `Error:` line
naming the flag, no traceback, and nothing left behind: rl's data and runtime directories are
not even created, because the spec is refused before any of them is needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from rootless.runspec import MAX_NAME_LENGTH

BAD = {
    "env-file-not-utf8": (["--env-file", "{env_file}"], "--env-file"),
    "name-too-long": (["--name", "n" * 300], "--name"),
    "stop-signal": (["--stop-signal", "FOO"], "--stop-signal"),
    "dns": (["--dns", "notanip"], "--dns"),
    "add-host": (["--add-host", "foo:notanip"], "--add-host"),
    "log-level": (["--log-level", "bogus"], "--log-level"),
    "env-name-newline": (["-e", "A\nB=1"], "-e"),
    "user-overflow": (["--user", "99999999999"], "--user"),
    "detached": (["-d", "--stop-signal", "FOO"], "--stop-signal"),
}


@pytest.mark.parametrize(("args", "flag"), BAD.values(), ids=BAD.keys())
def test_bad_value_is_125_naming_the_flag_and_leaves_nothing(rl, busybox_rootfs: Path, tmp_path: Path,
                                                             args: list[str], flag: str) -> None:
    env_file = tmp_path / "env"
    env_file.write_bytes(b"A=1\nB=\xff\xfe\n")
    args = [a.format(env_file=env_file) for a in args]
    r = rl("run", "--rm", "--network", "none", *args, "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: invalid ") or r.stderr.startswith(f"Error: {flag} "), r.stderr
    assert flag in r.stderr.splitlines()[0] and "Traceback" not in r.stderr, r.stderr
    assert not rl.data.exists() and not rl.runtime.exists()


def test_rl_log_level_is_checked_before_any_command(rl) -> None:
    r = rl("--log-level", "bogus", "ps")
    assert (r.returncode, r.stdout) == (125, ""), r.stderr
    assert r.stderr.startswith('Error: invalid --log-level "bogus"'), r.stderr


def test_the_longest_name_allowed_fits_rls_state(rl, busybox_rootfs: Path) -> None:
    """The length limit leaves room for every file rl names after a container."""
    name = "n" * MAX_NAME_LENGTH
    r = rl("run", "--name", name, "--network", "none", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 0, r.stderr
    assert name in rl("ps", "-a", "--format", "{{.Names}}").stdout
    r = rl("rm", name)
    assert r.returncode == 0, r.stderr
    assert list((rl.data / "containers").iterdir()) == []
