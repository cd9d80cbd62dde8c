"""`rl build` and `rl commit` as a user runs them: the layer cache (hits, misses, --no-cache,
both prunes), Containerfiles that are wrong (file:line, exit 125, nothing run), a failing RUN
(its exit status, nothing tagged, nothing left behind) and a container committed to an image.

Bases come from the session's local registry (tests/conftest.py test_registry).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import RlRunner, container_processes

pytestmark = pytest.mark.integration


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


def build(rl: RlRunner, ctx: Path, *flags: str, ok: bool = True) -> subprocess.CompletedProcess:
    r = rl("build", "--tls-verify=false", *flags, str(ctx), timeout=180)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def image_id(r: subprocess.CompletedProcess) -> str:
    return r.stdout.strip().splitlines()[-1]


def images(rl: RlRunner) -> list[dict]:
    r = rl("images", "--format", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def layer_dirs(rl: RlRunner) -> set[str]:
    layers = rl.data / "layers"
    return {p.name for p in layers.iterdir() if re.fullmatch(r"[0-9a-f]{64}", p.name)} \
        if layers.is_dir() else set()


def leftovers(rl: RlRunner) -> list[str]:
    """What a build must not leave: working trees, temporary files, containers, state."""
    out = []
    for sub in ("build", "tmp", "containers"):
        d = rl.data / sub
        if d.is_dir():
            out += [f"{sub}/{p.name}" for p in d.iterdir()]
    if rl.runtime.is_dir():
        out += [f"runtime/{p.name}" for p in rl.runtime.iterdir()
                if p.is_dir() and re.fullmatch(r"[0-9a-f]{64}", p.name)]
    mounts = Path("/proc/self/mountinfo").read_text()
    out += [f"mount {line}" for line in mounts.splitlines() if str(rl.data) in line]
    return out


@pytest.fixture
def base(test_registry) -> str:
    return f"{test_registry.url_host}/rltest/busybox"


def test_cache_hits_misses_no_cache_and_prunes(rl: RlRunner, base: str, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {
        "a.txt": "a1\n", "b.txt": "b1\n",
        "Containerfile": f"FROM {base}\nCOPY a.txt /a.txt\n"
                         "RUN echo ran-the-$((1+1))-step && cat /a.txt > /copy\n"
                         "COPY b.txt /b.txt\nENV X=1\nWORKDIR /made/at/the/end\n"})
    assert rl("pull", "-q", "--tls-verify=false", base).returncode == 0
    base_layers = layer_dirs(rl)
    first = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" in first.stdout and "Using cache" not in first.stdout

    # unchanged: every step from the cache, nothing run, the same image
    again = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" not in again.stdout
    assert again.stdout.count("--> Using cache") == 3
    assert image_id(again) == image_id(first)
    assert leftovers(rl) == []

    # the last COPY's source changed: the steps before it still come from the cache
    (ctx / "b.txt").write_text("b2\n")
    changed_b = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" not in changed_b.stdout
    assert changed_b.stdout.count("--> Using cache") == 2
    assert image_id(changed_b) != image_id(first)

    # the first COPY's source changed: everything after it runs again
    (ctx / "a.txt").write_text("a2\n")
    changed_a = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" in changed_a.stdout and "Using cache" not in changed_a.stdout
    r = rl("run", "--rm", "--network", "none", "cached", "cat", "/copy", "/b.txt")
    assert r.stdout == "a2\nb2\n", r.stderr
    r = rl("run", "--rm", "--network", "none", "cached", "pwd")
    assert r.stdout == "/made/at/the/end\n", r.stderr

    # --no-cache runs everything (and records the new layers for the next build)
    no_cache = build(rl, ctx, "--no-cache", "-t", "cached")
    assert "ran-the-2-step" in no_cache.stdout and "Using cache" not in no_cache.stdout

    # rl builder prune forgets every step; the image keeps its layers
    r = rl("builder", "prune", "-f")
    assert r.returncode == 0 and re.search(r"Removed [1-9]\d* cache records", r.stdout), r.stdout
    assert not list((rl.data / "build-cache").glob("*.json"))
    after_prune = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" in after_prune.stdout

    # rl image prune drops records whose layer no image holds, and those layers
    assert list((rl.data / "build-cache").glob("*.json"))
    names = [n for image in images(rl) for n in image["Names"] if "cached" in n]
    assert rl("rmi", *names).returncode == 0
    r = rl("image", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert not [p for p in (rl.data / "build-cache").glob("*.json")
                if "diff_id" in json.loads(p.read_text())]
    assert layer_dirs(rl) == base_layers  # only the base image's layers are left
    rebuilt = build(rl, ctx, "-t", "cached")
    assert "ran-the-2-step" in rebuilt.stdout
    assert leftovers(rl) == []


BAD = [
    ("FROBNICATE x\n", [], 3, "unknown instruction: FROBNICATE"),
    ("COPY ../outside /x\n", [], 3, "forbidden path outside the build context: ../outside"),
    ("COPY a.txt\n", [], 3, "COPY requires at least two arguments"),
    ("RUN --mount=type=bogus,target=/x true\n", [], 3, "--mount type 'bogus' is not supported"),
    ("COPY --from=2 /x /y\n", [], 3, "invalid from flag value 2: refers to the current or a "
                                     "later stage"),
    ("RUN true\n", ["--target", "nosuch"], None, "target stage 'nosuch' could not be found"),
]


@pytest.mark.parametrize("tail,flags,line,reason", BAD, ids=[b[3].split(":")[0][:30] for b in BAD])
def test_a_wrong_containerfile_fails_before_anything_runs(rl: RlRunner, base: str, tmp_path: Path,
                                                          tail: str, flags: list[str],
                                                          line: int | None, reason: str) -> None:
    ctx = write(tmp_path / "ctx", {"a.txt": "a", "Containerfile":
                                   f"FROM {base}\nRUN echo should-not-run\n{tail}"})
    r = build(rl, ctx, *flags, "-t", "wrong", ok=False)
    assert r.returncode == 125, r.stderr
    where = f"Containerfile:{line}: " if line else "Containerfile: "
    assert r.stderr.startswith(f"Error: {where}{reason}"), r.stderr
    assert "should-not-run" not in r.stdout and "STEP" not in r.stdout
    assert images(rl) == [] and leftovers(rl) == []


def test_an_unset_required_arg_names_itself(rl: RlRunner, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Containerfile": "ARG BASE\nFROM ${BASE:?required}\n"})
    r = build(rl, ctx, ok=False)
    assert r.returncode == 125
    assert r.stderr.startswith("Error: Containerfile:2: BASE: required"), r.stderr


def test_a_failing_run_stops_the_build_tags_nothing_and_leaves_nothing(
        rl: RlRunner, base: str, tmp_path: Path) -> None:
    marker = f"31{os.getpid() % 100000}"
    ctx = write(tmp_path / "ctx", {"Containerfile": (
        f"FROM {base}\nRUN echo first > /first\n"
        # a background process must not outlive the step (the PID namespace ends with it)
        f"RUN (sleep {marker} &) ; echo partial > /partial; exit 3\n"
        "RUN echo never-reached\n")})
    r = build(rl, ctx, "-t", "half", ok=False)
    assert r.returncode == 3, r.stderr  # podman exits with the RUN's status
    assert r.stderr.strip().endswith(
        f'Containerfile:3: building at STEP "RUN (sleep {marker} &) ; echo partial > /partial; '
        'exit 3": while running runtime: exit status 3'), r.stderr
    assert "never-reached" not in r.stdout
    assert [n for image in images(rl) for n in image["Names"] if "half" in n] == []
    assert container_processes(f"sleep {marker}") == []
    assert rl("ps", "-a", "-q").stdout == ""
    assert leftovers(rl) == []
    # a command that is not there: 127, as podman passes the RUN's status through
    write(ctx, {"Containerfile": f"FROM {base}\nRUN no-such-command-here\n"})
    r = build(rl, ctx, ok=False)
    assert r.returncode == 127 and "no-such-command-here: not found" in r.stderr, r.stderr
    assert leftovers(rl) == []


def test_commit_a_container(rl: RlRunner, base: str, tmp_path: Path) -> None:
    r = rl("run", "--name", "to-commit", "--network", "none", "--tls-verify=false", base, "sh",
           "-c", "echo made > /made && mkdir -p /srv/d && chown 33:33 /srv/d && rm /etc/group")
    assert r.returncode == 0, r.stderr
    upper = next((rl.data / "containers").iterdir()) / "upper"
    before = sorted(str(p.relative_to(upper)) for p in upper.rglob("*"))
    r = rl("commit", "-m", "the message", "-a", "someone",
           "--change", 'CMD ["cat", "/made"]', "--change", "ENV FROM_COMMIT=yes",
           "--change", "WORKDIR /srv/d", "to-commit", "committed")
    assert r.returncode == 0, r.stderr
    new_id = r.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", new_id)
    r = rl("run", "--rm", "--network", "none", "committed")
    assert r.stdout == "made\n", r.stderr
    r = rl("run", "--rm", "--network", "none", "committed", "sh", "-c",
           "echo $FROM_COMMIT; pwd; stat -c %u:%g /srv/d; test -e /etc/group || echo no-group")
    assert r.stdout.split() == ["yes", "/srv/d", "33:33", "no-group"], r.stderr
    # the new layer: the changes, a whiteout, and not the files rl run mounted over
    layout = tmp_path / "layout"
    assert rl("push", "committed", f"oci:{layout}").returncode == 0
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    with tarfile.open(blobs / manifest["layers"][-1]["digest"][7:]) as tar:
        names = sorted(tar.getnames())
    assert names == ["etc", "etc/.wh.group", "made", "srv", "srv/d"], repr(names)
    r = rl("image", "inspect", "committed")
    (info,) = json.loads(r.stdout)
    assert info["Author"] == "someone" and info["Id"] == new_id
    assert info["History"][-1]["comment"] == "the message"
    assert len(info["RootFS"]["Layers"]) == 2
    # the container keeps its own storage, untouched
    assert sorted(str(p.relative_to(upper)) for p in upper.rglob("*")) == before
    # and runs again on it: its command fails now, as /etc/group is already gone
    r = rl("start", "-a", "to-commit")
    assert r.returncode == 1 and "can't remove '/etc/group'" in r.stderr, r.stderr
    r = rl("commit", "no-such-container", "x")
    assert r.returncode == 125 and "no-such-container" in r.stderr
    r = rl("commit", "--change", "RUN true", "to-commit", "x")
    assert r.returncode == 125 and "RUN is not allowed" in r.stderr, r.stderr


def test_blobs_are_compressed_when_pushed_or_asked_for(rl: RlRunner, base: str,
                                                       tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"Containerfile": (
        f"FROM {base} AS build\nRUN echo made-in-build > /a\n"
        f"FROM {base}\nCOPY --from=build /a /copied\n")})
    assert rl("pull", "-q", "--tls-verify=false", base).returncode == 0
    pulled = {p.name for p in (rl.data / "blobs" / "sha256").iterdir()}
    build(rl, ctx, "-t", "final")
    blobs = {p.name for p in (rl.data / "blobs" / "sha256").iterdir()}
    assert len(blobs - pulled) == 2  # a config and a manifest: no layer was compressed
    # the build stage as an image (from the cache); pushed, its RUN layer gets a blob, packed
    # from the layer directory, and it is the same tar
    r = build(rl, ctx, "--target", "build", "-t", "stage")
    assert "--> Using cache" in r.stdout and "\nmade-in-build" not in r.stdout
    layout = tmp_path / "layout"
    assert rl("push", "stage", f"oci:{layout}").returncode == 0
    index = json.loads((layout / "index.json").read_text())
    sha = layout / "blobs" / "sha256"
    manifest = json.loads((sha / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((sha / manifest["config"]["digest"][7:]).read_text())
    run_layer = manifest["layers"][-1]
    assert run_layer["digest"][7:] not in blobs
    import gzip
    import hashlib

    tar = gzip.decompress((sha / run_layer["digest"][7:]).read_bytes())
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == config["rootfs"]["diff_ids"][-1]
    # another compression: the same layers, new blobs
    build(rl, ctx, "--target", "build", "--compression-format", "zstd", "-t", "stage-zstd")
    (info,) = json.loads(rl("image", "inspect", "stage-zstd").stdout)
    assert info["RootFS"]["Layers"] == config["rootfs"]["diff_ids"]
    layout = tmp_path / "layout-zstd"
    assert rl("push", "stage-zstd", f"oci:{layout}").returncode == 0
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:])
                          .read_text())
    assert manifest["layers"][-1]["mediaType"].endswith("+zstd")
    r = rl("run", "--rm", "--network", "none", "stage-zstd", "cat", "/a")
    assert r.stdout == "made-in-build\n", r.stderr
    # rl save packs what a built image lacks too; the archive loads into another store
    build(rl, ctx, "-t", "final")
    archive = tmp_path / "final.tar"
    assert rl("save", "-o", str(archive), "final").returncode == 0
    fresh = RlRunner(rl.exe, tmp_path / "fresh")
    assert fresh("load", "-i", str(archive)).returncode == 0
    r = fresh("run", "--rm", "--network", "none", "final", "cat", "/copied")
    assert r.stdout == "made-in-build\n", r.stderr


def test_steps_that_change_nothing(rl: RlRunner, base: str, tmp_path: Path) -> None:
    # each RUN is a layer, empty ones too (as Docker's): the image holds the same empty
    # layer twice, and overlayfs refuses a lower directory given twice (ELOOP)
    ctx = write(tmp_path / "ctx", {"Containerfile": f"FROM {base}\nRUN true\nRUN true\n"
                                                    "RUN echo after > /after\n"})
    build(rl, ctx, "-t", "empties")
    (info,) = json.loads(rl("image", "inspect", "empties").stdout)
    layers = info["RootFS"]["Layers"]
    assert len(layers) == 4 and layers[1] == layers[2]
    r = rl("run", "--rm", "--network", "none", "empties", "cat", "/after")
    assert r.stdout == "after\n", r.stderr


def test_add_extracts_xz_and_bzip2_archives(rl: RlRunner, base: str, tmp_path: Path) -> None:
    import io as _io

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name, mode in (("a.tar.xz", "w:xz"), ("b.tar.bz2", "w:bz2")):
        with tarfile.open(ctx / name, mode) as tar:
            info = tarfile.TarInfo(f"{name[0]}/file")
            data = f"from {name}\n".encode()
            info.size, info.uid, info.gid = len(data), 7, 8
            tar.addfile(info, _io.BytesIO(data))
    write(ctx, {"Containerfile": f"FROM {base}\nADD a.tar.xz /x/\nADD --chown=33:33 b.tar.bz2 /y/\n"})
    build(rl, ctx, "-t", "archives")
    r = rl("run", "--rm", "--network", "none", "archives", "sh", "-c",
           "cat /x/a/file /y/b/file; stat -c %u:%g /x/a/file /y/b/file")
    assert r.stdout.split("\n") == ["from a.tar.xz", "from b.tar.bz2", "7:8", "33:33", ""], r.stderr
