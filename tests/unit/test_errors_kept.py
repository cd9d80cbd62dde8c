"""An OSError is caught only for the errno the code expects; any other becomes an error that
names the step (issue 13, item 11), in idmap/, network/, primitives/userns.py, runtime/users.py.
Each case: the expected errno still gives the quiet answer, an unexpected one does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from idmap.apply import _has_file_caps
from rootless.errors import NetworkError, RlError
from rootless.network import ipam
from rootless.network.spawn import sweep_stale, tail_log
from rootless.primitives.userns import diagnose_userns
from rootless.runtime.users import resolve_user
from tests.conftest import need


class FakePaths:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.runtime = root / "runtime"


def unreadable(path: Path) -> Path:
    path.write_text("x\n")
    path.chmod(0)
    # root reads anything: the case cannot be made (scripts/test.sh runs this as a user)
    need(not os.access(path, os.R_OK), "running as root: a mode-0 file is still readable")
    return path


def test_passwd_missing_is_no_entries_but_unreadable_is_an_error(tmp_path):
    group = tmp_path / "group"
    group.write_text("root:x:0:\n")
    assert resolve_user("4242", str(tmp_path / "none"), str(group)).home == "/"
    (tmp_path / "passwd").mkdir()  # EISDIR
    with pytest.raises(RlError, match="passwd"):
        resolve_user("4242", str(tmp_path / "passwd"), str(group))


def test_a_network_definition_missing_is_not_found_but_a_corrupt_one_is_an_error(tmp_path):
    paths = FakePaths(tmp_path)
    assert ipam.load(paths, "nope") is None
    assert ipam.listing(paths) == []
    os.makedirs(ipam.definitions_dir(paths))
    Path(ipam.definition_path(paths, "bad")).write_text("{not json")
    with pytest.raises(NetworkError, match="bad.json") as info:
        ipam.load(paths, "bad")
    assert "rl network rm bad" in (info.value.hint or "")


def test_helper_log_missing_is_empty_but_unreadable_says_so(tmp_path):
    assert tail_log(None) == "" and tail_log(str(tmp_path / "gone.log")) == ""
    assert "cannot be read" in tail_log(str(unreadable(tmp_path / "pasta-1.log")))


def test_sweep_ignores_a_missing_directory_only(tmp_path):
    sweep_stale(str(tmp_path / "missing"))
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError):
        sweep_stale(str(tmp_path / "afile"))


def test_file_capabilities_absent_is_false(tmp_path):
    plain = tmp_path / "tool"
    plain.write_text("")
    assert _has_file_caps(str(plain)) is False  # ENODATA
    with pytest.raises(FileNotFoundError):
        _has_file_caps(str(tmp_path / "missing"))


def test_userns_sysctls_missing_are_unknown_but_unreadable_is_an_error(tmp_path):
    assert diagnose_userns(str(tmp_path)) == (None, None)
    (tmp_path / "user").mkdir()
    unreadable(tmp_path / "user" / "max_user_namespaces")
    with pytest.raises(PermissionError):
        diagnose_userns(str(tmp_path))
