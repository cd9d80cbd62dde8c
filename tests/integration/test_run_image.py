"""`rl run IMAGE`: pulled from a real registry, one overlay of shared layers, the image config
applied with podman's rules."""

from __future__ import annotations

import os

import pytest

from tests.conftest import need, need_tool
from tests.integration.conftest import run_image as run

pytestmark = pytest.mark.integration


def test_run_pulls_a_missing_image_and_runs_it(rl, image):
    r = run(rl, image("busybox"), "sh", "-c", "echo hello from $(hostname); cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("hello from ")
    r = rl("images", "--format", "json")
    assert image("busybox").rsplit(":", 1)[0] in r.stdout


def test_image_config_user_workdir_env_entrypoint_cmd(rl, image):
    r = run(rl, image("nonroot"))
    assert r.returncode == 0, r.stderr
    assert "from 1000:1000 in /home/user" in r.stdout
    # Arguments replace CMD and keep the ENTRYPOINT (sh -c)
    r = run(rl, image("nonroot"), "echo args replace cmd")
    assert r.stdout.strip() == "args replace cmd", r.stderr
    # --entrypoint replaces ENTRYPOINT and clears CMD
    r = run(rl, "--entrypoint", "/bin/id", image("nonroot"), "-u")
    assert r.stdout.strip() == "1000", r.stderr
    # -u and -w override the image's
    r = run(rl, "-u", "0", "-w", "/tmp", "--entrypoint", "", image("nonroot"), "sh", "-c", "id -u; pwd")
    assert r.stdout.split() == ["0", "/tmp"], r.stderr


def test_lower_layers_whiteouts_and_opaque_dirs_are_respected(rl, image):
    r = run(rl, image("multilayer"), "sh", "-c", "ls /data; ls /opaque")
    assert r.returncode == 0, r.stderr
    listing = r.stdout.split()
    assert "keep.txt" in listing and "remove-me.txt" not in listing
    assert "old.txt" not in listing and "sub" not in listing


def test_zstd_and_multiarch_images(rl, image):
    assert run(rl, image("zstd"), "true").returncode == 0
    r = run(rl, image("multiarch"))
    assert r.returncode == 0, r.stderr


def test_writes_go_to_the_container_not_the_shared_layers(rl, image):
    r = rl("run", "--network", "none", "--tls-verify=false", image("busybox"), "sh", "-c",
           "echo changed > /etc/passwd; rm /bin/ls")
    assert r.returncode == 0, r.stderr
    r = run(rl, image("busybox"), "sh", "-c", "head -1 /etc/passwd; ls / >/dev/null && echo ls-ok")
    assert r.stdout.split("\n")[0].startswith("root:"), r.stdout
    assert "ls-ok" in r.stdout


def test_pull_never_with_an_absent_image_is_125(rl, image):
    r = run(rl, "--pull", "never", image("busybox"), "true")
    assert r.returncode == 125
    assert "image not known" in r.stderr


@pytest.mark.parametrize("ref", ["Alpine", "alpine:", "alpine@sha256:abc", "team/App:1"])
def test_invalid_reference_is_125_before_any_network(rl, ref):
    r = run(rl, ref, "true")
    assert r.returncode == 125
    assert r.stderr.startswith("Error: "), r.stderr  # nothing about pulling was printed first


def test_layers_are_shared_not_copied(rl, image):
    assert run(rl, image("busybox"), "true").returncode == 0
    layers = rl.data / "layers"
    before = sorted(p.name for p in layers.iterdir())
    for _ in range(2):
        assert run(rl, image("busybox"), "true").returncode == 0
    assert sorted(p.name for p in layers.iterdir()) == before
    assert os.listdir(rl.data / "containers") == []


def test_fuse_overlayfs_fallback_when_overlay_is_refused(rl, image, busybox_rootfs):
    # RL_OVERLAY=disable makes PID 1 behave as on a kernel that refuses overlayfs.
    need_tool("fuse-overlayfs")
    need(os.access("/dev/fuse", os.R_OK | os.W_OK), "/dev/fuse is not usable (mode 0666 is udev's)")
    env = {"RL_OVERLAY": "disable"}
    r = run(rl, image("multilayer"), "sh", "-c", "ls /data; ls /opaque; echo w > /new; cat /new; "
            "grep ' / ' /proc/mounts", env=env)
    assert r.returncode == 0, r.stderr
    assert "using fuse-overlayfs" in r.stderr
    listing = r.stdout.split()
    assert "keep.txt" in listing and "remove-me.txt" not in listing and "old.txt" not in listing
    assert "w" in listing and "fuse" in r.stdout
    r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "touch /only-in-upper", env=env)
    assert r.returncode == 0, r.stderr
    assert not (busybox_rootfs / "only-in-upper").exists()
    assert os.listdir(rl.data / "containers") == []


def test_flattened_copy_fallback_when_overlay_is_refused(rl, image, busybox_rootfs):
    # RL_OVERLAY=copy: the kernel refuses overlayfs and fuse-overlayfs is not usable either.
    env = {"RL_OVERLAY": "copy"}
    r = run(rl, image("multilayer"), "sh", "-c", "ls /data; ls /opaque; echo w > /new; cat /new", env=env)
    assert r.returncode == 0, r.stderr
    assert "flattened copy" in r.stderr
    listing = r.stdout.split()
    assert "keep.txt" in listing and "remove-me.txt" not in listing and "old.txt" not in listing
    assert listing[-1] == "w"
    r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "touch /only-in-copy", env=env)
    assert r.returncode == 0, r.stderr
    assert not (busybox_rootfs / "only-in-copy").exists()
    assert os.listdir(rl.data / "containers") == []


def test_short_names_are_searched_in_the_configured_registries(rl, test_registry):
    # config.toml's [registries] search list and insecure list reach rl run and rl pull.
    config = rl.base / "config" / "rootless"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(
        "[registries]\n"
        f'search = ["127.0.0.1:1", "{test_registry.url_host}"]\n'
        f'insecure = ["127.0.0.1:1", "{test_registry.url_host}"]\n')
    r = rl("run", "--rm", "--network", "none", "rltest/busybox", "echo", "found")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "found"
    r = rl("pull", "-q", "rltest/nonroot")
    assert r.returncode == 0, r.stderr
    assert f"{test_registry.url_host}/rltest/nonroot" in rl("images").stdout
