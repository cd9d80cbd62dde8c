"""The last fallback for the rootfs: a flattened copy of the layers, when the kernel refuses
overlayfs (kernels before 5.11 have no `userxattr`; some storage filesystems cannot hold an
overlay upper directory). Slower to start and not shared, so rl says when it uses it.

Runs in PID 1, root in the user namespace, so owners of subordinate ids are kept (lchown).
Layers are applied bottom to top, reading overlay's own markers that the store wrote: a 0:0
character device is a whiteout (delete the name), `user.overlay.opaque` on a directory hides
what lower layers put in it.
"""

from __future__ import annotations

import errno
import os
import stat

OPAQUE_XATTR = "user.overlay.opaque"


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as exc:
        # ENODATA: no marker. ENOTSUP: the store's filesystem has no user xattrs, so it holds
        # no markers at all. Anything else (EACCES) must not pass for "not opaque": the
        # files a layer hid would come back.
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
        return False


def _raise(exc: OSError) -> None:
    raise exc


def _remove(path: str) -> None:
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def flatten_layers(lower_dirs: list[str], dest: str) -> None:
    """Copy lower_dirs (bottom first) into dest, applying whiteouts and opaque markers."""
    import shutil

    dir_modes: dict[str, int] = {}  # the upper layer's mode wins
    for layer in lower_dirs:
        # os.walk skips a directory it cannot list unless told otherwise: a copy missing
        # files would be a wrong image, so that is an error.
        for root, dirs, files in os.walk(layer, onerror=_raise):
            rel = os.path.relpath(root, layer)
            target_dir = dest if rel == "." else os.path.join(dest, rel)
            if rel != "." and _is_opaque(root):
                for name in os.listdir(target_dir):
                    _remove(os.path.join(target_dir, name))
            for name in dirs + files:
                src = os.path.join(root, name)
                dst = os.path.join(target_dir, name)
                st = os.lstat(src)
                if _is_whiteout(st):
                    _remove(dst)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if os.path.lexists(dst) and not os.path.isdir(dst):
                        _remove(dst)
                    if not os.path.lexists(dst):
                        os.mkdir(dst, 0o700)
                    # Directory modes last: a read-only directory must still take its children.
                    dir_modes[dst] = stat.S_IMODE(st.st_mode)
                else:
                    if os.path.lexists(dst):
                        _remove(dst)
                    if stat.S_ISLNK(st.st_mode):
                        os.symlink(os.readlink(src), dst)
                    elif stat.S_ISREG(st.st_mode):
                        shutil.copyfile(src, dst, follow_symlinks=False)
                        os.chmod(dst, stat.S_IMODE(st.st_mode))
                    else:
                        continue
                os.lchown(dst, st.st_uid, st.st_gid)
    for path, mode in dir_modes.items():
        if os.path.isdir(path):  # an upper layer's whiteout or opaque marker may have removed it
            os.chmod(path, mode)
