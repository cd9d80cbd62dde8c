#!/usr/bin/env python3
"""Build rl's test images from busybox-static and push them with rl's own registry client.

    scripts/build_test_images.py REGISTRY_HOST [--insecure] [--user U --password P]

Images (all tagged :latest under REGISTRY_HOST/rltest/):
  busybox     Docker schema 2, one gzip layer: /bin/busybox, one symlink per applet,
              /etc/passwd and /etc/group with root, user (1000) and nobody.
  multilayer  OCI, three layers: busybox; /data and /opaque files; an upper layer that deletes
              /data/remove-me.txt (.wh. whiteout), makes /opaque opaque (.wh..wh..opq) and adds
              files.
  multiarch   OCI index: the busybox image for the host's architecture, and a tiny image (one
              file, /etc/arch) for the other of linux/amd64 and linux/arm64 (as v8).
  zstd        OCI, the busybox layer compressed with zstd (tar+zstd).
  nonroot     Docker schema 2: busybox plus /home/user/hello.txt owned 1000:1000; User
              "1000:1000", WorkingDir /home/user, Env, Entrypoint and Cmd.
  workdir     OCI: busybox, User "1000:1000" and a WorkingDir, /srv/app/deep, that the layers
              do not have (the runtime creates it, as podman and docker do).
  workdir-link  OCI: busybox, /srv a symlink to /tmp (absolute) and WorkingDir
              /srv/rl-workdir-escape/deep: created in the container's /tmp, never the host's.

Everything is deterministic (fixed mtimes, gzip without a timestamp): the same busybox binary
gives the same digests. Tests import this file with importlib (scripts/ is not a package):
`tests/registry_fixtures.py` has load_image_builder() and push_test_images(reg), and the
module offers build_images() -> {name: BuiltImage | BuiltIndex} and
build_and_push_all(registry_host, insecure=True, credentials=None) -> {name: digest}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rootless.image import mediatypes as mt  # noqa: E402
from rootless.image.manifest import host_platform  # noqa: E402

BUSYBOX = os.environ.get("BUSYBOX", "/bin/busybox")
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "user:x:1000:1000:user:/home/user:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LayerTar:
    """A layer tarball built in memory; entries keep the order they are added."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)
        # podman refuses a layer that names a path twice ("duplicates of file paths not
        # supported"): a directory added again (a shared parent of two trees) is skipped.
        self._dirs: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, uid: int, gid: int,
              mtime: int = MTIME) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name.lstrip("/"))
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.uname = info.gname = ""
        info.mtime = mtime
        return info

    def dir(self, name: str, mode: int = 0o755, uid: int = 0, gid: int = 0,
            mtime: int = MTIME) -> LayerTar:
        key = name.strip("/")
        if key not in self._dirs:
            self._dirs.add(key)
            self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid, mtime))
        return self

    def file(
        self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0,
        mtime: int = MTIME,
    ) -> LayerTar:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid, mtime)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))
        return self

    def symlink(self, name: str, target: str) -> LayerTar:
        info = self._info(name, tarfile.SYMTYPE, 0o777, 0, 0)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def whiteout(self, path: str) -> LayerTar:
        """An empty `.wh.NAME` file: NAME is deleted from the layers below."""
        parent, _, name = path.rstrip("/").rpartition("/")
        return self.file(f"{parent}/.wh.{name}", b"")

    def opaque(self, directory: str) -> LayerTar:
        """`.wh..wh..opq`: the directory hides everything the layers below put in it."""
        return self.file(f"{directory.rstrip('/')}/.wh..wh..opq", b"")

    def tree(self, src: str, dest: str, keep_mtimes: bool = False) -> LayerTar:
        """Add a host directory tree (regular files, directories and symlinks) under dest,
        owned by root, in a stable order. keep_mtimes: files keep their own times (Python
        checks a .pyc against its source's mtime, and recompiles when they differ)."""
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else f"{dest}/{rel}"
            self.dir(base)
            for name in sorted(files):
                path = os.path.join(root, name)
                if os.path.islink(path):
                    self.symlink(f"{base}/{name}", os.readlink(path))
                elif os.path.isfile(path):
                    try:
                        data = Path(path).read_bytes()
                    except OSError:
                        continue
                    st = os.stat(path)
                    self.file(f"{base}/{name}", data, st.st_mode & 0o7777,
                              mtime=int(st.st_mtime) if keep_mtimes else MTIME)
        return self

    def extend(self, layer: bytes) -> LayerTar:
        """Append every entry of another (uncompressed) layer tar, in its order."""
        with tarfile.open(fileobj=io.BytesIO(layer), mode="r:") as src:
            for info in src:
                if info.isdir():
                    self._dirs.add(info.name.strip("/"))
                self._tar.addfile(info, src.extractfile(info) if info.isreg() else None)
        return self

    def finish(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


@dataclass
class Layer:
    media_type: str
    blob: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return sha256(self.blob)


def make_layer(tar: bytes, compression: str, oci: bool, level: int = 6) -> Layer:
    if compression == "gzip":
        blob = gzip.compress(tar, compresslevel=level, mtime=0)
        media_type = mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP
    elif compression == "zstd":
        import zstandard

        blob = zstandard.ZstdCompressor(level=3).compress(tar)
        media_type = mt.OCI_LAYER_ZSTD
    else:
        blob = tar
        media_type = mt.OCI_LAYER_TAR if oci else mt.DOCKER_LAYER_TAR
    return Layer(media_type, blob, sha256(tar))


@dataclass
class BuiltImage:
    oci: bool
    layers: list[Layer]
    config: bytes
    manifest: bytes

    @property
    def media_type(self) -> str:
        return mt.OCI_MANIFEST if self.oci else mt.DOCKER_MANIFEST

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)


