"""The working directory, with podman 4.3's rules (measured on this host, runc):

- an image's WorkingDir that its layers lack is created, mode 0755, the last component owned
  by the container's user (also with --read-only: it exists before the command starts);
- an explicit `-w` must exist in the container: `Error: workdir "/a/b" does not exist`, 126;
  an existing non-directory is refused as well;
- except under a volume, where the runtime creates it (as the container's root).

The directory is created inside the container's own root, after pivot_root: a symlink in the
image cannot send it to the host.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.conftest import run_image as run

pytestmark = pytest.mark.integration

ESCAPE = "/tmp/rl-workdir-escape"  # workdir-link: /srv -> /tmp, WorkingDir /srv/rl-workdir-escape/deep

SHOW = "pwd; id -u; stat -c '%a %u:%g %n' /srv/app /srv/app/deep"


def test_missing_image_workdir_is_created_for_the_images_user(rl, image):
    r = run(rl, image("workdir"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/srv/app/deep", "1000"]
    r = run(rl, image("workdir"), "sh", "-c", SHOW)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/srv/app/deep", "1000", "755 0:0 /srv/app",
                                     "755 1000:1000 /srv/app/deep"]


def test_missing_image_workdir_with_user_root_and_a_strict_umask(rl, image):
    # The umask of the user's shell must not make the created parents untraversable.
    r = subprocess.run(["sh", "-c", 'umask 077; exec "$0" "$@"', rl.exe, "run", "--rm",
                        "--network", "none", "--tls-verify=false", "-u", "0", image("workdir"),
                        "sh", "-c", SHOW], env=rl.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/srv/app/deep", "0", "755 0:0 /srv/app",
                                     "755 0:0 /srv/app/deep"]


def test_missing_image_workdir_with_a_read_only_rootfs(rl, image):
    r = run(rl, "--read-only", image("workdir"), "sh", "-c", "pwd; touch x")
    assert r.stdout.strip() == "/srv/app/deep", r.stderr
    assert "Read-only file system" in r.stderr


def test_image_workdir_through_an_absolute_symlink_stays_in_the_container(rl, image):
    # Resolved on the host, /srv -> /tmp would create the host's /tmp/rl-workdir-escape.
    assert not os.path.lexists(ESCAPE)
    r = run(rl, image("workdir-link"), "sh", "-c", f"pwd; ls -d {ESCAPE}/deep")
    assert r.returncode == 0, r.stderr
    # pwd shows the physical path: the shell starts without $PWD.
    assert r.stdout.split() == [f"{ESCAPE}/deep", f"{ESCAPE}/deep"]
    assert not os.path.lexists(ESCAPE)


def test_explicit_missing_workdir_is_an_error_126_as_in_podman(rl, image):
    r = run(rl, "-w", "/no/such/dir", image("workdir"), "true")
    assert r.returncode == 126, r.stderr
    assert 'workdir "/no/such/dir" does not exist in the container' in r.stderr


def test_explicit_workdir_that_is_a_file_is_an_error_126(rl, image):
    r = run(rl, "-w", "/etc/passwd", image("workdir"), "true")
    assert r.returncode == 126, r.stderr
    assert 'workdir "/etc/passwd" is not a directory' in r.stderr


def test_rootfs_explicit_missing_workdir_is_126_and_the_rootfs_is_untouched(rl, busybox_rootfs):
    before = sorted(os.listdir(busybox_rootfs))
    r = rl("run", "--rm", "--network", "none", "-w", "/a/b", "--rootfs", str(busybox_rootfs), "pwd")
    assert r.returncode == 126, r.stderr
    assert 'workdir "/a/b" does not exist in the container' in r.stderr
    assert sorted(os.listdir(busybox_rootfs)) == before
    r = rl("run", "--rm", "--network", "none", "-w", "/etc", "--rootfs", str(busybox_rootfs), "pwd")
    assert (r.returncode, r.stdout) == (0, "/etc\n"), r.stderr


def test_rootfs_workdir_under_a_volume_is_created_there(rl, busybox_rootfs, tmp_path):
    vol = tmp_path / "vol"
    vol.mkdir()
    # A symlink inside the volume to an absolute path: followed inside the container only.
    os.symlink("/tmp", vol / "link")
    r = rl("run", "--rm", "--network", "none", "-v", f"{vol}:/src", "-w", "/src/sub/dir",
           "--rootfs", str(busybox_rootfs), "sh", "-c", "pwd; stat -c '%a %u' .")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/src/sub/dir", "755", "0"]
    assert (vol / "sub" / "dir").is_dir()
    assert (vol / "sub" / "dir").stat().st_uid == os.getuid()  # the container's root is us
    assert not os.path.lexists(ESCAPE)
    r = rl("run", "--rm", "--network", "none", "-v", f"{vol}:/src", "-w", "/src/link/rl-workdir-escape",
           "--rootfs", str(busybox_rootfs), "sh", "-c", f"pwd; ls -d {ESCAPE}")
    assert r.stdout.split() == [ESCAPE, ESCAPE], r.stderr
    assert not os.path.lexists(ESCAPE)


def test_image_workdir_through_a_dangling_symlink_is_an_error_126(rl, busybox_rootfs, tmp_path):
    # As `mkdir -p` and podman: a dangling symlink on the way is not followed to create its
    # target; here it is a -w below a volume, pointing at a host directory that does exist.
    vol, host_dir = tmp_path / "vol", tmp_path / "host-dir"
    vol.mkdir()
    host_dir.mkdir()
    os.symlink(str(host_dir), vol / "link")
    r = rl("run", "--rm", "--network", "none", "-v", f"{vol}:/src", "-w", "/src/link/x",
           "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 126, r.stderr
    assert 'create workdir "/src/link/x"' in r.stderr
    assert list(host_dir.iterdir()) == []
