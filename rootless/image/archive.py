"""`rl load` and `rl save`: images as docker-archive tars and OCI image layouts.

    docker-archive   `docker save` / `podman save`: manifest.json [{Config, RepoTags, Layers}],
                     the config JSON, one (usually uncompressed) tar per layer
    oci-archive/dir  OCI image layout (image-spec/image-layout.md): oci-layout, index.json,
                     blobs/sha256/<hex>; names in the org.opencontainers.image.ref.name
                     annotation (containerd adds io.containerd.image.name)

Loading copies every blob into the store (verifying digests the layout names), unpacks new
layers in the user namespace exactly as a pull does, and records the image. A docker-archive
layer has no media type, so its compression is recognised by its magic bytes: the file is
the user's own, not a registry's answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rootless.errors import ImageError, UsageError
from rootless.image import mediatypes as mt
from rootless.image.store import LocalImage, Store, digest_hex

MAX_JSON = 16 << 20
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"


class _Source:
    """Files of an archive: a directory (OCI layout) or a tar (either format)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if not path.is_dir():
            try:
                self.tar = tarfile.open(path, "r:*")
            except (tarfile.TarError, OSError) as exc:
                raise ImageError(f"reading archive {path}: {exc}") from None
            for m in self.tar.getmembers():
                self.members[os.path.normpath(m.name).lstrip("/")] = m

    def exists(self, name: str) -> bool:
        name = os.path.normpath(name)
        if self.tar is None:
            return _inside(self.path, name).is_file()
        return name in self.members

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        name = os.path.normpath(name)
        if self.tar is None:
            with open(_inside(self.path, name), "rb") as f:
                yield f
            return
        member = self.members.get(name)
        # follow hard and symbolic links inside the archive (docker-archive uses them)
        for _ in range(8):
            if member is None or not (member.islnk() or member.issym()):
                break
            target = member.linkname if member.islnk() else os.path.join(
                os.path.dirname(name), member.linkname)
            member = self.members.get(os.path.normpath(target).lstrip("/"))
        if member is None or not member.isfile():
            raise ImageError(f"archive {self.path} has no file {name!r}")
        f = self.tar.extractfile(member)
        assert f is not None
        yield f

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise ImageError(f"{name} in {self.path} is too large")
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ImageError(f"{name} in {self.path} is not valid JSON: {exc}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()


def _inside(root: Path, name: str) -> Path:
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise ImageError(f"archive path {name!r} points outside the archive")
    return root / name


def _sniff_compression(f: IO[bytes]) -> str:
    head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return mt.COMPRESSION_GZIP
    if head == b"\x28\xb5\x2f\xfd":
        return mt.COMPRESSION_ZSTD
    return mt.COMPRESSION_NONE


def load_archive(path: str, *, store: Store, quiet: bool = False) -> list[LocalImage]:
    """Load every image of a docker-archive or OCI layout (tar or directory); '-' is stdin."""
    from rootless.image.reference import parse_reference

    tmpfile: str | None = None
    if path in ("-", ""):
        store.ensure_dirs()
        fd, tmpfile = tempfile.mkstemp(dir=store.paths.tmp, prefix="load-")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        src_path = Path(tmpfile)
    else:
        src_path = Path(path)
        if not src_path.exists():
            raise UsageError(f"{path}: no such file or directory")
    src = _Source(src_path)
    try:
        store.ensure_dirs()
        with store.using():
            if src.exists("manifest.json"):
                entries = _docker_entries(src, store)
            elif src.exists("index.json"):
                entries = _oci_entries(src, store)
            else:
                raise ImageError(
                    f"{path} is neither a docker-archive nor an OCI image layout",
                    "rl load reads 'docker save' / 'podman save' tars and OCI layouts",
                )
            from rootless.image.pull import LayerJob, unpack_layers

            jobs: dict[str, LayerJob] = {}
            for entry in entries:
                for diff_id, desc, compression in entry["layers"]:
                    if not store.has_layer(diff_id):
                        jobs.setdefault(diff_id, LayerJob(diff_id, desc["digest"], compression,
                                                          desc["size"]))
            unpack_layers(store, list(jobs.values()))
            images = []
            for entry in entries:
                names = []
                for name in entry["names"]:
                    try:
                        names.append(str(parse_reference(name)))
                    except UsageError:
                        continue
                images.append(store.add_image(
                    manifest_digest=entry["manifest_digest"], config_digest=entry["config_digest"],
                    config=entry["config"], names=names,
                    layers=[desc for _, desc, _ in entry["layers"]],
                    media_type=entry["media_type"],
                ))
            return images
    finally:
        src.close()
        if tmpfile:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmpfile)


