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
