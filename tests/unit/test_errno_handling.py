"""Each place that catches an OSError accepts the errno it expects and no other (issue 13,
item 11): the expected case still gives its default, the unexpected one now becomes an error,
a doctor finding or a log line. The errnos come from the real kernel: files that are not
there, a directory where a file is expected, permissions taken away (the tests run as an
unprivileged user, for whom mode 000 means EACCES)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from rootless.fileio import read_or_empty
from tests.conftest import need


@contextmanager
def mode(path: Path, bits: int) -> Iterator[Path]:
    """`path` with mode `bits` for the duration (restored so pytest can clean up)."""
    need(os.geteuid() != 0, "permission errors need an unprivileged user: use scripts/test.sh")
    old = path.stat().st_mode & 0o7777
    path.chmod(bits)
    try:
        yield path
    finally:
        path.chmod(old)


# -- fileio.read_or_empty ------------------------------------------------------------------
def test_read_or_empty_missing_file_and_missing_parent_are_empty(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert read_or_empty(str(tmp_path / "absent")) == ""               # ENOENT
    assert read_or_empty(str(tmp_path / "file" / "below")) == ""       # ENOTDIR
    assert read_or_empty(str(tmp_path / "file")) == "x"


def test_read_or_empty_process_gone_is_empty() -> None:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its /proc directory is gone
    assert read_or_empty(f"/proc/{child.pid}/status") == ""


def test_read_or_empty_raises_for_a_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_or_empty(str(tmp_path))


def test_read_or_empty_raises_when_unreadable(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("x")
    with mode(f, 0), pytest.raises(PermissionError):
        read_or_empty(str(f))


def test_read_or_empty_takes_the_errnos_a_caller_expects(tmp_path: Path) -> None:
    assert read_or_empty(str(tmp_path), missing=(errno.ENOENT, errno.EISDIR)) == ""
    with pytest.raises(FileNotFoundError):
        read_or_empty(str(tmp_path / "absent"), missing=(errno.EISDIR,))


# -- rl info ---------------------------------------------------------------------------------
def test_info_counts_a_missing_store_as_empty_and_an_unreadable_one_as_an_error(
        tmp_path: Path) -> None:
    from rootless.errors import RlError
    from rootless.info import _count

    assert _count(tmp_path / "images") == 0                            # not created yet
    store = tmp_path / "layers"
    (store / "a").mkdir(parents=True)
    assert _count(store) == 1
    with mode(store, 0), pytest.raises(RlError, match=rf"listing {store}: .*\(EACCES\)"):
        _count(store)


def test_info_shows_why_no_subordinate_ids_are_used(tmp_path: Path) -> None:
    from rootless.info import gather

    bad = tmp_path / "subuid"
    bad.write_text("nonsense\n")
    env = {"PATH": "/nonexistent", "HOME": str(tmp_path), "RL_SUBUID_FILE": str(bad),
           "RL_STORAGE": str(tmp_path / "data"), "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_CONFIG_HOME": str(tmp_path / "config")}
    data = gather(env)
    assert f"{bad}:1" in data["idmappings"]["subid_error"]
    assert data["store"]["images"] == 0


# -- config and profiles ---------------------------------------------------------------------
def test_profiles_dir_not_there_lists_nothing_but_unreadable_is_an_error(tmp_path: Path) -> None:
    from rootless.config.layers import available_profiles, read_profile
    from rootless.errors import ConfigError

    assert available_profiles(tmp_path / "profiles") == []              # ENOENT
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "ci.toml").write_text('hostname = "ci"\n')
    assert available_profiles(profiles) == ["ci"]
    with mode(profiles, 0):
        with pytest.raises(ConfigError, match=rf"cannot list the profiles in {profiles}: .*EACCES"):
            available_profiles(profiles)
        # Before: 'profile not found', hinting `rl profile new`, for a profile that exists.
        with pytest.raises(ConfigError, match="EACCES"):
            read_profile(profiles, "ci", {})


def test_pwd_that_cannot_be_checked_is_the_real_cwd(tmp_path: Path) -> None:
    from rootless.config.layers import expand

    here = os.getcwd()
    assert expand("${PWD}", {"PWD": str(tmp_path / "gone")}) == here   # ENOENT
    locked = tmp_path / "locked"
    (locked / "inside").mkdir(parents=True)
    with mode(locked, 0):
        assert expand("${PWD}", {"PWD": str(locked / "inside")}) == here  # EACCES


def test_parse_cache_not_there_is_quiet_but_unusable_is_said(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rootless.config.toml import TomlCache

    TomlCache(tmp_path / "run" / "cache.json")                          # ENOENT: first run
    assert capsys.readouterr().err == ""
    odd = tmp_path / "dir.json"
    odd.mkdir()
    TomlCache(odd)                                                      # EISDIR
    err = capsys.readouterr().err
    assert f"warning: ignoring the parse cache {odd}" in err and "EISDIR" in err


def test_parse_cache_that_cannot_be_written_is_said_and_leaves_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rootless.config.toml import TomlCache, read_toml

    toml = tmp_path / "p.toml"
    toml.write_text('hostname = "x"\n')
    run = tmp_path / "run"
    run.mkdir()
    cache = TomlCache(run / "cache.json")
    read_toml(toml, cache)
    with mode(run, 0o500):
        cache.save()                                                    # EACCES
    err = capsys.readouterr().err
    assert f"warning: cannot write the parse cache {run / 'cache.json'}" in err and "EACCES" in err
    assert list(run.iterdir()) == []


def test_parse_cache_skips_files_json_cannot_hold(tmp_path: Path) -> None:
    from rootless.config.toml import TomlCache, read_toml

    plain, dated = tmp_path / "plain.toml", tmp_path / "dated.toml"
    plain.write_text('hostname = "x"\n')
    dated.write_text("when = 1979-05-27T07:32:00Z\n")
    cache = TomlCache(tmp_path / "cache.json")
    read_toml(plain, cache)
    read_toml(dated, cache)
    cache.save()
    # Before: one TOML datetime made json.dumps fail and nothing at all was cached.
    assert str(plain) in (tmp_path / "cache.json").read_text()


def test_toml_in_an_unsearchable_directory_is_a_config_error(tmp_path: Path) -> None:
    from rootless.config.toml import TomlCache, read_toml
    from rootless.errors import ConfigError

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "p.toml").write_text('hostname = "x"\n')
    with mode(locked, 0), pytest.raises(ConfigError, match="cannot read .*Permission denied"):
        read_toml(locked / "p.toml", TomlCache(tmp_path / "cache.json"))


# -- rl doctor -------------------------------------------------------------------------------
def doctor_host(tmp_path: Path, data: Path | None = None, **env: str):  # type: ignore[no-untyped-def]
    from rootless.doctor import Host
    from rootless.paths import Paths

    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
    paths = Paths(data or tmp_path / "data", tmp_path / "run" / "rootless", tmp_path / "config")
    return Host(base, paths=paths)


def test_sysctl_the_kernel_lacks_is_none_but_an_unreadable_one_is_a_finding(tmp_path: Path) -> None:
    from rootless.doctor import WARNING, run_checks

    root = tmp_path / "sys"
    (root / "net" / "ipv4").mkdir(parents=True)
    host = doctor_host(tmp_path, RL_SYSCTL_ROOT=str(root))
    assert host.sysctl("net.ipv4.ip_unprivileged_port_start") is None        # ENOENT
    (root / "net" / "ipv4" / "ip_unprivileged_port_start").mkdir()
    # Before: None, and doctor said the kernel is older than 4.11.
    [check] = run_checks(host, only=["ports"])
    assert check.status == WARNING
    assert f"{root}/net/ipv4/ip_unprivileged_port_start" in check.found and "EISDIR" in check.found
    assert "report this as a bug" not in check.fix


def test_helper_without_file_capabilities_is_unprivileged(tmp_path: Path) -> None:
    from rootless.doctor.ids import _privileged

    helper = tmp_path / "newuidmap"
    helper.write_text("")
    helper.chmod(0o755)
    assert _privileged(str(helper)) is None          # ENODATA (or ENOTSUP on this filesystem)


def test_tool_version_says_why_it_is_unknown(tmp_path: Path) -> None:
    from rootless.doctor.network import tool_version

    garbage = tmp_path / "pasta"
    garbage.write_bytes(b"\x00\x01not a program\n")
    garbage.chmod(0o755)
    assert tool_version(str(garbage)) == "version unknown: Exec format error (ENOEXEC)"


def test_doctor_says_where_the_probe_ran_when_storage_cannot_be_made(tmp_path: Path) -> None:
    from rootless.doctor.probe import check_userns

    locked = tmp_path / "locked"
    locked.mkdir()
    with mode(locked, 0o500):
        checks = {c.id: c for c in check_userns(doctor_host(tmp_path, data=locked / "data"))}
    overlay = checks["overlay"]
    assert f"cannot create {locked}/data/tmp" in overlay.found and "EACCES" in overlay.found


def test_doctor_reports_a_scratch_directory_it_cannot_remove(tmp_path: Path) -> None:
    from rootless.doctor.probe import _remove

    scratch = tmp_path / "doctor-x"
    (scratch / "work").mkdir(parents=True)
    with mode(tmp_path, 0o500):
        left = _remove(scratch)
    assert left is not None and str(scratch) in left and "EACCES" in left


def test_bus_socket_not_there_or_unreachable_is_no_bus(tmp_path: Path) -> None:
    from rootless.doctor.session import _is_socket

    assert not _is_socket(str(tmp_path / "bus"))                            # ENOENT
    (tmp_path / "file").write_text("")
    assert not _is_socket(str(tmp_path / "file" / "bus"))                   # ENOTDIR
    locked = tmp_path / "locked"
    locked.mkdir()
    with mode(locked, 0):
        assert not _is_socket(str(locked / "bus"))                          # EACCES


# -- cgroups (a plain directory stands in for the cgroup tree: the same errnos come back) ----
def dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_controllers_of_a_cgroup_not_visible_here_are_none_but_unreadable_is_an_error(
        tmp_path: Path) -> None:
    from rootless.cgroups import _controllers
    from rootless.errors import CgroupError

    assert _controllers(str(tmp_path / "not-mounted-here")) == set()   # ENOENT
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    assert _controllers(str(tmp_path)) == {"memory", "pids"}
    with mode(tmp_path / "cgroup.controllers", 0), \
            pytest.raises(CgroupError, match=r"cgroup.controllers: .*\(EACCES\)"):
        _controllers(str(tmp_path))


def test_stale_cgroup_sweep_logs_what_it_cannot_remove(tmp_path: Path) -> None:
    from rootless.cgroups import remove_stale

    pid = dead_pid()
    populated = tmp_path / f"rl-0123456789ab-{pid}"
    populated.mkdir()
    (populated / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    odd = tmp_path / f"rl-ba9876543210-{pid}"
    odd.mkdir()
    (odd / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    lines: list[str] = []
    remove_stale(str(tmp_path), lines.append)
    # A plain directory keeps its files, so rmdir says ENOTEMPTY: not an errno a cgroup
    # gives (EBUSY), so it is said, not skipped. The populated one is left alone, quietly.
    assert lines == [f"cgroup: cannot remove stale {odd}: Directory not empty (ENOTEMPTY)"]
    assert populated.exists()


def test_stale_cgroup_sweep_of_a_base_that_is_gone_is_quiet(tmp_path: Path) -> None:
    from rootless.cgroups import remove_stale

    lines: list[str] = []
    remove_stale(str(tmp_path / "gone"), lines.append)
    assert lines == []
    (tmp_path / "file").write_text("")
    remove_stale(str(tmp_path / "file"), lines.append)                     # ENOTDIR
    assert lines == [f"cgroup: cannot list {tmp_path / 'file'} for stale cgroups:"
                     " Not a directory (ENOTDIR)"]


def test_oom_count_without_memory_controller_is_quiet_but_unreadable_is_logged(
        tmp_path: Path) -> None:
    from rootless.cgroups import ContainerCgroup, Where

    lines: list[str] = []
    cg = ContainerCgroup(Where(str(tmp_path), "current", None, set()), "rl-x", [], "x" * 64,
                         "enabled", lines.append)
    cg.path = str(tmp_path)
    assert not cg.oom_killed() and lines == []                            # ENOENT
    (tmp_path / "memory.events").mkdir()
    assert not cg.oom_killed()                                             # EISDIR
    assert lines == [f"cgroup: cannot read {tmp_path}/memory.events: Is a directory (EISDIR);"
                     " an OOM kill would not be reported"]


# -- runtime: closing descriptors, flattening layers -----------------------------------------
def test_closing_by_range_reaches_descriptors_above_1024() -> None:
    """The fallback when /proc is not mounted (ENOENT) used to close 3..1023 only."""
    import resource

    from rootless.runtime.proc import close_range_except

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need(hard > 1200, f"RLIMIT_NOFILE hard limit {hard} leaves no room above 1024")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1300, hard))
            high = os.dup2(w, 1200)
            kept = os.dup2(w, 1100)
            close_range_except({0, 1, 2, kept})
            try:
                os.fstat(high)
            except OSError as exc:
                code = 0 if exc.errno == errno.EBADF else 2
            os.fstat(kept)
        finally:
            os._exit(code)
    os.close(r)
    os.close(w)
    assert os.waitpid(pid, 0)[1] == 0


def test_opaque_marker_read_failures_are_not_taken_for_no_marker(tmp_path: Path) -> None:
    from rootless.runtime.flatten import OPAQUE_XATTR, _is_opaque

    plain = tmp_path / "plain"
    plain.mkdir()
    assert not _is_opaque(str(plain))                                    # ENODATA
    opaque = tmp_path / "opaque"
    opaque.mkdir()
    os.setxattr(opaque, OPAQUE_XATTR, b"y")
    assert _is_opaque(str(opaque))
    # Before: False, so the files a layer hid came back in the flattened copy.
    with mode(opaque, 0), pytest.raises(PermissionError):
        _is_opaque(str(opaque))


def test_flatten_does_not_skip_a_directory_it_cannot_read(tmp_path: Path) -> None:
    from rootless.runtime.flatten import flatten_layers

    layer = tmp_path / "layer"
    (layer / "etc" / "secret").mkdir(parents=True)
    (layer / "etc" / "secret" / "key").write_text("k")
    dest = tmp_path / "dest"
    dest.mkdir()
    # Before: os.walk dropped the EACCES and the copy silently lacked etc/secret/key.
    with mode(layer / "etc" / "secret", 0), pytest.raises(PermissionError):
        flatten_layers([str(layer)], str(dest))
