"""Pulling from a real local registry (Debian's docker-registry) into a real store.

Runs as whoever runs pytest: as root the layers are extracted directly, as an ordinary user
(rltest) inside a user namespace with the subuid mapping, which is the product's path.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from rootless.errors import ImageError, RlError
from rootless.image.pull import ensure_image, pull_image
from rootless.image.store import Store
from rootless.paths import Paths
from tests.layer_fixtures import sha256_digest
from tests.registry_fixtures import push_test_images, start_registry

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        reg.digests = push_test_images(reg)  # type: ignore[attr-defined]
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def paths(tmp_path):
    return Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")


def pull(registry, name, paths, **kw):
    return pull_image(f"{registry.url_host}/rltest/{name}", paths=paths, store=Store(paths),
                      tls_verify=False, quiet=True, env={}, **kw)


def stored_blobs_verify(paths: Paths) -> None:
    for blob in paths.blobs.iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}", blob


def test_pull_single_layer(registry, paths):
    image = pull(registry, "busybox", paths)
    store = Store(paths)
    assert image.names == [f"{registry.url_host}/rltest/busybox:latest"]
    (layer,) = image.layer_dirs(store)
    assert (layer / "bin/busybox").is_file()
    assert os.readlink(layer / "bin/sh") == "busybox"
    (link,) = image.layer_links(store)
    assert (paths.layers / link).resolve() == layer.resolve()
    assert store.get_image(f"{registry.url_host}/rltest/busybox").id == image.id
    assert store.get_image(image.id[7:19]).id == image.id
    assert image.size > 1_000_000
    stored_blobs_verify(paths)
    assert list(paths.tmp.iterdir()) == []
    # pulling again downloads nothing and gives the same image
    assert pull(registry, "busybox", paths).id == image.id


def test_pull_zstd_layer(registry, paths):
    image = pull(registry, "zstd", paths)
    assert image.layers[0]["mediaType"].endswith("+zstd")
    assert (image.layer_dirs(Store(paths))[0] / "bin/busybox").is_file()


def test_pull_multiarch_picks_host_platform(registry, paths):
    image = pull(registry, "multiarch", paths)
    assert (image.layer_dirs(Store(paths))[0] / "bin/busybox").is_file()
    other = "arm64" if os.uname().machine == "x86_64" else "amd64"
    image2 = pull(registry, "multiarch", paths, platform=f"linux/{other}")
    assert image2.config["architecture"] == other


def test_nonroot_owners_and_config(registry, paths):
    from rootless.image.config import image_run_config

    image = pull(registry, "nonroot", paths)
    cfg = image_run_config(image.config)
    assert cfg.user == "1000:1000" and cfg.workdir == "/home/user"
    top = image.layer_dirs(Store(paths))[-1]
    st = os.lstat(top / "home/user/hello.txt")
    if os.getuid() == 0:
        assert st.st_uid == 1000
    else:
        from rootless.primitives.userns import default_mapping

        mapping, _ = default_mapping()
        assert st.st_uid == mapping.container_uid_to_host(1000)


def _unshare_prefix() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.fail("unshare(1) is needed to mount the overlay") if os.environ.get(
            "CI") == "true" else pytest.skip("unshare(1) missing")
    return ["unshare", "-m"] if os.getuid() == 0 else ["unshare", "-Urm"]


def test_whiteouts_and_opaque_dirs_in_overlay(registry, paths, tmp_path):
    image = pull(registry, "multilayer", paths)
    store = Store(paths)
    lower = ":".join(reversed(image.layer_links(store)))  # overlay: top layer first
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (f"cd {paths.layers} && mount -t overlay overlay -o lowerdir={lower},userxattr {mnt}"
              f" && cd {mnt} && ls -a data opaque")
    out = subprocess.run([*_unshare_prefix(), "sh", "-c", script], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    names = out.stdout.split()
    assert "keep.txt" in names and "added.txt" in names
    assert "remove-me.txt" not in names
    assert "new.txt" in names
    assert "old.txt" not in names and "sub" not in names


PULL_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from rootless.image.pull import pull_image
from rootless.image.store import Store
from rootless.paths import Paths
from pathlib import Path
p = Path({data!r})
paths = Paths(p / "data", p / "run", p / "config")
pull_image({ref!r}, paths=paths, store=Store(paths), tls_verify=False, quiet=False, env={{}})
"""


