"""A stage's working tree: the layers so far (read-only) and an upper directory that collects
what the next steps change, mounted only inside the build's user namespace.

    build/<build id>/<n>/upper   the changes: becomes the next layer (overlay's format already)
    build/<build id>/<n>/work    overlayfs's work directory
    build/<build id>/<n>/merged  the mount point (inside a private mount namespace only)

`as_root(fn)` runs fn as root of a new user namespace with the build's id mapping and a
private mount namespace, and hands fn's JSON-able result back. COPY and ADD run there
without a container; RUN is a launch (rootless.build.run) on the same directories.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from typing import Any

from rootless.errors import RlError, SetupError
from rootless.runtime.storage import ContainerDirs


class Sandbox:
    """Runs functions as root in the build's user namespace (one id mapping per build)."""

    def __init__(self) -> None:
        from rootless.primitives.userns import default_mapping

        self.mapping, self.helpers = default_mapping()

    def as_root(self, fn: Callable[[], Any], name: str = "rl:[build]", *,
                mount_ns: bool = True) -> Any:
        from rootless.primitives.userns import run_in_userns

        r, w = os.pipe()

        def child() -> None:
            os.close(r)
            if mount_ns:
                from rootless.kernel import constants as k
                from rootless.kernel import libc

                lib = libc()
                lib.unshare(k.CLONE_NEWNS)
                # mounts made here never propagate to the host (mount_namespaces(7))
                lib.mount(None, "/", None, k.MS_REC | k.MS_PRIVATE)
            result = fn()
            with os.fdopen(w, "w") as out:
                out.write(json.dumps(result))

        try:
            run_in_userns(child, mapping=self.mapping, helpers=self.helpers, name=name)
            os.close(w)
            with os.fdopen(r) as f:
                data = f.read()
        except BaseException:
            for fd in (r, w):
                try:
                    os.close(fd)
                except OSError as exc:
                    if exc.errno != errno.EBADF:  # closed already on the way here
                        raise
            raise
        return json.loads(data) if data else None


class WorkTree:
    """Lower layers (store-relative links, bottom to top) and the directories of one step."""

    def __init__(self, root: str, layers_dir: str, lowers: list[str], empty_dir: str) -> None:
        self.dirs = ContainerDirs(root)
        self.layers_dir = layers_dir
        self.lowers = list(lowers)
        self.empty_dir = empty_dir

    @property
    def root(self) -> str:
        return self.dirs.root

    def create(self) -> None:
        self.dirs.create()

    def overlay_options(self, upper: bool = True) -> str:
        """Options for mount(2) with cwd = the layer store (relative names keep them short).
        overlay needs two lower directories when there is no upper one, so an empty
        directory is always the bottom lower (and the only one for FROM scratch)."""
        from rootless.runtime.rootfs import overlay_lowers

        lowers = [*overlay_lowers(self.lowers), os.path.relpath(self.empty_dir, self.layers_dir)]
        opts = "lowerdir=" + ":".join(lowers)
        if upper:
            opts += f",upperdir={self.dirs.upper},workdir={self.dirs.work}"
        return opts + ",userxattr"

    def mount(self, target: str | None = None, *, upper: bool = True) -> str:
        """Mount the merged view (inside the sandbox); returns the mount point."""
        from rootless.kernel import libc

        target = target or self.dirs.merged
        cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.chdir(self.layers_dir)
            libc().mount("overlay", target, "overlay", 0, self.overlay_options(upper))
        except OSError as exc:
            raise SetupError(f"mounting the build's overlay on {target}: {exc.strerror}",
                             "see 'rl doctor overlay'") from None
        finally:
            os.fchdir(cwd)
            os.close(cwd)
        return target


def upper_is_empty(upper: str) -> bool:
    try:
        with os.scandir(upper) as it:
            return next(it, None) is None
    except FileNotFoundError:
        return True


def raise_as_build_error(exc: RlError, step: str) -> RlError:
    exc.message = f"{step}: {exc.message}"
    return exc
