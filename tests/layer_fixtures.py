"""Builders of image layers (tar streams), honest and hostile, for the unpack tests.

`LayerBuilder` writes any tar entry kind with tarfile, including the ones tarfile's own writer
would refuse to make dangerous (it stores names and link targets verbatim). `malicious_layers`
returns the hostile set the unit and security suites both unpack; each entry says whether the
layer must be refused (ImageError) or may unpack with the attack neutralised, and the test
checks that a sentinel directory outside the store is left exactly as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MTIME = 1_700_000_000


class LayerBuilder:
    def __init__(self, fmt: int = tarfile.PAX_FORMAT) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=fmt,
                                 encoding="utf-8", errors="surrogateescape")

    def _info(self, name: str | bytes, kind: bytes, mode: int, uid: int = 0, gid: int = 0,
              xattrs: dict[str, bytes] | None = None, mtime: int = MTIME) -> tarfile.TarInfo:
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = mtime
        if xattrs:
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                for k, v in xattrs.items()
            }
        return info

    def file(self, name: str | bytes, data: bytes = b"", mode: int = 0o644, uid: int = 0,
             gid: int = 0, xattrs: dict[str, bytes] | None = None,
             mtime: int = MTIME) -> LayerBuilder:
        info = self._info(name, tarfile.REGTYPE, mode, uid, gid, xattrs, mtime)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))
        return self

    def dir(self, name: str | bytes, mode: int = 0o755, uid: int = 0, gid: int = 0,
            xattrs: dict[str, bytes] | None = None, mtime: int = MTIME) -> LayerBuilder:
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid, xattrs, mtime))
        return self

    def symlink(self, name: str | bytes, target: str, uid: int = 0, gid: int = 0) -> LayerBuilder:
        info = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def hardlink(self, name: str | bytes, target: str) -> LayerBuilder:
        info = self._info(name, tarfile.LNKTYPE, 0o644)
        info.linkname = target
        self._tar.addfile(info)
        return self

    def device(self, name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1,
               minor: int = 3) -> LayerBuilder:
        info = self._info(name, kind, 0o666)
        info.devmajor, info.devminor = major, minor
        self._tar.addfile(info)
        return self

    def fifo(self, name: str) -> LayerBuilder:
        self._tar.addfile(self._info(name, tarfile.FIFOTYPE, 0o644))
        return self

    def whiteout(self, path: str) -> LayerBuilder:
        """`.wh.NAME` beside NAME, as docker and podman write a deletion."""
        head, _, tail = path.rpartition("/")
        return self.file(f"{head}/.wh.{tail}" if head else f".wh.{tail}")

    def opaque(self, dirpath: str) -> LayerBuilder:
        return self.file(f"{dirpath.rstrip('/')}/.wh..wh..opq")

    def raw(self, info: tarfile.TarInfo, data: bytes | None = None) -> LayerBuilder:
        self._tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return self

    def build(self) -> bytes:
        self._tar.close()
        return self._buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class MaliciousLayer:
    name: str
    data: bytes  # uncompressed tar
    refused: bool  # True: unpack must raise ImageError; False: it unpacks, neutralised
    check: Callable[[Path], None] | None = None  # extra assertions on the layer dir


def _exists(rel: str) -> Callable[[Path], None]:
    def check(layer: Path) -> None:
        assert os.path.lexists(layer / rel), f"{rel} should exist in the layer"

    return check


def _absent_xattrs(rel: str) -> Callable[[Path], None]:
    def check(layer: Path) -> None:
        names = os.listxattr(layer / rel, follow_symlinks=False)
        assert not [n for n in names if n.startswith("user.overlay.")], names

    return check


def _regular(rel: str, data: bytes) -> Callable[[Path], None]:
    def check(layer: Path) -> None:
        st = os.lstat(layer / rel)
        assert not os.path.islink(layer / rel)
        assert (layer / rel).read_bytes() == data
        assert st.st_nlink == 1

    return check


def malicious_layers(sentinel: Path) -> list[MaliciousLayer]:
    """Hostile layers aimed at `sentinel` (an absolute directory outside the store).

    The sentinel holds `file` (b"original") before each unpack. Relative escapes climb 8
    levels, far more than any test's layer directory is deep below the sentinel's parent.
    """
    s = str(sentinel)
    up = "../" * 8 + s.lstrip("/")
    out = [
        MaliciousLayer("dotdot-escape", LayerBuilder().file(f"{up}/pwned", b"x").build(), True),
        MaliciousLayer("dotdot-inner-escape",
                       LayerBuilder().file("a/b/../../../pwned", b"x").build(), True),
        MaliciousLayer("absolute-path", LayerBuilder().file(f"{s}/pwned", b"x").build(), False,
                       _exists(f"{s.lstrip('/')}/pwned")),
        MaliciousLayer("symlink-then-write",
                       LayerBuilder().symlink("evil", s).file("evil/pwned", b"x").build(), True),
        MaliciousLayer("relative-symlink-then-write",
                       LayerBuilder().symlink("evil", up).file("evil/pwned", b"x").build(), True),
        MaliciousLayer("symlink-then-overwrite-file",
                       LayerBuilder().symlink("evil", f"{s}/file").file("evil", b"x").build(),
                       False, _regular("evil", b"x")),
        MaliciousLayer("symlink-chain-escape",
                       LayerBuilder().symlink("a", "b").symlink("b", "c").symlink("c", up)
                       .file("a/pwned", b"x").build(), True),
        MaliciousLayer("nested-symlink-escape",
                       LayerBuilder().dir("d").symlink("d/e", "../" * 9)
                       .file(f"d/e/{s.lstrip('/')}/pwned", b"x").build(), True),
        MaliciousLayer("dir-replaced-by-symlink-then-write",
                       LayerBuilder().dir("d").file("d/ok", b"ok").symlink("d", s)
                       .file("d/pwned", b"x").build(), True),
        MaliciousLayer("hardlink-absolute-passwd",
                       LayerBuilder().hardlink("passwd", "/etc/passwd").build(), True),
        MaliciousLayer("hardlink-dotdot-passwd",
                       LayerBuilder().hardlink("passwd", "../" * 8 + "etc/passwd").build(), True),
        MaliciousLayer("hardlink-to-sentinel-then-write",
                       LayerBuilder().hardlink("h", f"{s}/file").file("h", b"pwned").build(),
                       True),
        MaliciousLayer("hardlink-through-symlink-dir",
                       LayerBuilder().symlink("evil", s).hardlink("h", "evil/file").build(),
                       True),
        MaliciousLayer("hardlink-to-outward-symlink-then-write",
                       LayerBuilder().symlink("s", f"{s}/file").hardlink("h", "s")
                       .file("h", b"pwned").build(), False, _regular("h", b"pwned")),
        MaliciousLayer("whiteout-dotdot",
                       LayerBuilder().file(f"{up}/.wh.file").build(), True),
        MaliciousLayer("whiteout-of-dotdot", LayerBuilder().file("d/.wh...").build(), True),
        MaliciousLayer("whiteout-through-symlink",
                       LayerBuilder().symlink("evil", s).whiteout("evil/file").build(), True),
        MaliciousLayer("opaque-through-symlink",
                       LayerBuilder().symlink("evil", s).opaque("evil").build(), True),
        MaliciousLayer("opaque-marker-dotdot",
                       LayerBuilder().file(f"{up}/.wh..wh..opq").build(), True),
        MaliciousLayer("forged-overlay-xattrs",
                       LayerBuilder().dir("d", xattrs={"user.overlay.opaque": b"y",
                                                        "user.overlay.redirect": b"/etc",
                                                        "trusted.overlay.opaque": b"y"})
                       .file("f", b"x", xattrs={"user.overlay.metacopy": b"",
                                                "security.capability": b"\x01"})
                       .build(), False, _absent_xattrs("d")),
        MaliciousLayer("name-4096-bytes",
                       LayerBuilder().file("a/" * 2100 + "x", b"x").build(), True),
        MaliciousLayer("component-over-255-bytes",
                       LayerBuilder().file("x" * 300, b"x").build(), True),
        MaliciousLayer("symlink-dir-then-file-under-it",
                       LayerBuilder().symlink("usr", s).dir("usr/bin").build(), True),
        MaliciousLayer("devices-and-fifos",
                       LayerBuilder().device("null", tarfile.CHRTYPE, 1, 3)
                       .device("sda", tarfile.BLKTYPE, 8, 0).fifo("fifo").build(), False),
    ]
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes, tuple[str, ...]]]:
    """Every path below root with its mode, size, content and xattr names (for before/after)."""
    out: dict[str, tuple[int, int, bytes, tuple[str, ...]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            p = Path(dirpath, name)
            st = os.lstat(p)
            data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
            xattrs = tuple(sorted(os.listxattr(p, follow_symlinks=False)))
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, data, xattrs)
    return out


def tar_mismatches(tar: bytes, root: Path, limit: int = 20) -> list[str]:
    """How the tree at root differs from the layer tar: every entry's type, mode, owner and
    mtime (and size and target), the last entry of a name winning. Run where lstat shows the
    image's own ids (as root, or inside the user namespace the layer was unpacked in).

    Whiteouts are skipped (they become overlay's format); a hard link is checked as the
    inode it shares."""
    entries: dict[str, tarfile.TarInfo] = {}
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as t:
        for info in t:
            name = os.path.normpath(info.name.lstrip("/")) if info.name.strip("/.") else "."
            if os.path.basename(name).startswith(".wh."):
                continue
            entries[name] = info
    out: list[str] = []
    for name, info in entries.items():
        if len(out) >= limit:
            out.append("...")
            break
        path = root / name
        try:
            st = os.lstat(path)
        except OSError as exc:
            out.append(f"{name}: {exc}")
            continue
        if info.islnk():
            target = os.lstat(root / info.linkname.lstrip("/"))
            if st.st_ino != target.st_ino:
                out.append(f"{name}: not a hard link of {info.linkname}")
            continue
        kind = {tarfile.DIRTYPE: stat.S_ISDIR, tarfile.SYMTYPE: stat.S_ISLNK}.get(
            info.type, stat.S_ISREG)
        want = {
            "type": True,
            "mode": oct(info.mode & 0o7777),
            "owner": (info.uid, info.gid),
            "mtime_ns": int(info.mtime * 1_000_000_000),
        }
        have = {
            "type": kind(st.st_mode),
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "owner": (st.st_uid, st.st_gid),
            "mtime_ns": st.st_mtime_ns,
        }
        if info.issym():
            del want["mode"], have["mode"]  # a symlink's mode is always 0777 on Linux
            want["target"], have["target"] = info.linkname, os.readlink(path)
        elif info.isreg():
            want["size"], have["size"] = info.size, st.st_size
        diff = {k: (want[k], have[k]) for k in want if want[k] != have[k]}
        if diff:
            out.append(f"{name}: " + ", ".join(f"{k} {w} on disk {h}" for k, (w, h) in diff.items()))
    return out


def make_sentinel(parent: Path) -> Path:
    sentinel = parent / "sentinel"
    sentinel.mkdir()
    (sentinel / "file").write_bytes(b"original")
    return sentinel
