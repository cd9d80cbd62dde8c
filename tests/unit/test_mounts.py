"""The mount plan (pure data) and how it is applied, with a recording libc seam."""

from __future__ import annotations

import errno
import os

import pytest

from rootless.kernel import constants as k
from rootless.primitives.mounts import MountFailure, apply_plan, secure_join
from rootless.runtime.mounts import plan_mounts
from rootless.spec import Volume


def plan(**kw):
    args = dict(host_network=False, volumes=[], etc_files={"/etc/hosts": "/h"}, gid_5_mapped=True,
                read_only=False, read_only_tmpfs=True)
    args.update(kw)
    return plan_mounts(**args)


def test_proc_comes_first_and_devpts_is_a_new_instance():
    ops = plan()
    assert ops[0].fstype == "proc" and ops[0].target == "/proc"
    pts = next(o for o in ops if o.target == "/dev/pts")
    assert "newinstance" in pts.data and "gid=5" in pts.data
    assert "gid=5" not in next(o for o in plan(gid_5_mapped=False) if o.target == "/dev/pts").data


def test_sysfs_is_read_only_and_bound_with_the_host_network():
    sys_op = next(o for o in plan() if o.target == "/sys")
    assert sys_op.kind == "mount" and sys_op.flags & k.MS_RDONLY
    sys_op = next(o for o in plan(host_network=True) if o.target == "/sys")
    assert sys_op.kind == "bind" and sys_op.flags & k.MS_RDONLY


def test_every_mount_but_the_rootfs_is_nosuid():
    for op in plan(volumes=[Volume(kind="bind", source="/tmp", destination="/data")]):
        if op.kind in ("mount", "bind"):
            assert op.flags & k.MS_NOSUID, op.describe()


def test_read_only_adds_tmpfs_on_scratch_dirs():
    targets = [o.target for o in plan(read_only=True)]
    assert {"/tmp", "/var/tmp", "/run"} <= set(targets)
    assert "/tmp" not in [o.target for o in plan(read_only=True, read_only_tmpfs=False)]


def test_volumes_come_after_the_system_mounts():
    ops = plan(volumes=[Volume(kind="bind", source="/tmp", destination="/proc/x", readonly=True)])
    assert ops[-1].target == "/proc/x" and ops[-1].flags & k.MS_RDONLY


def test_describe_is_readable():
    assert plan()[0].describe() == "mount proc on /proc (nosuid,nodev,noexec)"


def test_secure_join_keeps_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/../../../../etc/passwd", root / "etc" / "hosts")
    os.symlink("../../..", root / "data")
    os.symlink("loop", root / "loop")
    assert secure_join(str(root), "/etc/hosts") == str(root / "etc" / "passwd")
    assert secure_join(str(root), "/data/x") == str(root / "x")
    assert secure_join(str(root), "/../../a") == str(root / "a")
    with pytest.raises(OSError):
        secure_join(str(root), "/loop")


class Recorder:
    def __init__(self):
        self.calls = []

    def mount(self, source, target, fstype, flags=0, data=None):
        self.calls.append(("mount", source, str(target), fstype, flags, data))


def test_apply_creates_mount_points_inside_the_root_in_plan_order(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/../outside", root / "etc")  # a hostile image: /etc points out of the root
    lib = Recorder()
    apply_plan(str(root), plan(), lib)
    assert not (tmp_path / "outside").exists()
    assert (root / "outside" / "hosts").is_file()  # resolved inside the root
    targets = [c[2] for c in lib.calls]
    assert targets[0] == str(root / "proc")
    assert all(t.startswith(str(root)) for t in targets)
    assert os.path.islink(root / "dev" / "ptmx")


def test_overlay_lowers_top_first_each_once() -> None:
    from rootless.runtime.rootfs import overlay_lowers

    assert overlay_lowers(["a", "b", "c"]) == ["c", "b", "a"]
    # one layer twice (two RUNs that changed nothing): overlayfs would refuse it (ELOOP)
    assert overlay_lowers(["a", "e", "e", "b", "a"]) == ["a", "b", "e"]


class Refuser(Recorder):
    """A libc whose mount of one target fails with one errno."""

    def __init__(self, target: str, err: int):
        super().__init__()
        self.target, self.err = target, err

    def mount(self, source, target, fstype, flags=0, data=None):
        if str(target).endswith(self.target):
            raise OSError(self.err, os.strerror(self.err))
        super().mount(source, target, fstype, flags, data)


def _masked_plan(root):
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "keys").write_text("")
    return plan(masked=["/proc/keys"], readonly_paths=[])


@pytest.mark.parametrize(("err", "skipped"), [(errno.ENOENT, True), (errno.EPERM, False),
                                              (errno.EACCES, False)])
def test_a_mask_fails_the_run_unless_the_path_is_gone(tmp_path, err, skipped):
    # A mask that silently failed would leave the path readable: only ENOENT skips it.
    root = tmp_path / "root"
    lines = []
    steps = _masked_plan(root)
    lib = Refuser("/proc/keys", err)
    if skipped:
        apply_plan(str(root), steps, lib, log=lines.append)
        assert any(line.startswith("skipped: mask /proc/keys") and errno.errorcode[err] in line
                   for line in lines), lines
    else:
        with pytest.raises(MountFailure, match="mask /proc/keys"):
            apply_plan(str(root), steps, lib, log=lines.append)


@pytest.mark.parametrize(("err", "skipped"), [(errno.ENODEV, True), (errno.EPERM, True),
                                              (errno.EINVAL, False)])
def test_mqueue_is_skipped_only_where_the_kernel_lacks_or_refuses_it(tmp_path, err, skipped):
    root = tmp_path / "root"
    root.mkdir()
    lib = Refuser("/dev/mqueue", err)
    if skipped:
        apply_plan(str(root), plan(), lib)
    else:
        with pytest.raises(MountFailure, match="mqueue"):
            apply_plan(str(root), plan(), lib)
