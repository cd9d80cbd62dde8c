"""`rl push` against a real registry, seen through the registry's own access log: uploads
(monolithic and chunked), a cross-repository mount of a built image's base layer, HEAD checks
that skip what is there, token auth with push scope; and images crossing between builders:
rl-built images run by `podman run`, buildah-built images run by `rl run`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RlRunner, need_tool
from tests.registry_fixtures import start_registry

pytestmark = pytest.mark.integration

# crun 1.8 refuses this host's hybrid cgroups (docs: shared notes); runc works
ENGINE_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]


def build(rl: RlRunner, ctx: Path, text: str, *flags: str) -> str:
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Containerfile").write_text(text)
    r = rl("build", "--tls-verify=false", "-q", *flags, str(ctx), timeout=180)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def blob_requests(requests: list[tuple[str, str, int]], repo: str) -> list[tuple[str, str, int]]:
    return [(m, p.split("?")[0] if m != "POST" else p, s) for m, p, s in requests
            if p.startswith(f"/v2/{repo}/")]


def test_push_uploads_mounts_and_skips(rl: RlRunner, test_registry, tmp_path: Path) -> None:
    host = test_registry.url_host
    repo = f"pushed/app{os.getpid()}"
    target = f"{host}/{repo}:v1"
    # a small layer (one PUT) and one larger than MONOLITHIC_MAX (PATCH, then PUT)
    build(rl, tmp_path / "ctx", f"FROM {host}/rltest/busybox\nRUN echo small > /small\n"
                                "RUN head -c 12000000 /dev/urandom > /big\n", "-t", target)
    r = rl("image", "inspect", target)
    (info,) = json.loads(r.stdout)
    before = len(test_registry.requests())
    r = rl("push", "--tls-verify=false", target, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Writing manifest to image destination" in r.stderr
    seen = blob_requests(test_registry.requests()[before:], repo)
    posts = [p for m, p, s in seen if m == "POST"]
    # the base layer came from rltest/busybox of the same registry: mounted, not uploaded
    mounts = [p for p in posts if "mount=" in p]
    assert len(mounts) == 1 and "from=rltest/busybox" in mounts[0], posts
    assert ("POST", mounts[0], 201) in seen
    base_digest = mounts[0].split("mount=")[1].split("&")[0]
    assert not any(m == "PUT" and base_digest in p for m, p, s in seen)
    # the two new layers and the config: upload sessions closed with PUT ?digest=
    assert len([p for p in posts if "mount=" not in p]) == 3, posts
    assert len([1 for m, p, s in seen if m == "PUT" and "/blobs/uploads/" in p and s == 201]) == 3
    assert len([1 for m, p, s in seen if m == "PATCH" and s == 202]) == 1, seen  # the big one
    assert ("PUT", f"/v2/{repo}/manifests/v1", 201) in seen

    # again: every blob is there (HEAD 200), nothing is uploaded
    before = len(test_registry.requests())
    r = rl("push", "--tls-verify=false", target, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "skipped: already exists" in r.stderr
    seen = blob_requests(test_registry.requests()[before:], repo)
    assert [m for m, p, s in seen if m not in ("HEAD", "GET")] == ["PUT"], seen  # the manifest
    assert len([1 for m, p, s in seen if m == "HEAD" and s == 200]) == 4  # 3 layers + config

    # pulled back by a fresh store: the same image, and it runs
    fresh = RlRunner(rl.exe, tmp_path / "fresh")
    r = fresh("pull", "-q", "--tls-verify=false", target, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == info["Id"], r.stderr
    r = fresh("run", "--rm", "--network", "none", target, "sh", "-c",
              "cat /small; stat -c %s /big")
    assert r.stdout.split() == ["small", "12000000"], r.stderr


def test_push_with_token_auth_asks_for_push_scope(rl: RlRunner, tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "token-registry", "token")
    try:
        ref = f"{reg.url_host}/team/scratch-app:1"
        ctx = tmp_path / "ctx"
        ctx.mkdir()
        (ctx / "file").write_text("content\n")
        build(rl, ctx, "FROM scratch\nCOPY file /file\n", "-t", ref)
        r = rl("push", "--tls-verify=false", ref)
        assert r.returncode == 125, r.stderr  # not logged in yet
        assert "requires authentication (HTTP 401" in r.stderr and "Hint: log in first" in r.stderr
        assert reg.username and reg.password
        r = rl("login", "--tls-verify=false", "-u", reg.username, "-p", reg.password,
               reg.url_host)
        assert r.returncode == 0, r.stderr
        r = rl("push", "--tls-verify=false", ref)
        assert r.returncode == 0, r.stderr
        scopes = {s for req in reg.token_requests if req["user"] for s in req["scope"] or []}
        assert "repository:team/scratch-app:pull,push" in scopes, scopes
        fresh = RlRunner(rl.exe, tmp_path / "fresh")
        assert fresh("login", "--tls-verify=false", "-u", reg.username, "-p", reg.password,
                     reg.url_host).returncode == 0
        assert fresh("pull", "-q", "--tls-verify=false", ref).returncode == 0
    finally:
        reg.stop()


@pytest.fixture
def engines() -> Iterator[dict[str, list[str]]]:
    """podman and buildah with storage of their own (runroot: podman wants < 50 bytes)."""
    podman, buildah = need_tool("podman"), need_tool("buildah")
    root = Path(tempfile.mkdtemp(prefix="rlp", dir="/tmp"))
    storage = ["--root", str(root / "root"), "--runroot", str(root / "run"),
               "--storage-driver", "overlay"]
    try:
        yield {"podman": [podman, *storage, *ENGINE_FLAGS], "buildah": [buildah, *storage]}
    finally:
        subprocess.run([podman, *storage, "rmi", "-a", "-f"], capture_output=True)
        subprocess.run([buildah, *storage, "rm", "-a"], capture_output=True)
        subprocess.run(["podman", "unshare", "rm", "-rf", str(root)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# (not /etc/group: podman writes one when the user's group is missing from it)
INTEROP = ("FROM {base}\nCOPY --chown=1000:1000 hello /srv/hello\n"
           "RUN mkdir /data && chown 33:33 /data && rm -r /root\n"
           "USER 1000:1000\nWORKDIR /srv\nENV GREETING=hi\n"
           'CMD ["sh", "-c", "cat hello; pwd; id -u; echo $GREETING; '
           'stat -c %u:%g /srv/hello /data; test -e /root || echo no-root"]\n')


def interop_context(tmp_path: Path, base: str, who: str) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello").write_text(f"built by {who}\n")
    (ctx / "Containerfile").write_text(INTEROP.format(base=base))
    return ctx


def interop_output(who: str) -> list[str]:
    return [f"built by {who}", "/srv", "1000", "hi", "1000:1000", "33:33", "no-root", ""]


def test_podman_runs_what_rl_built(rl: RlRunner, test_registry, engines, tmp_path: Path) -> None:
    host = test_registry.url_host
    ref = f"{host}/interop/rl-built:latest"
    ctx = interop_context(tmp_path, f"{host}/rltest/busybox", "rl")
    r = rl("build", "--tls-verify=false", "-q", "-t", ref, str(ctx), timeout=180)
    assert r.returncode == 0, r.stderr
    assert rl("push", "--tls-verify=false", ref).returncode == 0
    r = subprocess.run([*engines["podman"], "run", "--rm", "--tls-verify=false", ref],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == interop_output("rl"), r.stdout


def test_rl_runs_what_buildah_built(rl: RlRunner, test_registry, engines, tmp_path: Path) -> None:
    host = test_registry.url_host
    ref = f"{host}/interop/buildah-built:latest"
    ctx = interop_context(tmp_path, f"{host}/rltest/busybox", "buildah")
    r = subprocess.run([*engines["buildah"], "bud", "--runtime", "runc", "--isolation", "rootless",
                        "--tls-verify=false", "-q", "-t", ref, str(ctx)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*engines["buildah"], "push", "--tls-verify=false", ref],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    r = rl("run", "--rm", "--network", "none", "--tls-verify=false", ref, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == interop_output("buildah"), r.stdout
