"""Image reference parsing, checked against what podman and docker do with the same names."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rootless.errors import UsageError
from rootless.image.reference import Reference, parse_reference

D = "sha256:" + "0123456789abcdef" * 4

VALID = [
    ("alpine", "docker.io/library/alpine:latest"),
    ("alpine:3.19", "docker.io/library/alpine:3.19"),
    ("library/alpine", "docker.io/library/alpine:latest"),
    ("docker.io/alpine", "docker.io/library/alpine:latest"),
    ("index.docker.io/library/alpine:edge", "docker.io/library/alpine:edge"),
    ("registry-1.docker.io/user/app", "docker.io/user/app:latest"),
    ("user/app:1.2", "docker.io/user/app:1.2"),
    ("user/my_app-x.y__z:v1.2-rc_3", "docker.io/user/my_app-x.y__z:v1.2-rc_3"),
    ("quay.io/podman/hello", "quay.io/podman/hello:latest"),
    ("registry.example.com:5000/team/app@" + D, "registry.example.com:5000/team/app@" + D),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/app:dev", "localhost:5000/app:dev"),
    ("127.0.0.1:5000/rltest/busybox", "127.0.0.1:5000/rltest/busybox:latest"),
    ("app:1@" + D, "docker.io/library/app:1@" + D),
    ("alpine@" + D, "docker.io/library/alpine@" + D),
    ("a/b/c/d", "docker.io/a/b/c/d:latest"),
    ("ghcr.io/a/b/c:TAG_with.Upper", "ghcr.io/a/b/c:TAG_with.Upper"),
    ("[::1]:5000/app", "[::1]:5000/app:latest"),
    ("my-registry/app", "docker.io/my-registry/app:latest"),  # no '.', ':' or localhost: a path
    ("localhost:5000", "docker.io/library/localhost:5000"),  # docker reads this as name:tag
]

INVALID = [
    ("", "empty"),
    ("Alpine", "lowercase"),
    ("docker.io/Library/alpine", "lowercase"),
    ("alpine:", "empty tag"),
    ("alpine@", "empty digest"),
    ("alpine@sha256:abc", "64 lowercase hex"),
    ("alpine@sha256:" + "A" * 64, "64 lowercase hex"),
    ("alpine@md5:" + "a" * 32, "unsupported algorithm"),
    ("alpine@" + "a" * 64, "ALGORITHM:HEX"),
    ("alpine:-tag", "invalid tag"),
    ("alpine:" + "t" * 129, "invalid tag"),
    ("alpine:ta/g", "bad registry name"),  # the colon makes "alpine:ta" a registry
    ("a//b", "empty path component"),
    ("/alpine", "empty"),
    ("alpine/", "empty path component"),
    ("-alpine", "invalid name component"),
    ("alp$ine", "invalid name component"),
    ("alp ine", "whitespace"),
    ("https://quay.io/podman/hello", "URL scheme"),
    ("-bad.example.com/app", "bad registry name"),
    ("quay.io/", "empty"),
    ("x/" + "a" * 260, "longer than 255"),
]


@pytest.mark.parametrize(("text", "canonical"), VALID)
def test_valid_references_normalise_like_podman(text: str, canonical: str) -> None:
    assert str(parse_reference(text)) == canonical


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_references_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(text)
    assert reason in info.value.message
    assert info.value.exit_code == 125


def test_fields_and_api_registry() -> None:
    ref = parse_reference("alpine")
    assert ref == Reference("docker.io", "library/alpine", "latest", None)
    assert ref.api_registry == "registry-1.docker.io"
    assert ref.manifest_reference == "latest"
    local = parse_reference("localhost:5000/team/app:1@" + D)
    assert (local.registry, local.repository, local.tag, local.digest) == (
        "localhost:5000",
        "team/app",
        "1",
        D,
    )
    assert local.api_registry == "localhost:5000"
    assert local.manifest_reference == D  # the digest wins over the tag
    assert local.name == "localhost:5000/team/app"


def test_digest_only_has_no_tag() -> None:
    ref = parse_reference("alpine@" + D)
    assert ref.tag is None and ref.digest == D


def test_sha512_digest_accepted() -> None:
    digest = "sha512:" + "ab" * 64
    assert parse_reference("alpine@" + digest).digest == digest


def test_default_registry_for_short_names() -> None:
    ref = parse_reference("app", default_registry="registry.example.com")
    assert str(ref) == "registry.example.com/app:latest"  # library/ is Docker Hub's alone
    assert str(parse_reference("quay.io/x/y", default_registry="registry.example.com")) == (
        "quay.io/x/y:latest"
    )


def test_reference_is_hashable_and_frozen() -> None:
    ref = parse_reference("alpine")
    assert {ref: 1}[parse_reference("docker.io/library/alpine:latest")] == 1
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]


def test_importing_reference_is_cheap() -> None:
    code = (
        "import sys; import rootless.image.reference; "
        "heavy = {'httpx', 'rich', 'zstandard', 'typer', 'json'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
