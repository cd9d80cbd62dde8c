"""`rl doctor` and `rl info` as the unprivileged user: this machine's real state, and the same
machine made to look broken through RL_SYSCTL_ROOT, RL_SUBUID_FILE, PATH and XDG_RUNTIME_DIR."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rootless.doctor import CHECK_IDS
from tests.conftest import need

pytestmark = pytest.mark.integration


def doctor(rl, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    proc = rl("doctor", "--json", *args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_id(data: dict) -> dict[str, dict]:
    return {c["id"]: c for c in data["checks"]}


def test_real_host(rl) -> None:  # type: ignore[no-untyped-def]
    code, data = doctor(rl)
    checks = by_id(data)
    assert sorted(checks) == sorted(CHECK_IDS)
    for check in data["checks"]:
        assert check["status"] in ("ok", "warning", "failure") and check["found"], check
        if check["status"] != "ok":
            assert check["fix"], check
    # What rl run needs works on this machine (the rl run integration tests rely on it).
    for id in ("kernel", "userns-sysctl", "userns", "overlay", "namespaces", "runtime-dir",
               "storage"):
        assert checks[id]["status"] != "failure", checks[id]
    assert checks["userns"]["status"] == "ok"
    assert checks["overlay"]["status"] == "ok"
    assert code == 0 and data["can_run_containers"] is True
    if Path("/etc/subuid").read_text().startswith(f"{os.environ.get('USER', 'rltest')}:") or \
            "rltest:" in Path("/etc/subuid").read_text():
        assert checks["subids"]["status"] == "ok"
        assert checks["uidmap-works"]["status"] == "ok", checks["uidmap-works"]


def test_text_output_has_no_colour_when_piped(rl) -> None:  # type: ignore[no-untyped-def]
    proc = rl("doctor", "kernel", "userns")
    assert proc.returncode == 0
    assert "\033[" not in proc.stdout
    assert proc.stdout.splitlines()[0].startswith("ok") and "kernel" in proc.stdout


def test_blocked_by_sysctl_fixture(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "max_user_namespaces").write_text("0\n")
    code, data = doctor(rl, env={"RL_SYSCTL_ROOT": str(tmp_path)})
    check = by_id(data)["userns-sysctl"]
    assert check["status"] == "failure" and "max_user_namespaces is 0" in check["found"]
    assert "sudo sysctl -w user.max_user_namespaces=" in check["fix"]
    assert code == 1 and data["can_run_containers"] is False


def test_apparmor_fixture_text(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "kernel").mkdir()
    (tmp_path / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    proc = rl("doctor", "userns-sysctl", env={"RL_SYSCTL_ROOT": str(tmp_path)})
    assert proc.returncode == 1
    assert "failure  userns-sysctl" in proc.stdout and "userns," in proc.stdout
    assert "rl cannot run containers here" in proc.stdout


def test_user_without_ranges(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "subuid"
    empty.write_text("nobody-else:500000:65536\n")
    code, data = doctor(rl, "subids", "uidmap-works",
                        env={"RL_SUBUID_FILE": str(empty), "RL_SUBGID_FILE": str(empty)})
    checks = by_id(data)
    assert checks["subids"]["status"] == "warning" and "usermod --add-subuids" in checks["subids"]["fix"]
    assert checks["uidmap-works"]["status"] == "warning"
    assert code == 0  # single-id mode still runs containers


def test_missing_helpers_on_path(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # Keep rl's own interpreter reachable; leave out newuidmap/newgidmap, pasta, slirp4netns.
    code, data = doctor(rl, "uidmap", "network", "fuse", env={"PATH": str(bindir)})
    checks = by_id(data)
    assert checks["uidmap"]["status"] == "warning" and "apt install uidmap" in checks["uidmap"]["fix"]
    assert checks["network"]["status"] == "warning" and "passt" in checks["network"]["fix"]
    assert "fuse-overlayfs" in checks["fuse"]["fix"]


def test_unwritable_runtime_dir(rl, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o500)
    try:
        code, data = doctor(rl, "runtime-dir", env={"XDG_RUNTIME_DIR": str(runtime)})
    finally:
        runtime.chmod(0o700)
    check = by_id(data)["runtime-dir"]
    assert check["status"] == "failure" and "not writable" in check["found"]
    assert code == 1


def test_unknown_check_is_a_usage_error(rl) -> None:  # type: ignore[no-untyped-def]
    proc = rl("doctor", "usrns")
    assert proc.returncode == 125
    assert proc.stderr.startswith("Error: rl doctor: unknown check 'usrns'")
    assert "did you mean 'userns'?" in proc.stderr


def test_info(rl) -> None:  # type: ignore[no-untyped-def]
    proc = rl("info", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["host"]["uid"] == os.getuid()
    assert data["store"]["path"] == str(rl.data)
    assert data["idmappings"]["mode"] in ("single", "subid")
    assert data["idmappings"]["uidmap"][0].startswith(f"0 {os.getuid()} 1")
    if shutil.which("pasta"):
        assert data["network"]["pasta"]["path"]
    # The helper `rl run` uses without --network: slirp4netns first, as rl chooses it.
    from rootless.network import default_mode

    assert data["network"]["default"] == default_mode()
    text = rl("info")
    assert text.returncode == 0 and "idmappings:" in text.stdout and "store:" in text.stdout


def test_doctor_hint_names_in_rl_run_errors_exist() -> None:
    need(True, "")
    # The check names rl's own hints point at must stay valid ids.
    for name in ("userns", "userns-sysctl", "subids", "uidmap", "overlay", "delegation",
                 "tun", "network", "runtime-dir", "storage"):
        assert name in CHECK_IDS
