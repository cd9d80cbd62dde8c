"""Pulling from a real local registry (Debian's docker-registry) into a real store.

Runs as whoever runs pytest: as root the layers are extracted directly, as an ordinary user
(rltest) inside a user namespace with the subuid mapping, which is the product's path.
"""

from __future__ import annotations

import gzip
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
from rootless.image.registry import RetryPolicy
from rootless.image.store import Store
from rootless.paths import Paths
from pathlib import Path
p = Path({data!r})
paths = Paths(p / "data", p / "run", p / "config")
pull_image({ref!r}, paths=paths, store=Store(paths), tls_verify=False, quiet=False, env={{}},
           policy=RetryPolicy(**{policy!r}))
"""


def _pull_process(ref: str, root: Path, **policy: float) -> subprocess.Popen[str]:
    """pull_image in a process of its own (the test process has server threads: a pull
    forks, and must do so from a single-threaded process)."""
    code = PULL_SCRIPT.format(repo=str(REPO), data=str(root), ref=ref, policy=policy)
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


def _push_big_image(registry, size: int, name: str = "big") -> str:
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
        client.push_blob(f"rltest/{name}", layer, digest)
        client.push_blob(f"rltest/{name}", config, sha256_digest(config))
        client.push_manifest(f"rltest/{name}", "latest", manifest, mt.OCI_MANIFEST)
    return f"{registry.url_host}/rltest/{name}"


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


def test_pulled_image_with_thousands_of_directories_matches_its_layer(registry, rl):
    """Issue 12 item 1, end to end: `rl pull` of a one-layer image with 3000 directories
    (busybox in the same layer, as in a distribution's base image) keeps every entry's mode,
    owner and mtime, and a non-root user can run a command in it. Run with the soft
    RLIMIT_NOFILE of 1024 that most distributions give a login."""
    import resource

    from rootless.image.registry import RegistryClient
    from rootless.primitives.userns import default_mapping, run_in_userns
    from tests.conftest import need
    from tests.layer_fixtures import tar_mismatches
    from tests.registry_fixtures import load_image_builder

    need(default_mapping()[0].mode != "single",
         "owners 33 and 1000 need a subordinate id range (/etc/subuid)")
    builder = load_image_builder()
    image = builder.many_dirs_image(3000)
    with RegistryClient(registry.url_host, insecure=True) as client:
        builder.push_image(client, "rltest/manydirs", "latest", image)
    ref = f"{registry.url_host}/rltest/manydirs:latest"

    def low_fd_limit() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))

    pulled = subprocess.run([rl.exe, "pull", "-q", "--tls-verify=false", ref], env=rl.env,
                            capture_output=True, text=True, timeout=300, preexec_fn=low_fd_limit)
    assert pulled.returncode == 0, pulled.stderr
    (layer,) = image.layers
    tar = gzip.decompress(layer.blob)
    dest = rl.data / "layers" / layer.diff_id.split(":", 1)[1]
    out = rl.base / "mismatches.json"
    run_in_userns(lambda: out.write_text(json.dumps(tar_mismatches(tar, dest))),
                  name="rl:[test-check]")
    assert json.loads(out.read_text()) == []
    r = rl("run", "--rm", "--network", "none", "-u", "1000", ref, "id")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("uid=1000")
    # and inside a directory the image gives to 1000 alone (mode 0700, owner 1000)
    r = rl("run", "--rm", "--network", "none", "-u", "1000", ref, "ls", "/tree/g000/d00013")
    assert r.returncode == 0, r.stderr


# -- a registry that stalls, cuts and resets (issue 13 item 8) ---------------------------------
# Short time-outs, so that each case takes seconds; the defaults are checked by arithmetic.
FAST = {"connect_timeout": 2.0, "read_timeout": 2.0, "backoff": 0.05, "budget": 5.0,
        "resumes": 5}
LAYER = 8 << 20


def test_the_default_policy_gives_up_within_a_minute():
    from rootless.image.registry import DEFAULT_POLICY, RetryPolicy

    assert 40 < DEFAULT_POLICY.worst_case() < 60
    assert RetryPolicy(**FAST).worst_case() < 15


@pytest.fixture
def proxy(registry):
    from tests.registry_fixtures import FaultProxy

    with FaultProxy(registry.url_host) as p:
        yield p


def _proxied_big(registry, proxy) -> tuple[str, str]:
    """(reference through the proxy, layer blob digest) of an 8 MB uncompressed layer."""
    ref = _push_big_image(registry, LAYER, "faulty")
    from rootless.image.manifest import resolve_image
    from rootless.image.reference import parse_reference
    from rootless.image.registry import RegistryClient

    with RegistryClient(registry.url_host, insecure=True) as client:
        resolved = resolve_image(client, parse_reference(ref))
    return ref.replace(registry.url_host, proxy.url_host), resolved.layers[0].digest


@pytest.mark.parametrize("kind", ["stall_body", "cut", "reset"])
def test_a_broken_layer_download_is_resumed(registry, proxy, tmp_path, kind):
    """The blob download breaks after 3 MB (stalls, closes, resets): rl asks for the rest
    with a Range request, says so on the progress line, and the layer is whole. While the
    download is stalled, the unpacker has already written part of the layer: they overlap."""
    from tests.registry_fixtures import Fault

    ref, digest = _proxied_big(registry, proxy)
    proxy.add(Fault(kind, match=f"/blobs/{digest}", after=3 << 20))
    proc = _pull_process(ref, tmp_path, **FAST)
    layers = tmp_path / "data" / "layers"
    seen = 0
    while proc.poll() is None and kind == "stall_body" and not seen:
        for tmp in layers.glob(".tmp-*/big.bin") if layers.exists() else []:
            seen = max(seen, tmp.stat().st_size)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    if kind == "stall_body":
        assert seen > 0, "nothing was unpacked while the download was stalled"
    blob_requests = [r for r in proxy.requests if r.path.endswith(digest) and r.method == "GET"]
    assert len(blob_requests) == 2, blob_requests
    assert "Range" not in blob_requests[0].headers
    assert blob_requests[1].headers["Range"].startswith("bytes=")
    assert blob_requests[1].headers["Range"] != "bytes=0-"
    assert f"Copying blob {digest[7:19]} retrying (2/6)" in err, err
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    (image,) = Store(paths).list_images()
    assert (image.layer_dirs(Store(paths))[0] / "big.bin").stat().st_size == LAYER
    stored_blobs_verify(paths)


def test_a_registry_that_ignores_range_is_read_again_from_the_start(registry, proxy, tmp_path):
    from tests.registry_fixtures import Fault

    ref, digest = _proxied_big(registry, proxy)
    proxy.add(Fault("cut", match=f"/blobs/{digest}", after=3 << 20),
              Fault("strip_range", match=f"/blobs/{digest}"))
    proc = _pull_process(ref, tmp_path, **FAST)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [r.fault for r in proxy.requests if r.path.endswith(digest)] == ["cut", "strip_range"]
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    (image,) = Store(paths).list_images()
    assert (image.layer_dirs(Store(paths))[0] / "big.bin").stat().st_size == LAYER
    stored_blobs_verify(paths)


def _assert_nothing_half_pulled(tmp_path: Path) -> None:
    paths = Paths(tmp_path / "data", tmp_path / "run", tmp_path / "config")
    _assert_nothing_visible(paths)
    assert list(paths.tmp.iterdir()) == []
    assert [p.name for p in paths.layers.iterdir() if p.name.startswith(".tmp-")] == []


@pytest.mark.parametrize("where", ["/v2/", "/blobs/"])
def test_a_registry_that_never_answers_fails_quickly(registry, proxy, tmp_path, where):
    """It accepts the connection and says nothing: at first (every request), or for the
    layer only. The pull gives up within the policy's bound, naming the registry."""
    from rootless.image.registry import RetryPolicy
    from tests.registry_fixtures import Fault

    ref, _ = _proxied_big(registry, proxy)
    proxy.add(Fault("stall", match=where, times=1000))
    started = time.monotonic()
    proc = _pull_process(ref, tmp_path, **FAST)
    _, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert f"registry {proxy.url_host} sent nothing for 2 s" in err, err
    assert "Traceback" not in err.split("ImageError")[0] or "RegistryError" in err
    assert elapsed < RetryPolicy(**FAST).worst_case() + 10, elapsed
    assert "retrying (2/4)" in err or "Retrying (2/4)" in err, err
    _assert_nothing_half_pulled(tmp_path)


def test_a_download_cut_every_time_fails_leaving_nothing(registry, proxy, tmp_path):
    from tests.registry_fixtures import Fault

    ref, digest = _proxied_big(registry, proxy)
    proxy.add(Fault("cut", match=f"/blobs/{digest}", after=1 << 20, times=1000))
    proc = _pull_process(ref, tmp_path, **FAST)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "the download broke off after" in err and "(6 attempts)" in err, err
    _assert_nothing_half_pulled(tmp_path)


# -- a full file system (issue 13 item 10) -------------------------------------------------
def _push_zeros_image(registry, size: int) -> str:
    """One gzip layer holding `size` zero bytes: a tiny blob, a big layer."""
    from rootless.image import mediatypes as mt
    from rootless.image.registry import RegistryClient
    from tests.layer_fixtures import LayerBuilder, gzip_bytes

    tar = LayerBuilder().file("zeros.bin", bytes(size)).build()
    blob = gzip_bytes(tar)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": sha256_digest(blob),
                    "size": len(blob)}],
    }).encode()
    with RegistryClient(registry.url_host, insecure=True) as client:
        client.push_blob("rltest/zeros", blob, sha256_digest(blob))
        client.push_blob("rltest/zeros", config, sha256_digest(config))
        client.push_manifest("rltest/zeros", "latest", manifest, mt.OCI_MANIFEST)
    return f"{registry.url_host}/rltest/zeros"


