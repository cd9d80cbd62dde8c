"""`rl push IMAGE [DESTINATION]`: an image from the store to a registry, an OCI layout
directory (`oci:DIR[:TAG]`) or a docker-archive (`docker-archive:FILE`).

To a registry (distribution spec, "Pushing blobs" and "Pushing manifests"), per blob:
  1. HEAD /v2/<name>/blobs/<digest>: already there → skipped;
  2. a cross-repository mount when an image in the store holds the blob under another
     repository of the same registry (a built image's base, a re-tag): POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo> → 201 is done (a
     202 means the registry declined and opened an ordinary upload session instead);
  3. otherwise POST an upload session, then one PUT with the whole blob when it is small
     (monolithic), or PATCH chunks of UPLOAD_CHUNK bytes and a closing PUT ?digest=.
Blobs go up DOWNLOAD_THREADS at a time; then the config, then PUT of the manifest under
the tag. Token auth asks for `repository:<name>:pull,push` (rootless.image.registry).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from rootless.errors import ImageError, UsageError
from rootless.image.store import LocalImage, Store, digest_hex

UPLOAD_THREADS = 3
MONOLITHIC_MAX = 8 << 20
UPLOAD_CHUNK = 32 << 20


def push_image(image_name: str, destination: str | None, *, store: Store, paths: Any,
               tls_verify: bool | None = None, quiet: bool = False,
               insecure_registries: list[str] | None = None) -> str:
    """Push; returns the manifest digest written."""
    found = store.lookup(image_name)
    if found is None:
        raise ImageError(f"{image_name}: image not known")
    image, by_name = found
    dest = destination or by_name or (image.names[0] if image.names else None)
    if dest is None:
        raise UsageError(f"{image_name} has no name to push to", "give a destination")
    if dest.startswith("oci:"):
        return push_oci_dir(image, store, dest[4:], by_name)
    if dest.startswith("docker-archive:"):
        from rootless.image.archive import save_archive

        path, _, name = dest[len("docker-archive:"):].partition(":")
        save_archive(image, path, store=store, fmt="docker-archive", name=name or by_name)
        return image.manifest_digest
    if dest.startswith("docker://"):
        dest = dest[len("docker://"):]
    return push_registry(image, store, paths, dest, tls_verify=tls_verify, quiet=quiet,
                         insecure_registries=insecure_registries or [])


def _blobs(image: LocalImage, store: Store) -> list[dict[str, Any]]:
    out = []
    for i, diff_id in enumerate(image.diff_ids):
        desc = image.layers[i] if i < len(image.layers) else None
        if desc is None or not store.has_blob(desc["digest"]):
            raise ImageError(f"the blob of layer {diff_id} is not in the store",
                             "pull or build the image again")
        out.append(desc)
    return out


def push_registry(image: LocalImage, store: Store, paths: Any, dest: str, *,
                  tls_verify: bool | None, quiet: bool, insecure_registries: list[str]) -> str:
    from rootless.image.auth import find_credentials
    from rootless.image.progress import PullProgress
    from rootless.image.reference import parse_reference
    from rootless.image.registry import RegistryClient

    ref = parse_reference(dest)
    insecure = ref.registry in insecure_registries or ref.api_registry in insecure_registries
    client = RegistryClient(ref.registry, tls_verify=(not insecure) if tls_verify is None
                            else tls_verify, insecure=insecure,
                            credentials=find_credentials(ref.registry, paths, dict(os.environ)))
    progress = PullProgress(quiet=quiet)
    sources = mount_sources(store, ref.registry, ref.repository)
    try:
        progress.message("Getting image source signatures")
        layers = _blobs(image, store)
        _upload_all(client, ref.repository, store, layers, sources, progress)
        with store.open_blob(image.id) as f:
            config = f.read()
        _upload(client, ref.repository, store, {"digest": image.id, "size": len(config)},
                [], progress, quiet_blob=True)
        progress.message(f"Copying config {image.id[7:19]} done")
        with store.open_blob(image.manifest_digest) as f:
            manifest = f.read()
        progress.message("Writing manifest to image destination")
        from rootless.image import mediatypes as mt

        tag = ref.digest or ref.tag or "latest"
        digest: str = client.push_manifest(ref.repository, tag, manifest,
                                           image.media_type or mt.OCI_MANIFEST)
    finally:
        progress.finish()
        client.close()
    return digest


def mount_sources(store: Store, registry: str, repository: str) -> dict[str, list[str]]:
    """For each layer blob: the other repositories of the same registry that hold it, as far
    as the store knows (an image pulled or pushed under that name has the blob there). A
    built image's base layers so come from the base's repository by a cross-repository
    mount instead of an upload (podman keeps a blob-location cache for the same reason)."""
    from rootless.image.reference import parse_reference

    out: dict[str, list[str]] = {}
    for other in store.list_images():
        repos = []
        for name in other.names:
            try:
                ref = parse_reference(name)
            except UsageError:
                continue
            if ref.registry == registry and ref.repository != repository:
                repos.append(ref.repository)
        for desc in other.layers:
            known = out.setdefault(desc["digest"], [])
            known += [r for r in repos if r not in known]
    return out


def _upload_all(client: Any, repository: str, store: Store, layers: list[dict[str, Any]],
                sources: dict[str, list[str]], progress: Any) -> None:
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    unique = list({d["digest"]: d for d in layers}.values())
    if not unique:
        return
    with ThreadPoolExecutor(max_workers=min(UPLOAD_THREADS, len(unique)),
                            thread_name_prefix="rl-push") as pool:
        futures = [pool.submit(_upload, client, repository, store, d,
                               sources.get(d["digest"], []), progress) for d in unique]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in done:
            if f.exception() is not None:
                for other in futures:
                    other.cancel()
                raise f.exception()  # type: ignore[misc]


def _upload(client: Any, repository: str, store: Store, desc: dict[str, Any],
            mount_from: list[str], progress: Any, quiet_blob: bool = False) -> None:
    digest, size = desc["digest"], int(desc["size"])
    what = f"pushing blob {digest} to {client.registry}/{repository}"
    if client.blob_exists(repository, digest):
        if not quiet_blob:
            progress.layer_done(digest, skipped=True)
        return
    location = None
    for source in mount_from:
        response = client.request("POST", f"/v2/{repository}/blobs/uploads/?mount={digest}"
                                  f"&from={source}", repository=repository, what=what)
        if response.status_code == 201:
            response.close()
            if not quiet_blob:
                progress.layer_done(digest, skipped=True)
            return
        if response.status_code == 202:
            location = client.location(response, what)
            break
        response.close()
    if location is None:
        response = client.request("POST", f"/v2/{repository}/blobs/uploads/",
                                  repository=repository, what=what)
        if response.status_code != 202:
            raise client.fail(response, what)
        location = client.location(response, what)
    if not quiet_blob:
        progress.layer_started(digest, size)
    path = store.blob_path(digest)
    import httpx

    if size <= MONOLITHIC_MAX:
        with open(path, "rb") as f:
            body = f.read()
    else:
        offset = 0
        with open(path, "rb") as f:
            while True:
                chunk = f.read(UPLOAD_CHUNK)
                if not chunk:
                    break
                response = client.request(
                    "PATCH", location, repository=repository, what=what, content=chunk,
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + len(chunk) - 1}"})
                if response.status_code != 202:
                    raise client.fail(response, what)
                location = client.location(response, what)
                offset += len(chunk)
                if not quiet_blob:
                    progress.advance(digest, len(chunk))
        body = b""
    url = str(httpx.URL(location).copy_merge_params({"digest": digest}))
    response = client.request("PUT", url, repository=repository, what=what, content=body,
                              headers={"Content-Type": "application/octet-stream"})
    if response.status_code != 201:
        raise client.fail(response, what)
    response.close()
    if not quiet_blob:
        if body:
            progress.advance(digest, len(body))
        progress.layer_done(digest)


def push_oci_dir(image: LocalImage, store: Store, target: str, name: str | None) -> str:
    """An OCI image layout directory (image-spec/image-layout.md); TAG after a second ':'."""
    import json

    from rootless.image import mediatypes as mt

    path, _, tag = target.partition(":")
    if not path:
        raise UsageError("oci: needs a directory", "e.g. oci:/tmp/layout or oci:DIR:TAG")
    blobs_dir = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs_dir, exist_ok=True)
    digests = [image.manifest_digest, image.id] + [d["digest"] for d in _blobs(image, store)]
    for digest in digests:
        dst = os.path.join(blobs_dir, digest_hex(digest))
        if not os.path.exists(dst):
            tmp = f"{dst}.tmp-{os.getpid()}"
            shutil.copyfile(store.blob_path(digest), tmp)
            os.replace(tmp, dst)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    index_path = os.path.join(path, "index.json")
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (FileNotFoundError, ValueError):
        index = {"schemaVersion": 2, "manifests": []}
    ref_name = tag or (name.rsplit(":", 1)[-1] if name and ":" in name.rsplit("/", 1)[-1]
                       else "latest")
    with store.open_blob(image.manifest_digest) as f:
        size = len(f.read())
    entry = {"mediaType": image.media_type or mt.OCI_MANIFEST, "digest": image.manifest_digest,
             "size": size, "annotations": {"org.opencontainers.image.ref.name": ref_name}}
    index["manifests"] = [m for m in index.get("manifests", [])
                          if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name")
                          != ref_name] + [entry]
    tmp = f"{index_path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(index, f)
    os.replace(tmp, index_path)
    return image.manifest_digest
