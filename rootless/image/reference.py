"""Image references: parse and normalise names the way docker and podman do.

    alpine                         -> docker.io/library/alpine:latest
    user/app:1.2                   -> docker.io/user/app:1.2
    registry.example.com:5000/a/b  -> registry.example.com:5000/a/b:latest
    localhost/app@sha256:<hex>     -> localhost/app@sha256:<hex>
    app:1@sha256:<hex>             -> docker.io/library/app:1@sha256:<hex> (both kept)

The grammar is distribution's reference grammar (distribution/reference/regexp.go): the first
path component is a registry when it has a '.' or a ':', is 'localhost', or has an uppercase
letter; otherwise the name is a short name on the default registry. This module runs on every
`rl run IMAGE`, so it imports nothing heavy.
"""

from __future__ import annotations

import re
from collections import namedtuple

from rootless.errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
# Digest algorithms rl can verify, and the length of their hex encodings.
_DIGEST_HEX_LEN = {"sha256": 64, "sha512": 128}
_NAME_MAX = 255


class Reference(namedtuple("Reference", "registry repository tag digest")):
    """registry/repository[:tag][@digest]. A named tuple: frozen, hashable and cheap to import
    (a dataclass would pull `dataclasses` into every `rl run IMAGE`)."""

    __slots__ = ()
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_registry(self) -> str:
        """The host:port the registry API answers on (Docker Hub's differs from its name)."""
        return api_host(self.registry)

    @property
    def manifest_reference(self) -> str:
        """What goes after /manifests/: the digest when there is one, else the tag."""
        if self.digest is not None:
            return self.digest
        assert self.tag is not None
        return self.tag

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)


def api_host(registry: str) -> str:
    """`registry-1.docker.io` for Docker Hub's names, the registry itself otherwise."""
    return DOCKER_HUB_API if registry in _DOCKER_HUB_ALIASES else registry


def normalize_registry(registry: str) -> str:
    """`docker.io` for Docker Hub's aliases, the registry itself otherwise."""
    return DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry


def validate_digest(digest: str) -> str:
    """Return `digest` when it is `sha256:<64 hex>` or `sha512:<128 hex>`; UsageError else."""
    algorithm, sep, encoded = digest.partition(":")
    if not sep:
        raise UsageError(f"invalid digest {digest!r}: expected ALGORITHM:HEX")
    expected = _DIGEST_HEX_LEN.get(algorithm)
    if expected is None:
        raise UsageError(
            f"invalid digest {digest!r}: unsupported algorithm {algorithm!r}",
            "rl verifies sha256 and sha512 digests",
        )
    if len(encoded) != expected or not all(c in "0123456789abcdef" for c in encoded):
        raise UsageError(
            f"invalid digest {digest!r}: {algorithm} needs {expected} lowercase hex digits"
        )
    return digest


def _split_registry(name: str, default_registry: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _DOMAIN_RE.fullmatch(first):
            raise UsageError(f"invalid reference {name!r}: bad registry name {first!r}")
        return normalize_registry(first), rest
    return default_registry, name


def parse_reference(text: str, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse an image reference; UsageError (exit 125) saying why when it is invalid."""
    original = text
    if not text:
        raise UsageError("invalid reference: the image name is empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise UsageError(f"invalid reference {original!r}: whitespace is not allowed")
    if "://" in text:
        raise UsageError(
            f"invalid reference {original!r}: an image name has no URL scheme",
            "write it as REGISTRY/REPOSITORY[:TAG], for example quay.io/podman/hello",
        )

    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        if not digest:
            raise UsageError(f"invalid reference {original!r}: empty digest after '@'")
        try:
            validate_digest(digest)
        except UsageError as exc:
            raise UsageError(f"invalid reference {original!r}: {exc.message}", exc.hint) from None

    tag: str | None = None
    # A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not tag:
            raise UsageError(f"invalid reference {original!r}: empty tag after ':'")
        if not _TAG_RE.fullmatch(tag):
            raise UsageError(
                f"invalid reference {original!r}: invalid tag {tag!r}",
                "a tag is up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            )

    if not text:
        raise UsageError(f"invalid reference {original!r}: the repository name is empty")
    registry, repository = _split_registry(text, default_registry)
    if not repository:
        raise UsageError(f"invalid reference {original!r}: the repository name is empty")
    for component in repository.split("/"):
        if _PATH_COMPONENT_RE.fullmatch(component):
            continue
        if component.lower() != component and _PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise UsageError(f"invalid reference {original!r}: repository name must be lowercase")
        reason = (
            "empty path component" if not component else f"invalid name component {component!r}"
        )
        raise UsageError(
            f"invalid reference {original!r}: {reason}",
            "a repository name is lowercase letters, digits and separators ('.', '_', '__', '-') between '/'",
        )
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if len(registry) + 1 + len(repository) > _NAME_MAX:
        raise UsageError(
            f"invalid reference {original!r}: the name is longer than {_NAME_MAX} characters"
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)
