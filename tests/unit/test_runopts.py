"""`rl run` flag parsing (podman's pflag rules) and the spec built from it."""

from __future__ import annotations

import pytest

from rootless.errors import UsageError
from rootless.runopts import OPTIONS, parse_run_args, run_help
from rootless.runspec import build_run_spec, parse_env, parse_tmpfs, parse_volume


def test_combined_short_flags_and_attached_values():
    r = parse_run_args(["-it", "--rm", "-eA=1", "-e", "B=2", "--env=C=3", "-p8080:80", "alpine", "sh"])
    assert r.flags == {"interactive": True, "tty": True, "remove": True, "env": ["A=1", "B=2", "C=3"],
                       "publish": ["8080:80"]}
    assert r.target == "alpine" and r.command == ["sh"]


def test_everything_after_the_image_is_the_command():
    r = parse_run_args(["--rm", "alpine", "ls", "-la", "--rm", "--", "x"])
    assert r.command == ["ls", "-la", "--rm", "--", "x"]


def test_double_dash_ends_options():
    r = parse_run_args(["--rm", "--", "-weird-image", "cmd"])
    assert r.target == "-weird-image" and r.command == ["cmd"]


def test_bool_flags_take_explicit_values():
    assert parse_run_args(["--rm=false", "x"]).flags == {"remove": False}
    with pytest.raises(UsageError, match="expected true or false"):
        parse_run_args(["--rm=maybe", "x"])


def test_unknown_and_incomplete_flags_are_usage_errors():
    with pytest.raises(UsageError, match="unknown flag: --nope"):
        parse_run_args(["--nope", "x"])
    with pytest.raises(UsageError, match="unknown shorthand"):
        parse_run_args(["-Z", "x"])
    with pytest.raises(UsageError, match="needs an argument"):
        parse_run_args(["--name"])
    with pytest.raises(UsageError, match="not an integer"):
        parse_run_args(["--timeout", "soon", "x"])


def test_rootfs_is_a_boolean_like_podman():
    r = parse_run_args(["--rootfs", "/some/dir", "echo", "hi"])
    assert r.flags == {"rootfs": True} and r.target == "/some/dir" and r.command == ["echo", "hi"]


def test_help_lists_every_option():
    text = run_help()
    for names, *_ in OPTIONS:
        for name in names:
            assert name in text


def test_each_long_name_is_unique():
    names = [n for names, *_ in OPTIONS for n in names]
    assert len(names) == len(set(names))


def test_env_precedence_and_host_copies():
    env = parse_env([], ["A=1", "HOSTONLY", "MISSING", "A=2", "EMPTY="], {"HOSTONLY": "h"})
    assert env == [("A", "1"), ("HOSTONLY", "h"), ("A", "2"), ("EMPTY", "")]


def test_env_file(tmp_path):
    f = tmp_path / "e"
    f.write_text("# c\n\nX=1 2\nY\n")
    assert parse_env([str(f)], [], {"Y": "y"}) == [("X", "1 2"), ("Y", "y")]
    with pytest.raises(UsageError, match="--env-file"):
        parse_env([str(tmp_path / "none")], [], {})


def test_env_rejects_empty_names():
    with pytest.raises(UsageError, match="name is empty"):
        parse_env([], ["=x"], {})


def test_volumes(tmp_path):
    v = parse_volume(f"{tmp_path}:/data:ro")
    assert (v.kind, v.source, v.destination, v.readonly) == ("bind", str(tmp_path), "/data", True)
    with pytest.raises(UsageError, match="no such file"):
        parse_volume(f"{tmp_path}/missing:/data")
    with pytest.raises(UsageError, match="must be absolute"):
        parse_volume(f"{tmp_path}:data")
    with pytest.raises(UsageError, match="option"):
        parse_volume(f"{tmp_path}:/data:bogus")
    with pytest.raises(UsageError, match="named volume"):
        parse_volume("myvol:/data")


def test_tmpfs():
    t = parse_tmpfs("/scratch:size=10m,ro")
    assert (t.kind, t.destination, t.readonly, t.options) == ("tmpfs", "/scratch", True, "size=10m")


def test_spec_from_flags_and_settings():
    parsed = parse_run_args(["--rm", "-e", "B=2", "--rootfs", "/r", "echo"])
    spec = build_run_spec(parsed, {"workdir": "/w", "remove": False}, environ={})
    assert spec.rootfs == "/r" and spec.command == ["echo"]
    assert spec.remove is True  # the flag wins over the setting
    assert spec.workdir == "/w"
    assert spec.env == [("B", "2")]


def test_spec_requires_an_image():
    with pytest.raises(UsageError, match="requires at least 1 arg"):
        build_run_spec(parse_run_args([]), {}, environ={})


@pytest.mark.parametrize("name", ["-x", "a b", "", "ü"])
def test_invalid_names(name):
    with pytest.raises(UsageError, match="invalid container name"):
        build_run_spec(parse_run_args(["--name", name, "img"]), {}, environ={})


@pytest.mark.parametrize("flags", [["--pull", "sometimes"], ["--cgroups", "maybe"], ["--timeout", "-1"]])
def test_invalid_values(flags):
    with pytest.raises(UsageError):
        build_run_spec(parse_run_args([*flags, "img"]), {}, environ={})


def test_short_name_search():
    from rootless.image.pull import short_name_candidates as cands

    search = ["registry.example:5000", "docker.io"]
    assert cands("alpine", search) == ["registry.example:5000/alpine", "docker.io/alpine"]
    assert cands("team/app:1", search) == ["registry.example:5000/team/app:1", "docker.io/team/app:1"]
    for full in ("quay.io/x/y", "localhost/app", "host:5000/app", "UPPER/app"):
        assert cands(full, search) == [full]
    assert cands("alpine", ["docker.io"]) == ["alpine"]
