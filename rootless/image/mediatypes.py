"""Media types of OCI and Docker v2 images, and what each one means for rl.

A layer's compression is decided by its descriptor's mediaType, never by sniffing its bytes:
the digest covers the compressed bytes as the registry named them, and a registry (or an
attacker) must not be able to steer which decompressor runs on them.
"""

from __future__ import annotations

from rootless.errors import ImageError

# OCI image spec (image-spec/media-types.md)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# Deprecated by image-spec 1.1 but still found in the wild (Windows base layers).
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2, schema 2 (distribution/docs/spec/manifest-v2-2.md)
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# Schema 1: signed, v1-style config per layer. Gone from Docker Hub since 2020; refused.
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})

# What rl sends as Accept when it asks a registry for a manifest. Schema 1 is listed so that
# a registry holding only schema 1 answers with it and rl can say so, instead of a 404.
MANIFEST_ACCEPT: tuple[str, ...] = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)

COMPRESSION_NONE = "none"
COMPRESSION_GZIP = "gzip"
COMPRESSION_ZSTD = "zstd"

_LAYER_COMPRESSION = {
    OCI_LAYER_TAR: COMPRESSION_NONE,
    OCI_LAYER_GZIP: COMPRESSION_GZIP,
    OCI_LAYER_ZSTD: COMPRESSION_ZSTD,
    OCI_LAYER_NONDIST_TAR: COMPRESSION_NONE,
    OCI_LAYER_NONDIST_GZIP: COMPRESSION_GZIP,
    OCI_LAYER_NONDIST_ZSTD: COMPRESSION_ZSTD,
    DOCKER_LAYER_GZIP: COMPRESSION_GZIP,
    DOCKER_LAYER_TAR: COMPRESSION_NONE,
    DOCKER_FOREIGN_LAYER_GZIP: COMPRESSION_GZIP,
}

LAYER_TYPES = frozenset(_LAYER_COMPRESSION)


def layer_compression(media_type: str) -> str:
    """COMPRESSION_NONE, _GZIP or _ZSTD for a layer media type; ImageError for any other."""
    try:
        return _LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ImageError(
            f"unsupported layer media type: {media_type!r}",
            "rl unpacks OCI and Docker layers that are tar, tar+gzip or tar+zstd",
        ) from None


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def refuse_schema1(media_type: str, name: str) -> None:
    """Raise the clear error for a schema 1 manifest; return for any other type."""
    if media_type in SCHEMA1_TYPES:
        raise ImageError(
            f"{name} uses Docker image manifest schema 1, which rl does not support",
            "push the image again with a current docker, podman or skopeo (schema 2 or OCI)",
        )
