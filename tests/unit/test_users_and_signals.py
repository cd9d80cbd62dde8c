from __future__ import annotations

import signal

import pytest

from rootless.errors import RlError
from rootless.runtime.proc import exit_code_of, parse_signal
from rootless.runtime.users import resolve_user


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    (tmp_path / "group").write_text("root:x:0:\nuser:x:1000:\nwheel:x:10:user\n")
    return tmp_path


def resolve(spec, etc):
    return resolve_user(spec, str(etc / "passwd"), str(etc / "group"))


def test_names_uids_and_groups(etc):
    u = resolve("user", etc)
    assert (u.uid, u.gid, u.home, u.groups) == (1000, 1000, "/home/user", [1000, 10])
    u = resolve("4242", etc)
    assert (u.uid, u.gid, u.home) == (4242, 0, "/")
    u = resolve("user:wheel", etc)
    assert (u.uid, u.gid, u.groups) == (1000, 10, [10])
    assert resolve(None, etc).uid == 0


def test_the_primary_group_is_a_supplementary_group_too(etc):
    # CVE-2022-2989 (podman), CVE-2022-2990 (buildah), CVE-2022-36109 (moby): without its
    # primary group in the list, a process can shed that group (a setgid program) and so
    # escape a "group may not" permission such as mode 0707.
    assert resolve("1000:1000", etc).groups == [1000]
    assert resolve("4242", etc).groups == [0]
    assert resolve("4242:77", etc).groups == [77]


def test_unknown_user_is_126(etc):
    with pytest.raises(RlError) as e:
        resolve("nobody-here", etc)
    assert e.value.exit_code == 126


@pytest.mark.parametrize("text", ["SIGTERM", "TERM", "term", "15", 15])
def test_parse_signal(text):
    assert parse_signal(text) == signal.SIGTERM


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "999", "-1"])
def test_parse_signal_rejects(text):
    with pytest.raises(ValueError):
        parse_signal(text)


def test_exit_code_of():
    assert exit_code_of(3 << 8) == 3
    assert exit_code_of(9) == 137


def test_keep_id_entries_are_podmans_lines():
    from rootless.runtime.users import KeepIdUser

    u = KeepIdUser("ann", 1500, 1600, "staff", "Ann Example", "/home/ann")
    assert u.passwd_line() == "ann:*:1500:1600:Ann Example:/home/ann:/bin/sh\n"
    assert u.group_line() == "staff:x:1600:ann\n"
    assert u.user_spec() == "1500:1600"


@pytest.mark.parametrize("targets,workdir,expected", [
    ((), None, "/"),                                      # nothing mounted: the workdir, / by default
    ((), "/src", "/src"),
    (("/home/ann",), None, "/home/ann"),                  # -v $HOME:$HOME
    (("/home",), "/src", "/home/ann"),                    # a mount above the home (not /)
    (("/home/ann/sub", "/proc", "/"), "/w", "/w"),        # below it, or /, does not count
    (("/home/ann/",), None, "/home/ann"),
])
def test_keep_id_home_follows_podman(targets, workdir, expected):
    from rootless.runtime.users import choose_home

    assert choose_home("/home/ann", targets, workdir) == expected


def test_keep_id_user_is_the_invoking_user():
    import os

    from rootless.runtime.users import keep_id_user

    u = keep_id_user([], "/work")
    assert (u.uid, u.gid, u.home) == (os.getuid(), os.getgid(), "/work")
