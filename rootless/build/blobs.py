"""Compressed blobs for layers rl build made: packed from the layer directory in the store
when something needs them, not when the step ran.

A built image's manifest names each of its own layers by its uncompressed tar (media type
`…layer.v1.tar`, digest = diff_id) until a compressed blob exists, as podman's local
images do; `rl push` and `rl save` call ensure_blobs() first, which packs the missing
blobs (gzip unless told otherwise), rewrites the manifest with them and records the image
under it. The tar is written by the same sorted walk as the step's digest, so the blob's
tar is checked against the diff_id it must have.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rootless.errors import ImageError


def pack_blobs(sandbox: Any, store: Any, tmp_dir: str, diff_ids: list[str], fmt: str,
               epoch: int | None) -> list[dict[str, Any]]:
    """Descriptors of new compressed blobs of these layers (packed as root in the build's
    user namespace, where the layer's files show their image owners)."""
    from rootless.build.layer import pack_layer

    jobs = [(d, str(store.layer_dir(d)), os.path.join(tmp_dir, f"pack-{os.urandom(6).hex()}"))
            for d in diff_ids]

    def pack() -> list[Any]:
        out: list[Any] = []
        for diff_id, tree, tmp in jobs:
            try:
                blob = pack_layer(tree, tmp, fmt=fmt, epoch=epoch)
                if blob.diff_id != diff_id:
                    return [f"the layer {diff_id} packs as {blob.diff_id} now"]
                store.adopt_blob(tmp, blob.digest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            out.append(blob.descriptor())
        return out

    os.makedirs(tmp_dir, exist_ok=True)
    made: list[Any] = sandbox.as_root(pack, "rl:[layers]", mount_ns=False)
    if made and isinstance(made[0], str):
        raise ImageError(made[0], "rl builder prune, then build the image again")
    return made


def uncompressed(store: Any, diff_id: str) -> dict[str, Any]:
    """The descriptor of a layer by its tar alone (no blob stored yet)."""
    from rootless.image import mediatypes as mt

    return {"mediaType": mt.OCI_LAYER_TAR, "digest": diff_id, "size": store.layer_size(diff_id)}


def ensure_blobs(store: Any, paths: Any, name: str, fmt: str = "gzip") -> None:
    """Make the compressed blobs an image built here still lacks, and record the image under
    a manifest that names them (its names move there; its ID, the config, stays)."""
    found = store.lookup(name)
    if found is None:
        return  # the caller says "image not known"
    image = found[0]
    missing = [i for i, desc in enumerate(image.layers) if not store.has_blob(desc["digest"])]
    if not missing:
        return
    for i in missing:
        diff_id = image.diff_ids[i]
        if image.layers[i]["digest"] != diff_id or not store.has_layer(diff_id):
            raise ImageError(f"the blob of layer {diff_id} is missing from the store",
                             "pull or build the image again")
    from rootless.build.worktree import Sandbox

    with store.using():
        made = pack_blobs(Sandbox(), store, str(paths.tmp), [image.diff_ids[i] for i in missing],
                          fmt, None)
        layers = list(image.layers)
        for i, desc in zip(missing, made, strict=True):
            layers[i] = desc
        with store.open_blob(image.manifest_digest) as f:
            manifest = json.loads(f.read())
        manifest["layers"] = layers
        body = json.dumps(manifest, separators=(",", ":")).encode()
        digest = store.write_blob_bytes(body).name
        store.add_image(manifest_digest=f"sha256:{digest}", config_digest=image.id,
                        config=image.config, names=image.names, layers=layers,
                        media_type=image.media_type)
        store.forget_image(image.manifest_digest)
