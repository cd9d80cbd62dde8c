"""Bad bundles: an error naming the field, exit 1 as runc, the error in --log, and nothing left
behind (no state, no process)."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.conftest import container_processes
from tests.oci.conftest import cid

pytestmark = pytest.mark.integration


def create_fails(oci, bundle_dir, tmp_path, fmt="json"):
    name = cid()
    log = tmp_path / f"log-{name}"
    r = oci("--log", str(log), "--log-format", fmt, "create", "--bundle", str(bundle_dir), name)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("Error: "), r.stderr
    # Nothing left: no state directory, no process of that container.
    assert not (oci.root / name).exists()
    deadline = time.monotonic() + 5
    while container_processes(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container_processes(name) == []
    return r.stderr, log.read_text()


def test_malformed_config(oci, bundle, tmp_path):
    b = bundle(["true"])
    (b / "config.json").write_text('{"ociVersion": "1.0.2", "process": ')
    err, log = create_fails(oci, b, tmp_path)
    assert "config.json: not valid JSON" in err
    line = json.loads(log.splitlines()[-1])  # runc's JSON log lines, which conmon reads
    assert line["level"] == "error" and "not valid JSON" in line["msg"] and line["time"]


def test_wrong_types_are_named(oci, bundle, tmp_path):
    err, _ = create_fails(oci, bundle(["true"], lambda c: c["process"].update(args="true")),
                          tmp_path)
    assert "process.args: must be a non-empty list of strings" in err
    err, _ = create_fails(oci, bundle(["true"], lambda c: c["mounts"].append(
        {"destination": "relative", "type": "tmpfs"})), tmp_path)
    assert "mounts[" in err and "destination" in err and "not an absolute path" in err


def test_unknown_oci_version_major(oci, bundle, tmp_path):
    err, log = create_fails(oci, bundle(["true"], lambda c: c.update(ociVersion="2.0.0")),
                            tmp_path, fmt="text")
    assert "ociVersion" in err and "'2.0.0'" in err
    assert "level=error" in log and "ociVersion" in log  # logrus' text format


def test_rootfs_escaping_the_bundle_through_a_symlink(oci, bundle, tmp_path):
    b = bundle(["true"])
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (b / "rootfs").symlink_to(outside)
    config = json.loads((b / "config.json").read_text())
    config["root"] = {"path": "rootfs"}
    (b / "config.json").write_text(json.dumps(config))
    err, _ = create_fails(oci, b, tmp_path)
    assert "root.path" in err and "outside the bundle" in err


def test_namespace_of_another_users_process(oci, bundle, tmp_path):
    def join_init_net(config):
        config["linux"]["namespaces"].append({"type": "network", "path": "/proc/1/ns/net"})

    err, _ = create_fails(oci, bundle(["true"], join_init_net), tmp_path)
    assert "linux.namespaces[" in err and "/proc/1/ns/net" in err
    assert "another user's process" in err


def test_namespace_path_of_the_wrong_type(oci, bundle, tmp_path):
    def wrong(config):
        config["linux"]["namespaces"].append({"type": "network",
                                              "path": f"/proc/{os.getpid()}/ns/ipc"})

    err, _ = create_fails(oci, bundle(["true"], wrong), tmp_path)
    assert "is a ipc namespace, not a network namespace" in err


def test_hanging_hook_times_out(oci, bundle, tmp_path):
    def hanging(config):
        config["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "60"],
                                              "timeout": 1}]}

    started = time.monotonic()
    err, _ = create_fails(oci, bundle(["true"], hanging), tmp_path)
    assert time.monotonic() - started < 20
    assert "hooks.createRuntime[0]" in err and "timeout of 1 s" in err


def test_failing_prestart_hook(oci, bundle, tmp_path):
    def failing(config):
        config["hooks"] = {"prestart": [{"path": "/bin/false"}]}

    err, _ = create_fails(oci, bundle(["true"], failing), tmp_path)
    assert "hooks.prestart[0] (/bin/false) failed with exit status 1" in err


def test_missing_executable_fails_create(oci, bundle, tmp_path):
    err, _ = create_fails(oci, bundle(["no-such-program"]), tmp_path)
    assert "no-such-program" in err and "not found" in err


def test_unknown_capability_and_rlimit(oci, bundle, tmp_path):
    err, _ = create_fails(oci, bundle(["true"], lambda c: c["process"]["capabilities"][
        "bounding"].append("CAP_TEST")), tmp_path)
    assert "process.capabilities.bounding: unknown capability 'CAP_TEST'" in err
    err, _ = create_fails(oci, bundle(["true"], lambda c: c["process"]["rlimits"].append(
        {"type": "RLIMIT_TEST", "soft": 1, "hard": 1})), tmp_path)
    assert "process.rlimits[1].type" in err


def test_host_sysctl_is_refused(oci, bundle, tmp_path):
    err, _ = create_fails(oci, bundle(["true"], lambda c: c["linux"].update(
        sysctl={"vm.swappiness": "10"})), tmp_path)
    assert "linux.sysctl['vm.swappiness']" in err and "not a namespaced sysctl" in err


def test_terminal_without_console_socket(oci, bundle, tmp_path):
    err, _ = create_fails(oci, bundle(["true"], terminal=True), tmp_path)
    assert "--console-socket" in err


def test_foreign_root_directory_is_refused(oci, bundle, tmp_path):
    """A --root another user (or anyone) may write to could feed rl-oci pids to signal."""
    shared = tmp_path / "shared-root"
    shared.mkdir()
    shared.chmod(0o777)
    name = cid()
    r = oci("create", "--bundle", str(bundle(["true"])), name)  # the fixture's root: fine
    assert r.returncode == 0
    oci.root, own = shared, oci.root
    try:
        r = oci("create", "--bundle", str(bundle(["true"])), name)
        assert r.returncode == 1 and "writable by others" in r.stderr
    finally:
        oci.root = own
