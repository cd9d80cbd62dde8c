"""Secrets as files: stored 0600, mounted 0400 on a private tmpfs, never in the environment,
the container's upper layer or its saved config."""

from __future__ import annotations

import os
import stat

import pytest

pytestmark = pytest.mark.integration

VALUE = "tok-9f8e7d6c5b4a-secret"


@pytest.fixture
def stored(rl):
    r = rl("secret", "create", "apitoken", "-", input=VALUE)
    assert r.returncode == 0, r.stderr
    return "apitoken"


def test_secret_store_is_private_and_ls_never_prints_the_value(rl, stored):
    directory = rl.data / "secrets"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / stored).stat().st_mode) == 0o600
    r = rl("secret", "ls")
    assert r.returncode == 0 and stored in r.stdout and VALUE not in r.stdout
    again = rl("secret", "create", stored, "-", input="other")
    assert again.returncode == 125 and "already in use" in again.stderr


def test_secret_is_a_0400_file_on_a_private_readonly_tmpfs(run_sec, stored):
    r = run_sec("sh", "-c", "cat /run/secrets/apitoken; echo; stat -c '%a %u' /run/secrets/apitoken;"
                " grep ' /run/secrets ' /proc/self/mountinfo; echo x > /run/secrets/new",
                opts=["--secret", stored])
    lines = r.stdout.splitlines()
    assert lines[0] == VALUE
    assert lines[1] == "400 0"
    assert " - tmpfs " in lines[2] and " ro," in lines[2]
    assert "Read-only file system" in r.stderr


def test_secret_belongs_to_the_container_user(run_sec, stored, subuids):
    r = run_sec("sh", "-c", "stat -c '%a %u %g' /run/secrets/db; cat /run/secrets/db",
                opts=["--secret", f"{stored}:db", "--user", "1000"])
    assert r.stdout.splitlines() == ["400 1000 1000", VALUE], r.stderr


def test_attack_read_the_secret_from_the_environment(run_sec, stored):
    r = run_sec("sh", "-c", "cat /proc/1/environ; env", opts=["--secret", stored])
    assert r.returncode == 0
    assert VALUE not in r.stdout


def test_secret_is_not_in_the_upper_layer_or_the_saved_config(rl, sec_rootfs, stored):
    r = rl("run", "--network", "none", "--secret", stored, "--rootfs", str(sec_rootfs),
           "cat", "/run/secrets/apitoken")
    assert r.stdout == VALUE
    found, seen = [], 0
    for top, _dirs, files in os.walk(rl.data / "containers"):
        for name in files:
            try:
                data = open(os.path.join(top, name), "rb").read()
            except OSError:
                continue
            seen += 1
            if VALUE.encode() in data:
                found.append(os.path.join(top, name))
    assert seen and found == []


def test_secret_as_env_and_unknown_secrets_are_refused_125(run_sec, stored):
    r = run_sec("true", opts=["--secret", f"{stored},type=env"])
    assert r.returncode == 125 and "not supported" in r.stderr
    r = run_sec("true", opts=["--secret", "missing"])
    assert r.returncode == 125 and "no secret with name 'missing'" in r.stderr


def test_secret_rm(rl, stored):
    assert rl("secret", "rm", stored).returncode == 0
    assert rl("secret", "ls", "-q").stdout == ""
    r = rl("secret", "rm", stored)
    assert r.returncode == 125 and "no secret" in r.stderr