@pytest.mark.parametrize("image, size, step", [
    ("faulty", "2m", "writing blob sha256:"),   # an 8 MB blob does not fit
    ("zeros", "6m", "unpacking layer sha256:"),  # its 16 kB blob fits, its 16 MB layer not
])
def test_a_full_file_system_names_the_blob_or_layer_and_the_path(registry, rl, tmp_path, image,
                                                                  size, step):
    """The data directory on a small tmpfs (mounted in a user namespace where rl runs as
    root: an unprivileged user may mount tmpfs there): ENOSPC is an Error naming the blob or
    layer and the path, with a hint, and the store holds nothing half-pulled."""
    from tests.conftest import need_tool

    need_tool("unshare")
    need_tool("newuidmap")
    ref = (_push_big_image(registry, LAYER, "faulty") if image == "faulty"
           else _push_zeros_image(registry, 16 << 20))
    data = tmp_path / "small"
    data.mkdir()
    script = (f'mount -t tmpfs -o size={size} tmpfs "$D" || exit 99; '
              f'"$RL" pull --tls-verify=false {ref}; echo "status=$?"; '
              'echo "tmp=[$(ls -A "$D/rootless/tmp")] layers=[$(ls -A "$D/rootless/layers")]"; '
              'echo "images=[$("$RL" images -q)]"')
    r = subprocess.run(["unshare", "--map-auto", "--map-root-user", "--mount", "sh", "-c", script],
                       env=dict(rl.env, D=str(data), RL=rl.exe, XDG_DATA_HOME=str(data)),
                       capture_output=True, text=True, timeout=120)
    assert "status=125" in r.stdout, r.stdout + r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1, r.stderr
    assert error[0].startswith(f"Error: {step}"), error
    assert str(data / "rootless") in error[0] and error[0].endswith("(ENOSPC)"), error
    assert f"Hint: free space on the file system of {data / 'rootless'}" in r.stderr
    assert "Traceback" not in r.stderr
    assert "tmp=[] layers=[l]" in r.stdout, r.stdout
    assert "images=[]" in r.stdout, r.stdout