def _config_entry(store: Store, src: _Source, config_bytes: bytes) -> tuple[str, dict[str, Any]]:
    config_digest = store.write_blob_bytes(config_bytes).name
    config = json.loads(config_bytes)
    if not isinstance(config, dict) or not isinstance(config.get("rootfs", {}).get("diff_ids"),
                                                       list):
        raise ImageError(f"archive {src.path}: an image config has no rootfs.diff_ids")
    return f"sha256:{config_digest}", config


def _docker_entries(src: _Source, store: Store) -> list[dict[str, Any]]:
    manifest = src.read_json("manifest.json")
    if not isinstance(manifest, list):
        raise ImageError(f"archive {src.path}: manifest.json is not a list")
    out = []
    for item in manifest:
        with src.open(item["Config"]) as f:
            config_bytes = f.read(MAX_JSON)
        config_digest, config = _config_entry(store, src, config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(item.get("Layers", [])):
            raise ImageError(f"archive {src.path}: the config lists {len(diff_ids)} layers, "
                             f"manifest.json {len(item.get('Layers', []))}")
        layers = []
        for diff_id, layer_path in zip(diff_ids, item["Layers"], strict=True):
            with src.open(layer_path) as f:
                compression = _sniff_compression(f)
            with src.open(layer_path) as f:
                digest, size = store.import_blob(f)
            media = {mt.COMPRESSION_GZIP: mt.DOCKER_LAYER_GZIP,
                     mt.COMPRESSION_ZSTD: mt.OCI_LAYER_ZSTD}.get(compression, mt.DOCKER_LAYER_TAR)
            layers.append((diff_id, {"mediaType": media, "digest": digest, "size": size},
                           compression))
        body = json.dumps({
            "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": [desc for _, desc, _ in layers],
        }, indent=3).encode()
        manifest_digest = f"sha256:{store.write_blob_bytes(body).name}"
        out.append({"names": list(item.get("RepoTags") or []), "config": config,
                    "config_digest": config_digest, "manifest_digest": manifest_digest,
                    "layers": layers, "media_type": mt.DOCKER_MANIFEST})
    return out


def _oci_entries(src: _Source, store: Store) -> list[dict[str, Any]]:
    from rootless.image.manifest import (
        host_platform,
        parse_index,
        parse_manifest,
        select_platform,
    )

    index = src.read_json("index.json")
    out = []
    for desc in index.get("manifests", []):
        annotations = desc.get("annotations") or {}
        name = annotations.get(CONTAINERD_NAME) or annotations.get(REF_NAME) or ""
        digest, media_type = desc["digest"], desc.get("mediaType", mt.OCI_MANIFEST)
        body = _blob_bytes(src, digest)
        if mt.is_index(media_type):
            chosen = select_platform(parse_index(body, media_type), host_platform(), str(src.path))
            digest, media_type = chosen.digest, chosen.media_type
            body = _blob_bytes(src, digest)
        store.write_blob_bytes(body, digest)
        config_desc, layer_descs = parse_manifest(body, media_type, str(src.path))
        config_bytes = _blob_bytes(src, config_desc.digest)
        config_digest, config = _config_entry(store, src, config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
        if len(diff_ids) != len(layer_descs):
            raise ImageError(f"archive {src.path}: {digest} has {len(layer_descs)} layers but "
                             f"its config lists {len(diff_ids)}")
        layers = []
        for diff_id, ld in zip(diff_ids, layer_descs, strict=True):
            compression = mt.layer_compression(ld.media_type)
            if not store.has_blob(ld.digest):
                with src.open(f"blobs/sha256/{digest_hex(ld.digest)}") as f:
                    store.import_blob(f, expected=ld.digest)
            layers.append((diff_id, {"mediaType": ld.media_type, "digest": ld.digest,
                                     "size": ld.size}, compression))
        names = [name] if (":" in name or "/" in name) else []
        out.append({"names": names, "config": config, "config_digest": config_digest,
                    "manifest_digest": digest, "layers": layers, "media_type": media_type})
    return out


def _blob_bytes(src: _Source, digest: str) -> bytes:
    with src.open(f"blobs/sha256/{digest_hex(digest)}") as f:
        data = f.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise ImageError(f"archive {src.path}: {digest} is too large for a manifest or config")
    if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
        raise ImageError(f"archive {src.path}: {digest} does not match its digest")
    return data


# -- save ----------------------------------------------------------------------------------
def save_archive(image: LocalImage, output: str, *, store: Store, fmt: str = "docker-archive",
                 name: str | None = None) -> None:
    """Write image to output as docker-archive or oci-archive (atomically: temp + rename)."""
    if fmt not in ("docker-archive", "oci-archive"):
        raise UsageError(f"unsupported --format {fmt!r}", "use docker-archive or oci-archive")
    out_path = Path(output)
    tmp = out_path.with_name(f".{out_path.name}.rl-{os.getpid()}")
    names = [name] if name else image.names
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            if fmt == "docker-archive":
                _save_docker(tar, image, store, names)
            else:
                _save_oci(tar, image, store, names)
        os.replace(tmp, out_path)
    except OSError as exc:
        from rootless.errors import describe_oserror

        raise ImageError(describe_oserror(f"writing {output}", exc)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _layer_desc(image: LocalImage, store: Store, i: int) -> dict[str, Any]:
    desc = image.layers[i] if i < len(image.layers) else None
    if desc is None or not store.has_blob(desc["digest"]):
        desc = store.find_layer_blob(image.diff_ids[i])
    if desc is None:
        raise ImageError(f"the compressed blob of layer {image.diff_ids[i]} is not in the store",
                         "pull the image again, then save it")
    return desc


def _save_docker(tar: tarfile.TarFile, image: LocalImage, store: Store, names: list[str]) -> None:
    from rootless.image.unpack import open_decompressed

    config_name = f"{digest_hex(image.id)}.json"
    with store.open_blob(image.id) as f:
        _add_bytes(tar, config_name, f.read())
    layer_paths = []
    for i, diff_id in enumerate(image.diff_ids):
        desc = _layer_desc(image, store, i)
        layer_path = f"{digest_hex(diff_id)}/layer.tar"
        if layer_path in layer_paths:
            continue
        compression = mt.layer_compression(desc["mediaType"])
        size = store.layer_size(diff_id)
        # docker-archive layers are uncompressed; the size is needed before the data
        if not size:
            with store.open_blob(desc["digest"]) as raw:
                reader = open_decompressed(raw, compression)
                while chunk := reader.read(1 << 20):
                    size += len(chunk)
        info = tarfile.TarInfo(layer_path)
        info.size = size
        info.mode = 0o644
        with store.open_blob(desc["digest"]) as raw:
            tar.addfile(info, open_decompressed(raw, compression))
        layer_paths.append(layer_path)
    manifest = [{"Config": config_name, "RepoTags": [_docker_tag(n) for n in names],
                 "Layers": [f"{digest_hex(d)}/layer.tar" for d in image.diff_ids]}]
    _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())


def _docker_tag(name: str) -> str:
    """docker's RepoTags drop docker.io/library/ (docker load expects short names)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _save_oci(tar: tarfile.TarFile, image: LocalImage, store: Store, names: list[str]) -> None:
    _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    blobs = [image.manifest_digest, image.id]
    # the manifest names exact blobs: no substitute from another image will do here
    blobs += [layer["digest"] for layer in image.layers]
    seen = set()
    for digest in blobs:
        if digest in seen:
            continue
        seen.add(digest)
        path = store.blob_path(digest)
        if not path.is_file():
            raise ImageError(f"blob {digest} is not in the store", "pull the image again")
        tar.add(str(path), f"blobs/sha256/{digest_hex(digest)}", recursive=False)
    with store.open_blob(image.manifest_digest) as f:
        size = len(f.read())
    manifests = []
    for n in names or [""]:
        desc: dict[str, Any] = {"mediaType": image.media_type or mt.OCI_MANIFEST,
                                "digest": image.manifest_digest, "size": size}
        if n:
            desc["annotations"] = {REF_NAME: n, CONTAINERD_NAME: n}
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    _add_bytes(tar, "index.json", json.dumps(index).encode())
