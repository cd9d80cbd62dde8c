"""find_helpers and apply_mapping's error paths, with fake newuidmap/newgidmap scripts
(no privileges needed), plus the package's import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from idmap import IdMapError, apply_mapping, find_helpers, plan_mapping
from idmap import SubidRange as S

MAPPING = plan_mapping(uid=1500, gid=1500, user="alice", subuids=[S(100000, 65536)],
                       subgids=[S(200000, 10)], helpers_available=True)


def fake(tmp_path: Path, name: str, body: str, setuid: bool = True) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    # A setuid bit on our own file is harmless and makes the helper look installed.
    path.chmod(0o4755 if setuid else 0o755)
    return str(path)


def test_find_helpers_on_given_path(tmp_path: Path) -> None:
    uidmap = fake(tmp_path, "newuidmap", "exit 0")
    assert find_helpers(str(tmp_path)) is None  # newgidmap missing
    gidmap = fake(tmp_path, "newgidmap", "exit 0")
    assert find_helpers(f"/nonexistent:{tmp_path}") == (uidmap, gidmap)
    assert find_helpers("/nonexistent") is None


def test_helpers_get_pid_and_map_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    record = f'echo "$(basename "$0") $*" >> {log}'
    helpers = (fake(tmp_path, "newuidmap", record), fake(tmp_path, "newgidmap", record))
    apply_mapping(4242, MAPPING, helpers)
    assert sorted(log.read_text().splitlines()) == [
        "newgidmap 4242 0 1500 1 1 200000 10",
        "newuidmap 4242 0 1500 1 1 100000 65536",
    ]


def test_helper_failure_carries_message_status_and_range_hint(tmp_path: Path) -> None:
    helpers = (
        fake(tmp_path, "newuidmap",
             'echo "newuidmap: uid range [1-65537) -> [100000-165536) not allowed" >&2; exit 1'),
        fake(tmp_path, "newgidmap", "exit 0"),
    )
    with pytest.raises(IdMapError) as info:
        apply_mapping(4242, MAPPING, helpers)
    msg = str(info.value)
    assert msg.startswith(f"{helpers[0]} 4242 0 1500 1 1 100000 65536 failed (exit status 1): ")
    assert msg.endswith("newuidmap: uid range [1-65537) -> [100000-165536) not allowed")
    assert info.value.hint is not None and "/etc/subuid" in info.value.hint


def test_helper_not_setuid_hint(tmp_path: Path) -> None:
    helpers = (
        fake(tmp_path, "newuidmap", "exit 0"),
        fake(tmp_path, "newgidmap",
             'echo "newgidmap: write to gid_map failed: Operation not permitted" >&2; exit 1',
             setuid=False),
    )
    with pytest.raises(IdMapError, match="exit status 1.*Operation not permitted") as info:
        apply_mapping(4242, MAPPING, helpers)
    assert info.value.hint is not None
    assert f"sudo chmod u+s {helpers[1]}" in info.value.hint and "uidmap" in info.value.hint


def test_helper_killed_by_signal(tmp_path: Path) -> None:
    helpers = (fake(tmp_path, "newuidmap", "kill -9 $$"), fake(tmp_path, "newgidmap", "exit 0"))
    with pytest.raises(IdMapError, match="killed by signal 9"):
        apply_mapping(4242, MAPPING, helpers)


def test_chatty_helpers_do_not_deadlock(tmp_path: Path) -> None:
    noise = "head -c 300000 /dev/zero | tr '\\\\0' x >&2; exit 3"
    helpers = (fake(tmp_path, "newuidmap", noise), fake(tmp_path, "newgidmap", noise))
    with pytest.raises(IdMapError, match="exit status 3"):
        apply_mapping(4242, MAPPING, helpers)


def test_missing_helper_binary_after_the_other_started(tmp_path: Path) -> None:
    log = tmp_path / "log"
    helpers = (fake(tmp_path, "newuidmap", f"sleep 0.2; echo ran > {log}"),
               str(tmp_path / "absent"))
    with pytest.raises(IdMapError, match="could not start .*absent") as info:
        apply_mapping(4242, MAPPING, helpers)
    assert info.value.hint is not None and "uidmap" in info.value.hint
    assert log.read_text() == "ran\n"  # the started helper was waited for, not left behind


def test_subid_mode_without_helpers() -> None:
    with pytest.raises(IdMapError, match="newuidmap/newgidmap were not found"):
        apply_mapping(4242, MAPPING, None)


def test_single_mode_for_a_gone_process() -> None:
    single = plan_mapping(uid=1500, gid=1500, user="alice", subuids=[], subgids=[],
                          helpers_available=False)
    gone = 2**22 + 1  # above the default pid_max of 4194304
    with pytest.raises(IdMapError) as info:
        apply_mapping(gone, single, None)
    assert f"'0 1500 1' to /proc/{gone}/uid_map" in str(info.value)
    assert "(ENOENT)" in str(info.value)
    assert info.value.hint is not None and "exited" in info.value.hint


def test_import_is_standalone_and_cheap() -> None:
    code = (
        "import sys, idmap\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rootless', 'subprocess', 'shutil', 'select'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert out.stdout.strip() == ""
