"""Manifest and index parsing, media types and platform selection, without a registry."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from rootless.errors import ImageError, UsageError
from rootless.image import mediatypes as mt
from rootless.image.manifest import (
    Descriptor,
    Platform,
    host_platform,
    parse_index,
    parse_manifest,
    parse_platform,
    select_platform,
    validate_config,
)


def digest(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def manifest(
    media_type: str = mt.OCI_MANIFEST,
    config_type: str = mt.OCI_CONFIG,
    layer_types: tuple[str, ...] = (mt.OCI_LAYER_GZIP,),
    **extra: Any,
) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": digest("config"), "size": 6},
        "layers": [
            {"mediaType": t, "digest": digest(f"layer{i}"), "size": 100 + i}
            for i, t in enumerate(layer_types)
        ],
    }
    body.update(extra)
    return json.dumps(body).encode()


def index(*platforms: dict[str, str] | None, media_type: str = mt.OCI_INDEX) -> bytes:
    items = []
    for i, platform in enumerate(platforms):
        item: dict[str, Any] = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": digest(f"m{i}"),
            "size": 500 + i,
        }
        if platform is not None:
            item["platform"] = platform
        items.append(item)
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": items}).encode()


# media types -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("media_type", "compression"),
    [
        (mt.OCI_LAYER_GZIP, "gzip"),
        (mt.OCI_LAYER_ZSTD, "zstd"),
        (mt.OCI_LAYER_TAR, "none"),
        (mt.DOCKER_LAYER_GZIP, "gzip"),
        (mt.DOCKER_FOREIGN_LAYER_GZIP, "gzip"),
        (mt.OCI_LAYER_NONDIST_ZSTD, "zstd"),
    ],
)
def test_layer_compression_comes_from_the_media_type(media_type: str, compression: str) -> None:
    assert mt.layer_compression(media_type) == compression


def test_unknown_layer_media_type_is_refused() -> None:
    with pytest.raises(ImageError, match="unsupported layer media type"):
        mt.layer_compression("application/vnd.oci.image.layer.v1.tar+bzip2")


# manifests ---------------------------------------------------------------------------------
def test_parse_oci_manifest() -> None:
    config, layers = parse_manifest(
        manifest(layer_types=(mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD)), mt.OCI_MANIFEST
    )
    assert config == Descriptor(mt.OCI_CONFIG, digest("config"), 6)
    assert [(d.media_type, d.size) for d in layers] == [
        (mt.OCI_LAYER_GZIP, 100),
        (mt.OCI_LAYER_ZSTD, 101),
    ]


def test_parse_docker_schema2_manifest() -> None:
    body = manifest(mt.DOCKER_MANIFEST, mt.DOCKER_CONFIG, (mt.DOCKER_LAYER_GZIP,) * 3)
    config, layers = parse_manifest(body, mt.DOCKER_MANIFEST)
    assert config.media_type == mt.DOCKER_CONFIG
    assert len(layers) == 3


def test_schema1_gets_a_clear_error() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(ImageError, match="schema 1") as info:
        parse_manifest(body, mt.DOCKER_SCHEMA1_SIGNED, "docker.io/library/old:1")
    assert "docker.io/library/old:1" in info.value.message
    assert info.value.hint


def test_unknown_manifest_type_is_refused() -> None:
    with pytest.raises(ImageError, match="unsupported manifest media type"):
        parse_manifest(manifest(), "application/vnd.example+json")


def test_artifact_config_type_is_not_an_image() -> None:
    with pytest.raises(ImageError, match="not a container image"):
        parse_manifest(
            manifest(config_type="application/vnd.cncf.helm.config.v1+json"), mt.OCI_MANIFEST
        )


def test_declared_media_type_must_match_the_served_one() -> None:
    with pytest.raises(ImageError, match="declares mediaType"):
        parse_manifest(manifest(mt.DOCKER_MANIFEST), mt.OCI_MANIFEST)


def test_media_type_field_may_be_absent_in_oci() -> None:
    body = json.loads(manifest())
    del body["mediaType"]
    config, layers = parse_manifest(json.dumps(body).encode(), mt.OCI_MANIFEST)
    assert len(layers) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m["layers"][0].update(digest="sha256:abc"), "64 lowercase hex"),
        (lambda m: m["layers"][0].update(size=-1), "no valid size"),
        (lambda m: m["layers"][0].update(size="12"), "no valid size"),
        (lambda m: m["layers"][0].update(size=True), "no valid size"),
        (lambda m: m["layers"][0].pop("mediaType"), "no mediaType"),
        (lambda m: m["layers"][0].update(mediaType="text/plain"), "unsupported layer media type"),
        (lambda m: m.pop("layers"), "no layers list"),
        (lambda m: m.pop("config"), "not a JSON object"),
        (lambda m: m.update(schemaVersion=3), "schemaVersion"),
    ],
)
def test_malformed_manifests_are_refused(mutate: Any, message: str) -> None:
    body = json.loads(manifest())
    mutate(body)
    with pytest.raises(ImageError, match=message):
        parse_manifest(json.dumps(body).encode(), mt.OCI_MANIFEST)


def test_not_json_is_refused() -> None:
    with pytest.raises(ImageError, match="not valid JSON"):
        parse_manifest(b"<html>", mt.OCI_MANIFEST)
    with pytest.raises(ImageError, match="not a JSON object"):
        parse_manifest(b"[]", mt.OCI_MANIFEST)


# indexes and platforms ---------------------------------------------------------------------
AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARM64_NOVARIANT = {"os": "linux", "architecture": "arm64"}
ARMV7 = {"os": "linux", "architecture": "arm", "variant": "v7"}
ARMV6 = {"os": "linux", "architecture": "arm", "variant": "v6"}
UNKNOWN = {"os": "unknown", "architecture": "unknown"}
WINDOWS = {"os": "windows", "architecture": "amd64"}


def test_parse_index_and_docker_manifest_list() -> None:
    for media_type in (mt.OCI_INDEX, mt.DOCKER_MANIFEST_LIST):
        entries = parse_index(index(AMD64, ARM64, media_type=media_type), media_type)
        assert [e.platform for e in entries] == [AMD64, ARM64]


def test_parse_index_refuses_a_manifest() -> None:
    with pytest.raises(ImageError, match="not an image index"):
        parse_index(manifest(), mt.OCI_MANIFEST)


@pytest.mark.parametrize(
    ("platforms", "wanted", "chosen"),
    [
        ((AMD64, ARM64), Platform("linux", "amd64"), 0),
        ((AMD64, ARM64), Platform("linux", "arm64"), 1),  # arm64 means arm64/v8
        ((AMD64, ARM64_NOVARIANT), Platform("linux", "arm64", "v8"), 1),
        ((AMD64, ARM64), Platform("linux", "aarch64"), 1),  # uname spelling
        ((UNKNOWN, AMD64), Platform("linux", "x86_64"), 1),  # attestations never match
        ((WINDOWS, AMD64), Platform("linux", "amd64"), 1),
        ((ARMV6, ARMV7), Platform("linux", "arm", "v7"), 1),
        ((ARMV6, ARMV7), Platform("linux", "arm"), 1),  # arm defaults to v7
        (
            ({"os": "linux", "architecture": "amd64", "variant": "v3"}, AMD64),
            Platform("linux", "amd64"),
            1,
        ),
        (
            ({"os": "linux", "architecture": "amd64", "variant": "v3"},),
            Platform("linux", "amd64"),
            0,
        ),
    ],
)
def test_platform_selection(
    platforms: tuple[dict[str, str], ...], wanted: Platform, chosen: int
) -> None:
    entries = parse_index(index(*platforms), mt.OCI_INDEX)
    assert select_platform(entries, wanted, "img") == entries[chosen]


def test_no_matching_platform_lists_what_is_available() -> None:
    entries = parse_index(index(AMD64, ARM64, UNKNOWN, None), mt.OCI_INDEX)
    with pytest.raises(ImageError) as info:
        select_platform(entries, Platform("linux", "riscv64"), "quay.io/x/y:1")
    message = info.value.message
    assert "linux/riscv64" in message and "quay.io/x/y:1" in message
    assert "linux/amd64, linux/arm64/v8" in message
    assert "unknown" not in message
    assert "--platform" in (info.value.hint or "")


def test_parse_platform() -> None:
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert parse_platform("linux/amd64") == Platform("linux", "amd64", None)
    assert str(parse_platform("Linux/ARM/v7")) == "linux/arm/v7"
    for bad in ("linux", "linux/", "/amd64", "a/b/c/d", ""):
        with pytest.raises(UsageError, match="OS/ARCH"):
            parse_platform(bad)


def test_host_platform_is_normalised() -> None:
    host = host_platform()
    assert host.os == "linux"
    assert host.architecture not in ("x86_64", "aarch64")
    assert host == host.normalized() or host.architecture == "arm"


# config ------------------------------------------------------------------------------------
def config(diff_ids: list[str], **extra: Any) -> bytes:
    return json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}, **extra}).encode()


def test_config_needs_one_diff_id_per_layer() -> None:
    ids = [digest("a"), digest("b")]
    assert validate_config(config(ids), 2, "img")["rootfs"]["diff_ids"] == ids
    with pytest.raises(ImageError, match="2 diff_ids for 3 layers"):
        validate_config(config(ids), 3, "img")
    with pytest.raises(ImageError, match="no rootfs.diff_ids"):
        validate_config(b"{}", 0, "img")
    with pytest.raises(ImageError, match="bad diff_id"):
        validate_config(config(["sha256:short"]), 1, "img")
    with pytest.raises(ImageError, match="not valid JSON"):
        validate_config(b"{", 1, "img")
