"""rl build against buildah bud: the same Containerfiles, the same file trees and configs.

Both builders push their result to an OCI layout; the layers are applied here in Python
(whiteouts and opaque directories as image-spec/layer.md says) and the trees compared entry
by entry: type, mode, owner, content, symlink target, hard-link groups. Config fields:
Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts, Volumes, Labels, StopSignal.
Differences that are choices are listed in docs/build.md and filtered here by name.

buildah builds each Containerfile once per session (Corpus.result), with its own storage.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.build_corpus import CASES, Case
from tests.conftest import RlRunner, need_tool

pytestmark = pytest.mark.integration

EMPTY = hashlib.sha256(b"").hexdigest()[:16]
CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
                 "Labels", "StopSignal")
# buildah stamps its version on every image (docs/build.md)
IGNORED_LABELS = {"io.buildah.version"}
# buildah leaves the empty files it bind-mounted over during RUN in the image (mode 0755), the
# empty /run/secrets a secret mount needed and the parents it made for a mount target (/mnt of
# /mnt/o); rl removes the mount points it made, as BuildKit does (docs/build.md)
BUILDAH_MOUNT_POINTS = ("etc/hostname", "etc/hosts", "etc/resolv.conf", "run/secrets", "mnt")


def write_context(case: Case, root: Path, secret: Path) -> None:
    root.mkdir(parents=True)
    for name, value in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if value is None:
            path.mkdir(exist_ok=True)
        elif isinstance(value, tuple) and value[0] == "->":
            os.symlink(value[1], path)
        elif isinstance(value, tuple) and value[0] == "=>":
            os.link(root / value[1], path)
        elif value == "@tar":
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                for member, data, mode in (("a/one", b"1", 0o644), ("a/two", b"22", 0o755)):
                    info = tarfile.TarInfo(member)
                    info.size, info.mode, info.uid, info.gid = len(data), mode, 7, 8
                    tar.addfile(info, io.BytesIO(data))
            path.write_bytes(buf.getvalue())
        elif isinstance(value, tuple):
            path.write_text(value[0])
            path.chmod(value[1])
        else:
            path.write_text(value)
    secret.write_text("s3cret")


def flatten(layout: Path) -> tuple[dict[str, Any], dict[str, tuple], list[frozenset[str]]]:
    """(config, {path: entry}, hard-link groups) of the image in an OCI layout."""
    index = json.loads((layout / "index.json").read_text())
    def blob(digest: str) -> Path:
        return layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    manifest = json.loads(blob(index["manifests"][-1]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    tree: dict[str, tuple] = {}
    links: dict[str, str] = {}
    for layer in manifest["layers"]:
        with tarfile.open(blob(layer["digest"]), "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                name = _clean(m.name)
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq":
                    prefix = parent + "/"
                    for p in [p for p in tree if p.startswith(prefix)]:
                        if not any(_clean(x.name) == p for x in members):
                            del tree[p]
            for m in members:
                name = _clean(m.name)
                base = os.path.basename(name)
                parent = os.path.dirname(name)
                if base == ".wh..wh..opq" or name in ("", "."):
                    continue
                if base.startswith(".wh."):
                    gone = os.path.join(parent, base[4:])
                    for p in [p for p in tree if p == gone or p.startswith(gone + "/")]:
                        del tree[p]
                    continue
                if m.isdir():
                    entry: tuple = ("dir", m.mode & 0o7777, m.uid, m.gid)
                elif m.issym():
                    entry = ("symlink", m.linkname, m.uid, m.gid)
                elif m.islnk():
                    target = _clean(m.linkname)
                    entry = tree[target]
                    links[name] = links.get(target, target)
                elif m.isfile():
                    f = tar.extractfile(m)
                    data = f.read() if f else b""
                    entry = ("file", m.mode & 0o7777, m.uid, m.gid,
                             hashlib.sha256(data).hexdigest()[:16])
                else:
                    entry = ("other", m.type, m.mode & 0o7777)
                if name in tree and tree[name][0] == "dir" and entry[0] == "dir":
                    tree[name] = entry
                else:
                    for p in [p for p in tree if p.startswith(name + "/")] if entry[0] != "dir" else []:
                        del tree[p]
                    tree[name] = entry
    groups: dict[str, set[str]] = {}
    for name, first in links.items():
        groups.setdefault(first, {first}).add(name)
    return config, tree, sorted((frozenset(g) for g in groups.values()), key=sorted)


def is_empty(tree: dict[str, tuple], path: str) -> bool:
    """An empty file, or a directory with nothing below it."""
    if tree[path][0] == "dir":
        return not any(p.startswith(path + "/") for p in tree)
    return tree[path][0] == "file" and tree[path][-1] == EMPTY


def _clean(name: str) -> str:
    """A member name as a path relative to the root ("./a/b", "/a/b", "a/b" → "a/b"); not
    lstrip("./"), which would eat the dot of a top-level ".wh.NAME"."""
    return os.path.normpath("/" + name).lstrip("/")


def config_fields(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("config") or {}
    out = {k: inner.get(k) or None for k in CONFIG_FIELDS}
    labels = {k: v for k, v in (out["Labels"] or {}).items() if k not in IGNORED_LABELS}
    out["Labels"] = labels or None
    return out


class Corpus:
    """Builds every case with buildah once (session) and with rl on demand."""

    def __init__(self, work: Path, registry: str, url: str) -> None:
        self.work = work
        self.registry = registry
        self.base = f"{registry}/rltest/busybox:latest"
        self.url = url
        self.buildah = [need_tool("buildah"), "--root", str(work / "bh-root"), "--runroot",
                        str(work / "bh-run"), "--storage-driver", "overlay"]
        self.results: dict[str, Path] = {}

    def text(self, case: Case, buildah: bool) -> str:
        text = case.buildah_containerfile if buildah and case.buildah_containerfile else \
            case.containerfile
        return text.replace("BASE", self.base).replace("URL", self.url)

    def context(self, case: Case, who: str) -> tuple[Path, Path]:
        ctx = self.work / who / case.name
        secret = self.work / who / f"{case.name}.secret"
        write_context(case, ctx, secret)
        return ctx, secret

    def flags(self, case: Case, secret: Path) -> list[str]:
        return [f.replace("SECRET", str(secret)) for f in case.flags]

    def build_buildah(self, case: Case) -> Path:
        ctx, secret = self.context(case, "buildah")
        (self.work / f"{case.name}.bh").write_text(self.text(case, True))
        tag = f"localhost/corpus-{case.name}:latest"
        # runc: crun 1.8 refuses this host's hybrid cgroups (a user's containers.conf may say
        # so too; the test must not depend on one)
        r = subprocess.run([*self.buildah, "bud", "--tls-verify=false", "--layers", "-q",
                            "--runtime", "runc", "--isolation", "rootless",
                            *self.flags(case, secret), "-f",
                            str(self.work / f"{case.name}.bh"), "-t", tag, str(ctx)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"buildah bud {case.name}: {r.stderr[-2000:]}"
        layout = self.work / "bh-oci" / case.name
        layout.parent.mkdir(exist_ok=True)
        r = subprocess.run([*self.buildah, "push", tag, f"oci:{layout}"], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return layout

    def result(self, case: Case) -> Path:
        """buildah's image of the case, built once per session (when a test first asks)."""
        if case.name not in self.results:
            self.results[case.name] = self.build_buildah(case)
        return self.results[case.name]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, test_registry: Any) -> Iterator[Corpus]:
    """Module scope: the web server's thread must not outlive these tests (a thread that does
    not block a signal takes one the unit tests send to their own process), and buildah's
    storage (files of subordinate ids) is removed with buildah's help at the end."""
    work = tmp_path_factory.mktemp("corpus")
    (work / "www").mkdir()
    (work / "www" / "remote.txt").write_text("from the local web server\n")
    handler = lambda *a, **kw: _Quiet(*a, directory=str(work / "www"), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    corpus = Corpus(work, test_registry.url_host, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield corpus
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        if corpus.results:
            subprocess.run([*corpus.buildah, "rmi", "-a", "-f"], capture_output=True)
            subprocess.run([corpus.buildah[0], "unshare", "rm", "-rf", str(work / "bh-root"),
                            str(work / "bh-run")], capture_output=True)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_same_as_buildah(case: Case, corpus: Corpus, rl: RlRunner) -> None:
    ctx, secret = corpus.context(case, "rl")
    (corpus.work / f"{case.name}.rl").write_text(corpus.text(case, False))
    r = rl("build", "--tls-verify=false", "-q", *corpus.flags(case, secret), "-f",
           str(corpus.work / f"{case.name}.rl"), "-t", f"corpus-{case.name}", str(ctx),
           timeout=300)
    assert r.returncode == 0, r.stderr
    layout = corpus.work / "rl-oci" / case.name
    layout.parent.mkdir(exist_ok=True)
    r = rl("push", f"corpus-{case.name}", f"oci:{layout}")
    assert r.returncode == 0, r.stderr
    rl_config, rl_tree, rl_links = flatten(layout)
    bh_config, bh_tree, bh_links = flatten(corpus.result(case))
    assert config_fields(rl_config) == config_fields(bh_config)
    only_rl = {p: rl_tree[p] for p in rl_tree if p not in bh_tree}
    only_bh = {p: bh_tree[p] for p in bh_tree if p not in rl_tree
               and not (p in BUILDAH_MOUNT_POINTS and is_empty(bh_tree, p))}
    differ = {p: (rl_tree[p], bh_tree[p]) for p in rl_tree if p in bh_tree
              and rl_tree[p] != bh_tree[p]}
    assert (only_rl, only_bh, differ) == ({}, {}, {})
    assert rl_links == bh_links
