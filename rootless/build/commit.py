"""`rl commit CONTAINER [IMAGE]`: a container's upper directory as a new layer on its image.

The upper directory is packed as a build step's is (rootless.build.layer, in the user
namespace, whiteouts converted), skipping the files rl created as mount points; the blob is
then unpacked into a layer of its own, so the container keeps its storage untouched. --change
takes the Dockerfile instructions podman accepts there (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR), applied as a build would apply them.
"""

from __future__ import annotations

import os
from typing import Any

from rootless.build import imageconfig as ic
from rootless.build.errors import BuildError
from rootless.errors import ImageError

CHANGE_INSTRUCTIONS = frozenset({"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD",
                                 "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
MOUNT_POINTS = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc", "/sys", "/dev")


def commit_container(paths: Any, container: Any, name: str | None, changes: list[str],
                     message: str | None, author: str | None) -> Any:
    from rootless.build.args import ArgScope
    from rootless.build.builder import Builder, BuildOptions, StageState, mount_point_leftovers
    from rootless.build.layer import pack_layer
    from rootless.build.parser import parse_instruction
    from rootless.image.pull import LayerJob, unpack_layers
    from rootless.image.store import Store

    store = Store(paths)
    image_id = container.config.get("image_id")
    base = store.get_image(image_id) if image_id else None
    if base is None:
        raise ImageError(f"container {container.name}: its image is not in the store",
                         "rl commit works on containers run from an image")
    root = os.path.join(paths.containers_dir, container.cid)
    upper = os.path.join(root, "upper")
    lowers = [os.path.join(paths.layers_dir, link) for link in base.layer_links(store)]
    builder = Builder(BuildOptions(containerfile="", tags=[name] if name else []), paths)
    builder.opts.quiet = True
    config = ic.from_base(base.config)
    state = StageState(stage=None, config=config,  # type: ignore[arg-type]
                       layers=[{"diff_id": d, "descriptor": base.layers[i]}
                               for i, d in enumerate(base.diff_ids)],
                       args=ArgScope({}, {}, set()), key="", shell=list(ic.DEFAULT_SHELL))
    for text in changes:
        ins = parse_instruction(text, "--change", 1)
        if ins.cmd not in CHANGE_INSTRUCTIONS:
            raise BuildError(f"--change {text!r}: {ins.cmd} is not allowed here")
        builder.execute(state, ins)
    store.ensure_dirs()
    tmp = os.path.join(paths.data_dir, "tmp", f"commit-{os.urandom(6).hex()}")

    def pack() -> dict[str, Any]:
        # the mount points rl run made must not become part of the image; they stay in the
        # container's own upper directory, which commit leaves as it is
        skip = mount_point_leftovers(upper, lowers, list(MOUNT_POINTS))
        blob = pack_layer(upper, tmp, skip=set(skip))
        store.adopt_blob(tmp, blob.digest)
        return {"diff_id": blob.diff_id, "descriptor": blob.descriptor(),
                "tar_size": blob.tar_size}

    with store.using():
        layer = builder.get_sandbox().as_root(pack, "rl:[commit]", mount_ns=False)
        desc = layer["descriptor"]
        if not store.has_layer(layer["diff_id"]):
            unpack_layers(store, [LayerJob(layer["diff_id"], desc["digest"], "gzip",
                                           desc["size"])])
        created = builder.now()
        state.layers.append({"diff_id": layer["diff_id"], "descriptor": desc})
        ic.add_layer(state.config, layer["diff_id"])
        ic.add_history(state.config, created, f"rl commit {container.name}", False,
                       comment=message)
        if author:
            state.config["author"] = author
        image = builder.commit_image(state)
    return image
