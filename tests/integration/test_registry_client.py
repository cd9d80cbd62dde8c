"""The registry client against Debian's docker-registry (anonymous, Basic and token auth) and
against small scripted servers for what a real registry will not do on request: redirects to
another host, 5xx and 429, oversized or lying answers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry_fixtures import (  # noqa: E402
    Recorded,
    Reply,
    RunningRegistry,
    load_image_builder,
    push_test_images,
    serve_http,
    start_registry,
)

from rootless.errors import RegistryError  # noqa: E402
from rootless.image import mediatypes as mt  # noqa: E402
from rootless.image.auth import Credentials  # noqa: E402
from rootless.image.manifest import Platform, host_platform, resolve_image  # noqa: E402
from rootless.image.reference import parse_reference  # noqa: E402
from rootless.image.registry import RegistryClient, RetryPolicy  # noqa: E402

pytestmark = pytest.mark.integration


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def client_for(reg: RunningRegistry, credentials: Credentials | None = None) -> RegistryClient:
    return RegistryClient(reg.url_host, insecure=True, credentials=credentials,
                          policy=RetryPolicy(backoff=0.01))


@pytest.fixture(scope="module")
def plain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningRegistry, dict[str, str]]]:
    reg = start_registry(tmp_path_factory.mktemp("plain"), "none")
    try:
        yield reg, push_test_images(reg)
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def basic(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningRegistry, dict[str, str]]]:
    reg = start_registry(tmp_path_factory.mktemp("basic"), "basic")
    try:
        yield reg, push_test_images(reg)
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def token(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningRegistry, dict[str, str]]]:
    reg = start_registry(tmp_path_factory.mktemp("token"), "token", anonymous_pull=True)
    try:
        yield reg, push_test_images(reg)
    finally:
        reg.stop()


# manifests and images ----------------------------------------------------------------------
def test_pushed_manifests_come_back_verified(plain: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, digests = plain
    with client_for(reg) as client:
        body, media_type, digest = client.get_manifest(
            "rltest/busybox", "latest", mt.MANIFEST_ACCEPT
        )
        assert media_type == mt.DOCKER_MANIFEST
        assert digest == digests["busybox"] == sha256(body)
        again = client.get_manifest("rltest/busybox", digest, mt.MANIFEST_ACCEPT)
        assert again == (body, media_type, digest)
        _, index_type, index_digest = client.get_manifest(
            "rltest/multiarch", "latest", mt.MANIFEST_ACCEPT
        )
        assert (index_type, index_digest) == (mt.OCI_INDEX, digests["multiarch"])


@pytest.mark.parametrize(
    ("name", "layers", "compression"),
    [
        ("busybox", 1, "gzip"),
        ("multilayer", 3, "gzip"),
        ("zstd", 1, "zstd"),
        ("nonroot", 2, "gzip"),
    ],
)
def test_resolve_image(
    plain: tuple[RunningRegistry, dict[str, str]], name: str, layers: int, compression: str
) -> None:
    reg, digests = plain
    ref = parse_reference(f"{reg.url_host}/rltest/{name}")
    with client_for(reg) as client:
        image = resolve_image(client, ref)
    assert image.manifest_digest == digests[name]
    assert image.index is None
    assert len(image.layers) == len(image.diff_ids) == layers
    assert {mt.layer_compression(layer.media_type) for layer in image.layers} == {compression}
    assert sha256(image.config) == image.config_descriptor.digest
    if name == "nonroot":
        config = image.config_json["config"]
        assert (config["User"], config["WorkingDir"]) == ("1000:1000", "/home/user")


def test_resolve_multiarch_picks_the_platform(
    plain: tuple[RunningRegistry, dict[str, str]],
) -> None:
    reg, digests = plain
    ref = parse_reference(f"{reg.url_host}/rltest/multiarch:latest")
    with client_for(reg) as client:
        native = resolve_image(client, ref)
        other_arch = "arm64" if host_platform().architecture == "amd64" else "amd64"
        other = resolve_image(client, ref, Platform("linux", other_arch))
        with pytest.raises(RegistryError.__mro__[1], match="linux/amd64, linux/arm64/v8"):
            resolve_image(client, ref, Platform("linux", "s390x"))
    assert native.index_digest == other.index_digest == digests["multiarch"]
    assert native.index is not None and sha256(native.index) == digests["multiarch"]
    assert native.config_json["architecture"] == host_platform().architecture
    assert other.config_json["architecture"] == other_arch
    assert native.manifest_digest != other.manifest_digest


def test_unknown_tag_and_repository(plain: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, _ = plain
    with client_for(reg) as client:
        with pytest.raises(RegistryError) as info:
            resolve_image(client, parse_reference(f"{reg.url_host}/rltest/busybox:nope"))
        assert info.value.message == (
            f"image not known: {reg.url_host}/rltest/busybox:nope (MANIFEST_UNKNOWN)"
        )
        assert info.value.exit_code == 125
        with pytest.raises(
            RegistryError,
            match=r"image not known: .*/rltest/absent:latest \((NAME|MANIFEST)_UNKNOWN\)",
        ):
            client.get_manifest("rltest/absent", "latest", mt.MANIFEST_ACCEPT)


# blobs -------------------------------------------------------------------------------------
def test_blob_stream_and_fetch(plain: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, _ = plain
    layer = load_image_builder().build_images()["busybox"].layers[0]
    with client_for(reg) as client:
        with client.blob_stream("rltest/busybox", layer.digest, len(layer.blob)) as chunks:
            assert b"".join(chunks) == layer.blob
        out = io.BytesIO()
        client.fetch_blob("rltest/busybox", layer.digest, None, out)
        assert out.getvalue() == layer.blob
        with pytest.raises(RegistryError, match="descriptor says"):
            with client.blob_stream("rltest/busybox", layer.digest, len(layer.blob) + 1) as chunks:
                b"".join(chunks)
        with pytest.raises(RegistryError, match=r"blob not known: .* \(BLOB_UNKNOWN\)"):
            client.fetch_blob("rltest/busybox", sha256(b"absent"), None, io.BytesIO())


def test_tampered_blob_is_detected(plain: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, _ = plain
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = sha256(data)
    with client_for(reg) as client:
        client.push_blob("rltest/tamper", data, digest)
        client.push_blob("rltest/tamper", data, digest)  # exists: HEAD says so, no upload
        stored = reg.blob_path(digest)
        tampered = bytearray(stored.read_bytes())
        tampered[len(tampered) // 2] ^= 0xFF
        stored.write_bytes(bytes(tampered))
        received = bytearray()
        with pytest.raises(RegistryError, match="digest mismatch") as info:
            with client.blob_stream("rltest/tamper", digest, len(data)) as chunks:
                for chunk in chunks:
                    received += chunk
        assert len(received) == len(data)  # the mismatch shows only at the end
        assert "discarded" in (info.value.hint or "")


def test_chunked_upload_from_a_file(
    plain: tuple[RunningRegistry, dict[str, str]], tmp_path: Path
) -> None:
    reg, _ = plain
    import rootless.image.registry as registry_module

    data = os.urandom(300_000)
    path = tmp_path / "blob"
    path.write_bytes(data)
    with client_for(reg) as client:
        old = registry_module.UPLOAD_CHUNK
        registry_module.UPLOAD_CHUNK = 100_000  # three PATCHes, then PUT ?digest=
        try:
            client.push_blob("rltest/chunked", path, sha256(data))
        finally:
            registry_module.UPLOAD_CHUNK = old
        out = io.BytesIO()
        client.fetch_blob("rltest/chunked", sha256(data), len(data), out)
        assert out.getvalue() == data
        with pytest.raises(RegistryError, match="the data to push has digest"):
            client.push_blob("rltest/chunked", b"other", sha256(b"not other"))


# authentication ----------------------------------------------------------------------------
def test_basic_auth(basic: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, digests = basic
    ref = parse_reference(f"{reg.url_host}/rltest/busybox")
    with client_for(reg, reg.credentials) as client:
        client.ping()
        assert resolve_image(client, ref).manifest_digest == digests["busybox"]
    with client_for(reg) as client:
        with pytest.raises(RegistryError, match=r"requires authentication \(HTTP 401") as info:
            resolve_image(client, ref)
        assert f"rl login {reg.url_host}" in (info.value.hint or "")
    assert reg.username is not None
    with client_for(reg, Credentials(reg.username, "wrong")) as client:
        with pytest.raises(
            RegistryError, match=r"refused the credentials: invalid username or password \(HTTP 401"
        ):
            client.ping()


def test_token_auth_reuses_the_token(token: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, digests = token
    ref = parse_reference(f"{reg.url_host}/rltest/multilayer")
    before = len(reg.token_requests)
    with client_for(reg, reg.credentials) as client:
        image = resolve_image(client, ref)
        for layer in image.layers:
            client.fetch_blob(ref.repository, layer.digest, layer.size, io.BytesIO())
    requests = reg.token_requests[before:]
    # manifest, config and three layers: one token, asked for by the user, for pull.
    assert [(r["user"], r["scope"]) for r in requests] == [
        (reg.username, ["repository:rltest/multilayer:pull"])
    ]
    assert image.manifest_digest == digests["multilayer"]


def test_token_anonymous_pull(token: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, digests = token
    before = len(reg.token_requests)
    with client_for(reg) as client:
        image = resolve_image(client, parse_reference(f"{reg.url_host}/rltest/busybox"))
        with pytest.raises(RegistryError, match="requires authentication"):
            client.push_blob("rltest/busybox", b"x", sha256(b"x"))  # anonymous: pull only
    assert image.manifest_digest == digests["busybox"]
    # pull; then push, refused, and push once more with a fresh token before giving up.
    assert [r["user"] for r in reg.token_requests[before:]] == [None, None, None]


def test_token_refreshed_after_401_and_expiry(
    token: tuple[RunningRegistry, dict[str, str]],
) -> None:
    reg, _ = token
    with client_for(reg, reg.credentials) as client:
        client.get_manifest("rltest/busybox", "latest", mt.MANIFEST_ACCEPT)
        before = len(reg.token_requests)
        scope = "repository:rltest/busybox:pull"
        client._tokens[scope].value = "not-a-token"  # the registry answers 401: retried once
        client.get_manifest("rltest/busybox", "latest", mt.MANIFEST_ACCEPT)
        assert len(reg.token_requests) == before + 1
        client._tokens[scope].expires = time.monotonic() - 1  # expired: fetched again, no 401
        client.get_manifest("rltest/busybox", "latest", mt.MANIFEST_ACCEPT)
        assert len(reg.token_requests) == before + 2


def test_token_wrong_password(token: tuple[RunningRegistry, dict[str, str]]) -> None:
    reg, _ = token
    assert reg.username is not None
    with client_for(reg, Credentials(reg.username, "wrong")) as client:
        with pytest.raises(RegistryError, match="invalid username or password") as info:
            client.ping()
    assert reg.url_host in info.value.message
    assert reg.token_requests[-1]["user"] == "<bad>"


# scripted servers --------------------------------------------------------------------------
BLOB = b"blob content served by the storage host\n" * 100
BLOB_DIGEST = sha256(BLOB)


def _second_loopback() -> str:
    """127.0.0.2 is loopback on Linux; fall back to 127.0.0.1 (then only the port differs)."""
    import socket

    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
        return "127.0.0.2"
    except OSError:
        return "127.0.0.1"


def test_redirect_to_another_host_drops_authorization() -> None:
    storage = serve_http(
        lambda r: (200, {"Content-Type": "application/octet-stream"}, BLOB), _second_loopback()
    )

    def registry(r: Recorded) -> Reply:
        if "Authorization" not in r.headers:
            return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
        if r.path == f"/v2/app/blobs/{BLOB_DIGEST}":
            return 307, {"Location": f"/v2/app/blobs/same-origin/{BLOB_DIGEST}"}, b""
        if r.path.startswith("/v2/app/blobs/same-origin/"):
            return 307, {"Location": f"{storage.url}/bucket/{BLOB_DIGEST}?sig=1"}, b""
        return 404, {}, b""

    with storage, serve_http(registry) as reg:
        with RegistryClient(
            reg.url_host, insecure=True, credentials=Credentials("u", "p")
        ) as client:
            out = io.BytesIO()
            client.fetch_blob("app", BLOB_DIGEST, len(BLOB), out)
        assert out.getvalue() == BLOB
        authorized = [r.path for r in reg.requests if "Authorization" in r.headers]
        assert f"/v2/app/blobs/same-origin/{BLOB_DIGEST}" in authorized  # same origin keeps it
        assert [r.path for r in storage.requests] == [f"/bucket/{BLOB_DIGEST}?sig=1"]
        assert "Authorization" not in storage.requests[0].headers


def _flaky(failures: list[Reply], final: Reply) -> tuple[object, list[Reply]]:
    queue = list(failures)

    def respond(r: Recorded) -> Reply:
        if r.path == "/v2/":
            return 200, {}, b"{}"
        return queue.pop(0) if queue else final

    return respond, queue


MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": {}, "layers": []}
).encode()
OK = (200, {"Content-Type": mt.OCI_MANIFEST}, MANIFEST)


def test_5xx_and_429_are_retried() -> None:
    respond, _ = _flaky(
        [(503, {}, b""), (429, {"Retry-After": "0"}, b""), (502, {}, b"bad gateway")], OK
    )
    with serve_http(respond) as server:
        with RegistryClient(server.url_host, insecure=True,
                            policy=RetryPolicy(backoff=0.01, retries=3)) as client:
            body, media_type, digest = client.get_manifest("app", "latest", mt.MANIFEST_ACCEPT)
        assert (body, media_type, digest) == (MANIFEST, mt.OCI_MANIFEST, sha256(MANIFEST))
        assert len([r for r in server.requests if r.path.endswith("/latest")]) == 4


def test_gives_up_naming_the_registry_and_status() -> None:
    respond, _ = _flaky(
        [],
        (
            500,
            {"Content-Type": "application/json"},
            b'{"errors": [{"code": "UNKNOWN", "message": "storage on fire"}]}',
        ),
    )
    with serve_http(respond) as server:
        with RegistryClient(server.url_host, insecure=True,
                            policy=RetryPolicy(backoff=0.01, retries=2)) as client:
            with pytest.raises(RegistryError) as info:
                client.get_manifest("app", "latest", mt.MANIFEST_ACCEPT)
        assert len([r for r in server.requests if r.path.endswith("/latest")]) == 3
    assert info.value.message == (
        f"fetching manifest {server.url_host}/app:latest: registry {server.url_host} "
        "answered HTTP 500 UNKNOWN: storage on fire"
    )


def test_unreachable_registry() -> None:
    from registry_fixtures import free_port

    host = f"127.0.0.1:{free_port()}"
    with RegistryClient(host, insecure=True,
                        policy=RetryPolicy(backoff=0.01, retries=1)) as client:
        with pytest.raises(RegistryError, match=f"cannot reach registry {host}"):
            client.ping()


def test_oversized_manifest_is_refused() -> None:
    huge = b" " * (4 * 1024 * 1024 + 1)
    with serve_http(lambda r: (200, {"Content-Type": mt.OCI_MANIFEST}, huge)) as server:
        with RegistryClient(server.url_host, insecure=True) as client:
            with pytest.raises(RegistryError, match="more than the 4194304"):
                client.get_manifest("app", "latest", mt.MANIFEST_ACCEPT)


def test_lying_registries_are_caught() -> None:
    other = MANIFEST + b" "

    def respond(r: Recorded) -> Reply:
        if r.path == "/v2/app/manifests/lies":
            return (
                200,
                {"Content-Type": mt.OCI_MANIFEST, "Docker-Content-Digest": sha256(other)},
                MANIFEST,
            )
        if r.path == f"/v2/app/manifests/{sha256(other)}":
            return 200, {"Content-Type": mt.OCI_MANIFEST}, MANIFEST
        if r.path == "/v2/app/manifests/untyped":
            return 200, {"Content-Type": "application/json"}, MANIFEST
        if r.path.startswith("/v2/app/blobs/"):
            return 200, {}, BLOB + b"extra"
        return 200, {}, b""

    with serve_http(respond) as server:
        with RegistryClient(server.url_host, insecure=True) as client:
            with pytest.raises(RegistryError, match="but the registry says"):
                client.get_manifest("app", "lies", mt.MANIFEST_ACCEPT)
            with pytest.raises(RegistryError, match="sent content with digest"):
                client.get_manifest("app", sha256(other), mt.MANIFEST_ACCEPT)
            # A generic Content-Type: the body's own mediaType says what it is.
            assert client.get_manifest("app", "untyped", mt.MANIFEST_ACCEPT)[1] == mt.OCI_MANIFEST
            with pytest.raises(RegistryError, match="sends .* bytes but the descriptor says"):
                client.fetch_blob("app", BLOB_DIGEST, len(BLOB), io.BytesIO())
            with pytest.raises(RegistryError, match="digest mismatch"):
                client.fetch_blob("app", BLOB_DIGEST, None, io.BytesIO())


def test_plain_http_needs_tls_verify_false() -> None:
    with serve_http(lambda r: (200, {}, b"{}")) as server:
        with RegistryClient(server.url_host, policy=RetryPolicy(backoff=0.01)) as client:
            with pytest.raises(RegistryError, match="TLS with registry") as info:
                client.ping()
            assert "--tls-verify=false" in (info.value.hint or "")
        assert server.requests == []  # nothing was sent in clear text
        with RegistryClient(server.url_host, tls_verify=False) as client:
            client.ping()
            assert client.base_url == f"http://{server.url_host}"
