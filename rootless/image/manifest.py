"""Image manifests, indexes and platform selection (OCI image-spec and Docker schema 2).

`parse_manifest` and `parse_index` are pure and shared with `rl load`; `resolve_image` walks a
registry: reference -> (index -> platform's manifest) -> config, each verified by digest.
Nothing here imports the HTTP client; the RegistryClient is passed in.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rootless.errors import ImageError, UsageError
from rootless.image import mediatypes as mt
from rootless.image.reference import Reference, validate_digest

if TYPE_CHECKING:
    from rootless.image.registry import RegistryClient

MAX_CONFIG_SIZE = 4 * 1024 * 1024

# uname -m / Go GOARCH spellings -> the OCI architecture names images use.
_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "armhf": "arm",
    "armel": "arm",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "ppc64el": "ppc64le",
}
# uname -m values that carry the ARM variant.
_ARM_MACHINES = {"armv5l": "v5", "armv6l": "v6", "armv7l": "v7", "armv8l": "v7"}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, Any] | None = None
    annotations: dict[str, str] | None = field(default=None, hash=False, compare=False)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def normalized(self) -> Platform:
        """Aliases folded and default variants filled in, as containerd's platforms package does."""
        arch = _ARCH_ALIASES.get(self.architecture, self.architecture)
        variant = self.variant or None
        if arch == "arm64" and variant in (None, "8"):
            variant = "v8"
        elif arch == "arm" and variant is None:
            variant = "v7"
        elif arch == "amd64" and variant == "v1":
            variant = None
        return Platform(self.os.lower(), arch, variant)


@dataclass
class ResolvedImage:
    reference: Reference
    manifest_digest: str
    manifest: bytes
    media_type: str
    config_descriptor: Descriptor
    config: bytes
    layers: list[Descriptor]
    index: bytes | None = None
    index_digest: str | None = None
    index_media_type: str | None = None

    @property
    def config_json(self) -> dict[str, Any]:
        data = json.loads(self.config)
        assert isinstance(data, dict)
        return data

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config_json["rootfs"]["diff_ids"])


def host_platform() -> Platform:
    """The platform this machine runs natively (linux/amd64, linux/arm64/v8, linux/arm/v7...)."""
    machine = os.uname().machine
    if machine in _ARM_MACHINES:
        return Platform("linux", "arm", _ARM_MACHINES[machine])
    return Platform("linux", _ARCH_ALIASES.get(machine, machine)).normalized()


def parse_platform(text: str) -> Platform:
    """'linux/arm64/v8' -> Platform('linux', 'arm64', 'v8'); UsageError when malformed."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(
            f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]",
            "for example --platform linux/arm64 or linux/arm/v7",
        )
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def descriptor_from_json(data: object, where: str) -> Descriptor:
    """A validated descriptor; ImageError naming `where` when a field is missing or wrong."""
    if not isinstance(data, dict):
        raise ImageError(f"{where}: a descriptor is not a JSON object")
    media_type = data.get("mediaType")
    digest = data.get("digest")
    size = data.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ImageError(f"{where}: a descriptor has no mediaType")
    if not isinstance(digest, str):
        raise ImageError(f"{where}: a descriptor has no digest")
    try:
        validate_digest(digest)
    except UsageError as exc:
        raise ImageError(f"{where}: {exc.message}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{where}: descriptor {digest} has no valid size")
    platform = data.get("platform")
    annotations = data.get("annotations")
    return Descriptor(
        media_type,
        digest,
        size,
        platform if isinstance(platform, dict) else None,
        annotations if isinstance(annotations, dict) else None,
    )


def _json_object(body: bytes, prefix: str) -> dict[str, Any]:
    """A JSON object from a registry, or ImageError "<prefix>not valid JSON" / "not a JSON
    object" (a hostile or broken registry may send anything)."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ImageError(f"{prefix}not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ImageError(f"{prefix}not a JSON object")
    return data


def _load_json(body: bytes, media_type: str, where: str) -> dict[str, Any]:
    data = _json_object(body, f"{where}: ")
    declared = data.get("mediaType")
    if declared is not None and declared != media_type:
        raise ImageError(f"{where}: served as {media_type} but declares mediaType {declared}")
    if data.get("schemaVersion") != 2:
        raise ImageError(f"{where}: unsupported schemaVersion {data.get('schemaVersion')!r}")
    return data


def parse_manifest(
    body: bytes, media_type: str, where: str = "manifest"
) -> tuple[Descriptor, list[Descriptor]]:
    """(config descriptor, layer descriptors) of an OCI or Docker schema 2 image manifest."""
    mt.refuse_schema1(media_type, where)
    if not mt.is_manifest(media_type):
        raise ImageError(
            f"{where}: unsupported manifest media type {media_type!r}",
            "rl runs OCI and Docker schema 2 images",
        )
    data = _load_json(body, media_type, where)
    config = descriptor_from_json(data.get("config"), where)
    if config.media_type not in mt.CONFIG_TYPES:
        raise ImageError(
            f"{where}: not a container image (its config type is {config.media_type})",
            "this looks like an OCI artifact (a chart, signature or SBOM), which rl cannot run",
        )
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list):
        raise ImageError(f"{where}: the manifest has no layers list")
    layers = [descriptor_from_json(item, where) for item in raw_layers]
    for layer in layers:
        mt.layer_compression(layer.media_type)
    return config, layers