@dataclass
class BuiltIndex:
    manifests: list[tuple[dict[str, str], BuiltImage]]
    index: bytes = b""
    media_type: str = mt.OCI_INDEX
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return sha256(self.index)


def make_image(
    layers: list[Layer],
    *,
    oci: bool,
    config: dict[str, Any] | None = None,
    architecture: str | None = None,
    variant: str | None = None,
) -> BuiltImage:
    arch = architecture or host_platform().architecture
    image_config: dict[str, Any] = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": config or {"Env": [PATH_ENV], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": "rl scripts/build_test_images.py"}]
        * len(layers),
    }
    if variant:
        image_config["variant"] = variant
    config_body = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
        "config": {
            "mediaType": mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
            "digest": sha256(config_body),
            "size": len(config_body),
        },
        "layers": [
            {"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.blob)}
            for layer in layers
        ],
    }
    return BuiltImage(oci, layers, config_body, json.dumps(manifest, indent=2).encode())


def busybox_tar(busybox: str = BUSYBOX) -> bytes:
    binary = Path(busybox).read_bytes()
    applets = subprocess.run(
        [busybox, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    tar = LayerTar()
    for d in (
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "etc",
        "home",
        "proc",
        "sys",
        "dev",
        "run",
        "var",
    ):
        tar.dir(d)
    tar.dir("root", 0o700)
    tar.dir("home/user", 0o755, 1000, 1000)
    tar.dir("tmp", 0o1777)
    tar.dir("var/tmp", 0o1777)
    tar.file("bin/busybox", binary, 0o755)
    for applet in sorted(set(applets) - {"busybox"}):
        tar.symlink(f"bin/{applet}", "busybox")
    tar.file("etc/passwd", PASSWD.encode())
    tar.file("etc/group", GROUP.encode())
    return tar.finish()


# Modes and owners the many-directories image cycles through: read-only, sticky, setgid,
# private and group-owned directories, so a mode or owner left unapplied shows.
MANY_DIR_MODES = (0o755, 0o750, 0o711, 0o555, 0o700, 0o775, 0o1777, 0o2755, 0o500)
MANY_DIR_OWNERS = ((0, 0), (1000, 1000), (33, 33), (0, 1000))


def add_many_dirs(tar: Any, count: int, top: str = "tree") -> Any:
    """`count` directories under `top` (groups of 100), with cycling modes, owners and mtimes
    and a file in every tenth one: far more directories than one process may hold open (the
    soft RLIMIT_NOFILE is 1024 on most distributions). `tar` is a LayerTar or any builder with
    the same dir()/file() methods."""
    tar.dir(top, 0o755)
    groups = (count + 99) // 100
    for g in range(groups):
        tar.dir(f"{top}/g{g:03d}", 0o755)
    for i in range(count):
        path = f"{top}/g{i // 100:03d}/d{i:05d}"
        uid, gid = MANY_DIR_OWNERS[i % len(MANY_DIR_OWNERS)]
        mode = MANY_DIR_MODES[i % len(MANY_DIR_MODES)]
        info_mtime = MTIME - 61 * i
        tar.dir(path, mode, uid, gid, mtime=info_mtime)
        if i % 10 == 0:
            tar.file(f"{path}/f", f"{i}\n".encode(), 0o640, uid, gid, mtime=info_mtime + 1)
    return tar


def many_dirs_image(count: int = 3000) -> BuiltImage:
    """One gzip layer: busybox (so that `rl run -u 1000 IMAGE id` can run) and `count`
    directories, as a distribution's base image has thousands of them in one layer."""
    tar = LayerTar()
    tar.extend(busybox_tar())
    add_many_dirs(tar, count)
    return make_image([make_layer(tar.finish(), "gzip", oci=True)], oci=True)


def build_images(busybox: str = BUSYBOX) -> dict[str, BuiltImage | BuiltIndex]:
    base_tar = busybox_tar(busybox)
    base_gzip_docker = make_layer(base_tar, "gzip", oci=False)
    base_gzip_oci = make_layer(base_tar, "gzip", oci=True)
    images: dict[str, BuiltImage | BuiltIndex] = {}

    images["busybox"] = make_image([base_gzip_docker], oci=False)

    files = (
        LayerTar()
        .dir("data")
        .file("data/keep.txt", b"keep\n")
        .file("data/remove-me.txt", b"this file is deleted by the upper layer\n")
        .dir("opaque")
        .file("opaque/old.txt", b"hidden by the opaque marker\n")
        .dir("opaque/sub")
        .file("opaque/sub/old2.txt", b"hidden too\n")
        .finish()
    )
    upper = (
        LayerTar()
        .dir("data")
        .whiteout("data/remove-me.txt")
        .file("data/added.txt", b"added by the upper layer\n")
        .dir("opaque")
        .opaque("opaque")
        .file("opaque/new.txt", b"the only file left in /opaque\n")
        .finish()
    )
    images["multilayer"] = make_image(
        [base_gzip_oci, make_layer(files, "gzip", oci=True), make_layer(upper, "gzip", oci=True)],
        oci=True,
    )

    host_arch = host_platform().architecture
    entries: list[tuple[dict[str, str], BuiltImage]] = []
    for arch in ("amd64", "arm64"):
        platform = {"os": "linux", "architecture": arch}
        if arch == "arm64":
            platform["variant"] = "v8"
        if arch == host_arch:
            image = make_image([base_gzip_oci], oci=True)
        else:
            tiny = LayerTar().dir("etc").file("etc/arch", f"{arch}\n".encode()).finish()
            image = make_image(
                [make_layer(tiny, "gzip", oci=True)],
                oci=True,
                architecture=arch,
                variant=platform.get("variant"),
                config={"Env": [PATH_ENV], "Cmd": ["/bin/cat", "/etc/arch"]},
            )
        entries.append((platform, image))
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": img.media_type,
                "digest": img.digest,
                "size": len(img.manifest),
                "platform": plat,
            }
            for plat, img in entries
        ],
    }
    images["multiarch"] = BuiltIndex(entries, json.dumps(index, indent=2).encode())

    images["zstd"] = make_image([make_layer(base_tar, "zstd", oci=True)], oci=True)

    home = (
        LayerTar()
        .dir("home/user", 0o755, 1000, 1000)
        .file("home/user/hello.txt", b"hello from a non-root image\n", 0o644, 1000, 1000)
        .finish()
    )
    images["nonroot"] = make_image(
        [base_gzip_docker, make_layer(home, "gzip", oci=False)],
        oci=False,
        config={
            "User": "1000:1000",
            "WorkingDir": "/home/user",
            "Env": [PATH_ENV, "GREETING=hello", "HOME=/home/user"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo $GREETING from $(id -u):$(id -g) in $(pwd)"],
        },
    )
    missing_workdir = {"User": "1000:1000", "WorkingDir": "/srv/app/deep", "Env": [PATH_ENV],
                       "Cmd": ["/bin/sh", "-c", "pwd; id -u"]}
    images["workdir"] = make_image([base_gzip_oci], oci=True, config=missing_workdir)
    link = LayerTar().symlink("srv", "/tmp").finish()
    images["workdir-link"] = make_image(
        [base_gzip_oci, make_layer(link, "gzip", oci=True)],
        oci=True,
        config=dict(missing_workdir, WorkingDir="/srv/rl-workdir-escape/deep"),
    )
    return images


def push_image(client: Any, repository: str, tag: str | None, image: BuiltImage) -> str:
    for layer in image.layers:
        client.push_blob(repository, layer.blob, layer.digest)
    client.push_blob(repository, image.config, image.config_digest)
    return str(
        client.push_manifest(repository, tag or image.digest, image.manifest, image.media_type)
    )


def push_all(
    client: Any, images: dict[str, BuiltImage | BuiltIndex], namespace: str = "rltest"
) -> dict[str, str]:
    digests: dict[str, str] = {}
    for name, image in images.items():
        repository = f"{namespace}/{name}"
        if isinstance(image, BuiltIndex):
            for _, child in image.manifests:
                push_image(client, repository, None, child)
            digests[name] = client.push_manifest(
                repository, "latest", image.index, image.media_type
            )
        else:
            digests[name] = push_image(client, repository, "latest", image)
    return digests


def build_and_push_all(
    registry_host: str, insecure: bool = True, credentials: Any = None
) -> dict[str, str]:
    """Build every test image and push it to REGISTRY_HOST/rltest/NAME:latest."""
    from rootless.image.registry import RegistryClient

    images = build_images()
    with RegistryClient(registry_host, insecure=insecure, credentials=credentials) as client:
        return push_all(client, images)


# Host trees that make the benchmark's "big" image: real files, ~100 MB unpacked.
BIG_IMAGE_TREES = ("/usr/lib/python3.11", "/usr/share/perl", "/usr/lib/x86_64-linux-gnu/perl")


def push_big_image(registry_host: str, insecure: bool = True, name: str = "rltest/big") -> str:
    """The pull benchmark's image: busybox plus one layer per host tree in BIG_IMAGE_TREES
    (those that exist), gzip-compressed, pushed as NAME:latest. Returns the manifest digest."""
    from rootless.image.registry import RegistryClient

    layers = [make_layer(busybox_tar(), "gzip", oci=True)]
    for tree in BIG_IMAGE_TREES:
        if os.path.isdir(tree):
            tar = LayerTar()
            parts = tree.strip("/").split("/")
            for i in range(1, len(parts)):
                tar.dir("/".join(parts[:i]))
            layers.append(make_layer(tar.tree(tree, tree.strip("/")).finish(), "gzip", oci=True))
    image = make_image(layers, oci=True)
    with RegistryClient(registry_host, insecure=insecure) as client:
        return push_image(client, name, "latest", image)


# Host trees for the single-layer benchmark image: ~49 MB in ~3,500 entries of ~14 kB on
# average, the shape of a distribution's base layer (a Debian minbase has ~8,000 entries of
# ~15 kB). Debian 12 has them all (perl-base is essential; perl-modules comes with perl).
SINGLE_LAYER_TREES = ("/usr/lib/x86_64-linux-gnu/perl", "/usr/share/perl",
                      "/usr/lib/x86_64-linux-gnu/perl-base", "/usr/share/zoneinfo")


def single_layer_image() -> BuiltImage:
    """The single-layer pull benchmark's image: busybox and the SINGLE_LAYER_TREES that
    exist, in ONE gzip layer."""
    tar = LayerTar()
    tar.extend(busybox_tar())
    for tree in SINGLE_LAYER_TREES:
        if os.path.isdir(tree):
            parts = tree.strip("/").split("/")
            for i in range(1, len(parts)):
                tar.dir("/".join(parts[:i]))
            tar.tree(tree, tree.strip("/"))
    return make_image([make_layer(tar.finish(), "gzip", oci=True)], oci=True)


# The host's Python, as base images for the multi-stage Python build (tests/pyapp): the
# interpreter with the shared libraries it and its extension modules load (as ldd finds
# them), the standard library, and for the build stage's image the venv machinery Debian
# splits out (ensurepip and the pip/setuptools/wheel wheels it installs from).
PYTHON = "/usr/bin/python3.11"
PYTHON_STDLIB = "/usr/lib/python3.11"
PYTHON_WHEELS = "/usr/share/python-wheels"
SLIM_SKIP = ("ensurepip", "idlelib", "tkinter", "lib2to3", "pydoc_data", "turtledemo")


def _ldd(paths: list[str]) -> list[str]:
    """The shared libraries (as the loader names them) that these ELF files need."""
    out = subprocess.run(["ldd", *paths], capture_output=True, text=True).stdout
    found = set()
    for line in out.splitlines():
        words = line.split()
        if "=>" in words and len(words) > words.index("=>") + 1:
            lib = words[words.index("=>") + 1]
            if lib.startswith("/"):
                found.add(lib)
        elif words and words[0].startswith("/") and "ld-linux" in words[0]:
            found.add(words[0])
    return sorted(found)


def python_runtime_tar(slim: bool) -> bytes:
    """One layer: the interpreter, its libraries and the standard library (slim: without the
    parts an application image does not need)."""
    tar = LayerTar()
    modules = [os.path.join(root, f) for root, _, files in os.walk(PYTHON_STDLIB)
               for f in files if f.endswith(".so")]
    libs = _ldd([PYTHON, *modules])
    made = set()
    for path in ["/usr/bin/python3.11", *libs]:
        parent = os.path.dirname(path).strip("/")
        parts = parent.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                made.add(d)
                tar.dir(d)
        tar.file(path, Path(os.path.realpath(path)).read_bytes(), 0o755)
    tar.symlink("usr/bin/python3", "python3.11")
    tar.symlink("usr/bin/python", "python3.11")
    tar.dir("usr/lib")
    if slim:
        tar.dir("usr/lib/python3.11")
        for name in sorted(os.listdir(PYTHON_STDLIB)):
            src = os.path.join(PYTHON_STDLIB, name)
            if name in SLIM_SKIP:
                continue
            if os.path.isdir(src) and not os.path.islink(src):
                tar.tree(src, f"usr/lib/python3.11/{name}", keep_mtimes=True)
            elif os.path.islink(src):
                tar.symlink(f"usr/lib/python3.11/{name}", os.readlink(src))
            else:
                tar.file(f"usr/lib/python3.11/{name}", Path(src).read_bytes(),
                         os.stat(src).st_mode & 0o7777, mtime=int(os.stat(src).st_mtime))
    else:
        tar.tree(PYTHON_STDLIB, "usr/lib/python3.11", keep_mtimes=True)
    return tar.finish()


def python_venv_tar() -> bytes:
    """The build stage's extra layer: ensurepip's wheels and the CA bundle (pip over TLS)."""
    tar = LayerTar().dir("usr/share")
    tar.tree(PYTHON_WHEELS, PYTHON_WHEELS.strip("/"))
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if os.path.exists(bundle):
        tar.dir("etc/ssl").dir("etc/ssl/certs")
        tar.file(bundle, Path(os.path.realpath(bundle)).read_bytes())
    return tar.finish()


def push_python_images(registry_host: str, insecure: bool = True) -> dict[str, str]:
    """REGISTRY/rltest/python:3.11 (busybox, the full runtime, the venv layer) and
    rltest/python:3.11-slim (busybox, the slim runtime). gzip level 1: these layers are
    ~50 MB and the suite builds them once per session on a 2-core machine."""
    from rootless.image.registry import RegistryClient

    base = make_layer(busybox_tar(), "gzip", oci=True)
    config = {"Env": [PATH_ENV, "LANG=C.UTF-8"], "Cmd": ["python3"]}
    full = make_image([base, make_layer(python_runtime_tar(False), "gzip", True, level=1),
                       make_layer(python_venv_tar(), "gzip", True, level=1)],
                      oci=True, config=config)
    slim = make_image([base, make_layer(python_runtime_tar(True), "gzip", True, level=1)],
                      oci=True, config=config)
    with RegistryClient(registry_host, insecure=insecure) as client:
        return {"python:3.11": push_image(client, "rltest/python", "3.11", full),
                "python:3.11-slim": push_image(client, "rltest/python", "3.11-slim", slim)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("registry", help="HOST:PORT of the registry, e.g. 127.0.0.1:5000")
    parser.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP / skip TLS verification"
    )
    parser.add_argument("--user", help="registry user name")
    parser.add_argument("--password", help="registry password (or $RL_REGISTRY_PASSWORD)")
    args = parser.parse_args(argv)
    credentials = None
    if args.user:
        from rootless.image.auth import Credentials

        credentials = Credentials(
            args.user, args.password or os.environ.get("RL_REGISTRY_PASSWORD", "")
        )
    for name, digest in build_and_push_all(args.registry, args.insecure, credentials).items():
        print(f"{args.registry}/rltest/{name}:latest {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