def _pull_process(ref: str, root: Path) -> subprocess.Popen[str]:
    code = PULL_SCRIPT.format(repo=str(REPO), data=str(root), ref=ref)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_concurrent_pulls_download_each_blob_once(registry, tmp_path):
    ref = f"{registry.url_host}/rltest/multilayer"
    procs = [_pull_process(ref, tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    lines = [ln for _, err in outputs for ln in err.splitlines() if ln.startswith("Copying blob")]
    done: dict[str, int] = {}
    for line in lines:
        digest = line.split()[2]
        done.setdefault(digest, 0)
        if " done" in line:
            done[digest] += 1
    assert len(done) == 3 and all(n == 1 for n in done.values()), lines
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    assert len(Store(paths).list_images()) == 1
    stored_blobs_verify(paths)


def _push_big_image(registry, size: int) -> str:
    """An image with one uncompressed layer of `size` random bytes; returns its reference."""
    from rootless.image import mediatypes as mt
    from rootless.image.registry import RegistryClient

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    layer = buf.getvalue()
    digest = sha256_digest(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [digest]},
                         "config": {}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_TAR, "digest": digest, "size": len(layer)}],
    }).encode()
    with RegistryClient(registry.url_host, insecure=True) as client:
        client.push_blob("rltest/big", layer, digest)
        client.push_blob("rltest/big", config, sha256_digest(config))
        client.push_manifest("rltest/big", "latest", manifest, mt.OCI_MANIFEST)
    return f"{registry.url_host}/rltest/big"


def _assert_nothing_visible(paths: Paths) -> None:
    store = Store(paths)
    assert store.list_images() == []
    if paths.blobs.exists():
        stored_blobs_verify(paths)
    if paths.layers.exists():
        assert [p.name for p in paths.layers.iterdir()
                if len(p.name) == 64 and p.is_dir()] == []


@pytest.mark.parametrize("sig, watch", [
    (signal.SIGKILL, "tmp"), (signal.SIGINT, "tmp"), (signal.SIGKILL, "layers"),
])
def test_interrupted_pull_leaves_nothing_visible(registry, tmp_path, sig, watch):
    ref = _push_big_image(registry, 200 << 20)
    proc = _pull_process(ref, tmp_path)
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    where = paths.tmp if watch == "tmp" else paths.layers
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if where.exists() and any(p.name.startswith(("blob-", ".tmp-")) for p in where.iterdir()):
            break
        time.sleep(0.002)
    assert proc.poll() is None, "the pull finished before it could be interrupted"
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    _assert_nothing_visible(paths)
    if sig == signal.SIGINT:
        assert list(paths.tmp.iterdir()) == []  # Ctrl-C cleans up at once
    # the next pull cleans the leftovers and succeeds
    image = pull_image(ref, paths=paths, store=Store(paths), tls_verify=False, quiet=True, env={})
    assert (image.layer_dirs(Store(paths))[0] / "big.bin").stat().st_size == 200 << 20
    assert list(paths.tmp.iterdir()) == []
    assert [p.name for p in paths.layers.iterdir() if p.name.startswith(".tmp-")] == []


def test_tampered_blob_is_refused_and_leaves_nothing(registry, paths):
    digest = registry.digests["nonroot"]  # noqa: F841 - the image is looked up by name below
    from rootless.image.manifest import resolve_image
    from rootless.image.reference import parse_reference
    from rootless.image.registry import RegistryClient

    ref = parse_reference(f"{registry.url_host}/rltest/nonroot")
    with RegistryClient(ref.registry, insecure=True) as client:
        resolved = resolve_image(client, ref)
    top = resolved.layers[-1]
    data_file = registry.blob_path(top.digest)
    original = data_file.read_bytes()
    try:
        tampered = bytearray(original)
        tampered[len(tampered) // 2] ^= 0xFF
        data_file.write_bytes(bytes(tampered))
        with pytest.raises(RlError, match="digest"):
            pull(registry, "nonroot", paths)
    finally:
        data_file.write_bytes(original)
    _assert_nothing_visible(paths)
    assert not (paths.blobs / top.digest[7:]).exists()
    assert list(paths.tmp.iterdir()) == []


def test_pull_policies(registry, paths):
    ref = f"{registry.url_host}/rltest/busybox"
    with pytest.raises(ImageError, match="image not known") as info:
        ensure_image(ref, paths=paths, pull_policy="never")
    assert info.value.exit_code == 125
    image = ensure_image(ref, paths=paths, pull_policy="missing", tls_verify=False, quiet=True,
                         env={})
    # present: "missing" and "never" use it without asking the registry
    for policy in ("missing", "never"):
        assert ensure_image(ref, paths=paths, pull_policy=policy).id == image.id
    assert ensure_image(ref, paths=paths, pull_policy="always", tls_verify=False, quiet=True,
                        env={}).id == image.id


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_pull_with_credentials_from_auth_file(tmp_path, paths, auth):
    with start_registry(tmp_path / "reg", auth=auth) as reg:
        push_test_images(reg)
        authfile = tmp_path / "auth.json"
        import base64

        token = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        authfile.write_text(json.dumps({"auths": {reg.url_host: {"auth": token}}}))
        ref = f"{reg.url_host}/rltest/busybox"
        with pytest.raises(RlError):
            pull_image(ref, paths=paths, store=Store(paths), tls_verify=False, quiet=True, env={})
        image = pull_image(ref, paths=paths, store=Store(paths), tls_verify=False, quiet=True,
                           env={"REGISTRY_AUTH_FILE": str(authfile)})
        assert image.names == [f"{ref}:latest"]