def parse_index(body: bytes, media_type: str, where: str = "index") -> list[Descriptor]:
    """The manifest descriptors of an OCI image index or Docker manifest list."""
    if not mt.is_index(media_type):
        raise ImageError(f"{where}: {media_type!r} is not an image index")
    data = _load_json(body, media_type, where)
    items = data.get("manifests")
    if not isinstance(items, list):
        raise ImageError(f"{where}: the index has no manifests list")
    return [descriptor_from_json(item, where) for item in items]


def descriptor_platform(descriptor: Descriptor) -> Platform | None:
    p = descriptor.platform
    if not p or not isinstance(p.get("os"), str) or not isinstance(p.get("architecture"), str):
        return None
    variant = p.get("variant")
    return Platform(p["os"], p["architecture"], variant if isinstance(variant, str) else None)


def select_platform(descriptors: list[Descriptor], wanted: Platform, where: str) -> Descriptor:
    """The index entry for `wanted`: exact variant first; with no variant asked, the entry
    without one first. Attestations (platform unknown/unknown) never match."""
    want = wanted.normalized()
    exact: list[Descriptor] = []
    loose: list[Descriptor] = []
    available: list[str] = []
    for desc in descriptors:
        platform = descriptor_platform(desc)
        if platform is None or not (
            mt.is_manifest(desc.media_type) or mt.is_index(desc.media_type)
        ):
            continue
        have = platform.normalized()
        if have.os == "unknown":
            continue
        available.append(str(have))
        if have.os != want.os or have.architecture != want.architecture:
            continue
        if have.variant == want.variant:
            exact.append(desc)
        elif want.variant is None or want.architecture == "amd64":
            loose.append(desc)
    if exact or loose:
        return (exact or loose)[0]
    listed = ", ".join(sorted(set(available))) or "none"
    raise ImageError(
        f"no image for platform {want} in {where}; it has: {listed}",
        "choose one of these with --platform OS/ARCH[/VARIANT]",
    )


def validate_config(config: bytes, layer_count: int, where: str) -> dict[str, Any]:
    """The parsed image config, refused unless rootfs.diff_ids has one entry per layer."""
    data = _json_object(config, f"{where}: the image config is ")
    rootfs = data.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list):
        raise ImageError(f"{where}: the image config has no rootfs.diff_ids")
    if isinstance(rootfs, dict) and rootfs.get("type") not in (None, "layers"):
        raise ImageError(f"{where}: unsupported rootfs type {rootfs.get('type')!r}")
    if len(diff_ids) != layer_count:
        raise ImageError(
            f"{where}: the config lists {len(diff_ids)} diff_ids for {layer_count} layers"
        )
    for diff_id in diff_ids:
        try:
            validate_digest(diff_id if isinstance(diff_id, str) else "")
        except UsageError as exc:
            raise ImageError(f"{where}: bad diff_id: {exc.message}") from None
    return data


def resolve_image(
    client: RegistryClient, ref: Reference, platform: Platform | None = None
) -> ResolvedImage:
    """Fetch and verify everything but the layers: the index (if any), the manifest for
    `platform` (the host's by default), and the config."""
    where = str(ref)
    body, media_type, digest = client.get_manifest(
        ref.repository, ref.manifest_reference, mt.MANIFEST_ACCEPT
    )
    mt.refuse_schema1(media_type, where)
    index = index_digest = index_media_type = None
    if mt.is_index(media_type):
        index, index_digest, index_media_type = body, digest, media_type
        chosen = select_platform(
            parse_index(body, media_type, where), platform or host_platform(), where
        )
        body, media_type, digest = client.get_manifest(
            ref.repository, chosen.digest, mt.MANIFEST_ACCEPT
        )
        if len(body) != chosen.size:
            raise ImageError(
                f"{where}: manifest {chosen.digest} has {len(body)} bytes, the index says {chosen.size}"
            )
        mt.refuse_schema1(media_type, where)
        if mt.is_index(media_type):
            raise ImageError(f"{where}: an index inside an index is not supported")
    config_desc, layers = parse_manifest(body, media_type, where)
    config = client.read_blob(ref.repository, config_desc.digest, config_desc.size, MAX_CONFIG_SIZE)
    validate_config(config, len(layers), where)
    return ResolvedImage(
        reference=ref,
        manifest_digest=digest,
        manifest=body,
        media_type=media_type,
        config_descriptor=config_desc,
        config=config,
        layers=layers,
        index=index,
        index_digest=index_digest,
        index_media_type=index_media_type,
    )
