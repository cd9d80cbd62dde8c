"""Where the container's root comes from: a plain directory (`--rootfs DIR`) or an image's
layers in the store. Either way it becomes one overlay mount whose upper/work live in the
container's storage, so the source is never modified and nothing is copied."""

from __future__ import annotations

import os

from rootless.errors import UsageError
from rootless.paths import Paths
from rootless.spec import RunSpec

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class RootfsSource:
    """The lower layers of the overlay and the run defaults that come with them."""

    __slots__ = ("lower_dirs", "chdir", "command", "env", "workdir", "user", "image_name",
                 "image_id", "stop_signal", "exposed_ports")

    def __init__(self, **kw: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, kw.get(name))

    def mount_data(self, dirs: Any) -> dict[str, Any]:
        lowers = ":".join(overlay_lowers(self.lower_dirs))
        options = (f"lowerdir={lowers},upperdir={dirs.upper},workdir={dirs.work},userxattr")
        return {"type": "overlay", "options": options, "chdir": self.chdir or "/",
                "lowers": list(self.lower_dirs), "flat": os.path.join(dirs.root, "flat"),
                "upper": dirs.upper, "work": dirs.work}


def overlay_lowers(bottom_to_top: list[str]) -> list[str]:
    """overlay's lowerdir order (the top layer first), each directory once. overlayfs refuses
    a lower directory given twice (ELOOP), and an image may hold one layer twice (two RUNs
    that changed nothing). Dropping the lower copy changes nothing: the upper copy shows the
    same files, whiteouts and opaque directories, above all that the lower one was under."""
    seen: set[str] = set()
    out = []
    for path in reversed(bottom_to_top):
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def _check_overlay_path(path: str) -> None:
    # ',' separates mount options and ':' lower directories: the kernel's parser would split
    # such a path (overlayfs(5)).
    if "," in path or ":" in path:
        raise UsageError(f"rootfs path {path!r} contains ',' or ':', which overlayfs cannot take",
                         hint="move or link the directory to a path without those characters")


def resolve(spec: RunSpec, paths: Paths, log: Any) -> RootfsSource:
    if spec.rootfs:
        path = os.path.abspath(spec.rootfs)
        if not os.path.isdir(path):
            raise UsageError(f"rootfs {spec.rootfs!r}: no such directory",
                             hint="give the path of a directory holding a root filesystem")
        _check_overlay_path(path)
        return RootfsSource(lower_dirs=[path], chdir="/", command=list(spec.command),
                            env=[], workdir=None, user=None, image_name=None, image_id=None)
    if not spec.image:
        raise UsageError("an image or --rootfs DIR is required", hint="rl run [OPTIONS] IMAGE [COMMAND...]")
    return image_source(spec, paths, log)


def image_source(spec: RunSpec, paths: Paths, log: Any) -> RootfsSource:
    from rootless.image.config import image_run_config, resolve_command
    from rootless.image.store import Store

    store = Store(paths)
    names = [spec.image]
    insecure: list[str] = []
    if os.path.exists(paths.config_file_path):
        from rootless.config import load_config
        from rootless.image.pull import short_name_candidates

        config = load_config(paths)
        insecure = list(config.insecure_registries)
        names = short_name_candidates(spec.image, config.search_registries)
    image = None
    if spec.pull in ("missing", "never") and not spec.platform:
        # The common case: the image is here. Reading the store directly keeps the pull
        # machinery (HTTP client, threads) off the start-up path.
        image = next((found for found in map(store.get_image, names) if found), None)
    if image is None:
        image = _pull_first(names, spec, paths, store, insecure)
    log(f"image {image.id[:19]} with {len(image.diff_ids)} layers")
    cfg = image_run_config(image.config)
    command = resolve_command(cfg, spec.entrypoint, list(spec.command))
    return RootfsSource(
        lower_dirs=list(image.layer_links(store)),
        chdir=paths.layers_dir,
        command=command,
        env=list(cfg.env),
        workdir=cfg.workdir or None,
        user=cfg.user or None,
        image_name=spec.image,
        image_id=image.id,
        stop_signal=cfg.stop_signal,
        exposed_ports=list(cfg.exposed_ports),
    )


def _pull_first(names: list[str], spec: RunSpec, paths: Paths, store: Any,
                insecure: list[str]) -> Any:
    """ensure_image for the first short-name candidate that a registry knows."""
    from rootless.errors import ImageError
    from rootless.image.pull import ensure_image

    last: ImageError | None = None
    for name in names:
        try:
            return ensure_image(name, paths=paths, store=store, pull_policy=spec.pull,
                                platform=spec.platform, tls_verify=spec.tls_verify,
                                quiet=spec.quiet, insecure_registries=insecure)
        except ImageError as exc:  # not there (or not reachable): try the next registry
            last = exc
    assert last is not None
    raise last
