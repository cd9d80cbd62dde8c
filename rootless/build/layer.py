"""A layer directory in overlay's format → an OCI layer tar (+gzip/zstd) and its digests.

Runs as root inside the build's user namespace, so stat() already shows the image's own ids
(a file owned by subordinate id 100033 on disk is 33 here) and every file is readable.
The walk is sorted, so the same tree always gives the same tar (and diff_id). Overlay's
format becomes OCI's (image-spec/layer.md "Whiteouts"):

    0:0 character device NAME            →  empty regular file .wh.NAME
    directory with user.overlay.opaque=y →  the directory, then DIR/.wh..wh..opq
    other user.overlay.* attributes      →  dropped (overlay's own bookkeeping)
    hard links (same inode twice)        →  a tar hard link to the first name

The tar is produced by one process and compressed by another, joined by a pipe, and gzip
deflates blocks on every core (_ParallelGzip, as pigz does): on these 2-core machines
walking and compressing overlap.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

OPAQUE_XATTR = "user.overlay.opaque"
CHUNK = 1 << 20
GZIP_LEVEL = 6  # gzip's and Go's compress/gzip default, as docker and podman write layers


@dataclass
class LayerBlob:
    diff_id: str
    digest: str
    size: int  # compressed bytes
    tar_size: int
    media_type: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


class _HashWriter:
    """A write-only file object that hashes and counts, passing bytes on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    def tell(self) -> int:
        return self.size


def walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every entry below root, parents first, names sorted."""
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        dirs = []
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                dirs.append(child)
        stack.extend(reversed(dirs))


# no such attribute, or a filesystem without them: nothing to read
_NO_XATTR = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


def getxattr(path: str, name: str) -> bytes | None:
    """An extended attribute of path itself (never a symlink's target), None when absent."""
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return None
        raise


def is_opaque(path: str) -> bool:
    """An overlay directory that hides the layers below it (overlayfs.rst "whiteouts and
    opaque directories"; user.* with the userxattr mount option)."""
    return getxattr(path, OPAQUE_XATTR) == b"y"


def _xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return {}
        raise
    out = {}
    for name in names:
        if not name.startswith("user.") or name.startswith("user.overlay."):
            continue
        value = getxattr(path, name)
        if value is not None:  # (gone since the listing)
            out[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return out


def write_tar(root: str, out: IO[bytes], *, epoch: int | None = None,
              skip: set[str] | None = None) -> tuple[str, int]:
    """Write root's tree as a layer tar to out, without the relative paths in skip;
    returns (diff_id, bytes written)."""
    writer = _HashWriter(out)
    links: dict[tuple[int, int], str] = {}
    # mode "w", not the stream mode "w|": tarfile's stream buffer re-copies up to bufsize
    # bytes for every 512-byte header; the writer below is buffered already
    with tarfile.open(fileobj=writer, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape") as tar:
        for rel, st in walk(root):
            if skip and rel in skip:
                continue
            path = os.path.join(root, rel)
            info = tarfile.TarInfo(rel)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.uname = info.gname = ""
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = epoch if epoch is not None else int(st.st_mtime)
            mode = st.st_mode
            if stat.S_ISCHR(mode) and st.st_rdev == 0:
                parent, _, name = rel.rpartition("/")
                wh = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
                wh.mtime = info.mtime
                wh.uname = wh.gname = ""
                tar.addfile(wh)
                continue
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                info.pax_headers = _xattrs(path)
                tar.addfile(info)
                if is_opaque(path):
                    opq = tarfile.TarInfo(f"{rel}/.wh..wh..opq")
                    opq.mtime = info.mtime
                    opq.uname = opq.gname = ""
                    tar.addfile(opq)
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                tar.addfile(info)
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[key]
                    tar.addfile(info)
                    continue
                if st.st_nlink > 1:
                    links[key] = rel
                info.size = st.st_size
                info.pax_headers = _xattrs(path)
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    tar.addfile(info, f)
            elif stat.S_ISFIFO(mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tar.addfile(info)
            # sockets are never part of an image (Docker skips them too)
    return "sha256:" + writer.hash.hexdigest(), writer.size


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return 0


def tar_digest(root: str, *, epoch: int | None = None) -> tuple[str, int]:
    """(diff_id, size) of root's layer tar, written nowhere: what a build step needs until an
    image wants the compressed blob (pack_layer, from the same tree, gives the same tar)."""
    return write_tar(root, _Discard(), epoch=epoch)  # type: ignore[arg-type]


class _ParallelGzip:
    """gzip as pigz writes it, on every core: the input is cut into BLOCK-byte blocks, each
    deflated by a thread (zlib releases the GIL) with the previous block's last 32 KiB as
    its dictionary and ended by a sync flush, so the raw deflate outputs concatenate into
    one ordinary gzip member (RFC 1952) that any gzip reader takes. The blocks and the
    header are fixed, so the same input gives the same bytes."""

    BLOCK = 1 << 20
    WINDOW = 32 << 10  # deflate's window: what a block may refer back to
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown

    def __init__(self, emit: Any, level: int) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.emit = emit
        self.level = level
        self.threads = max(2, min(4, os.cpu_count() or 2))
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rl-gzip")
        self.pending: Any = deque()
        self.buf = bytearray()
        self.tail = b""
        self.crc = 0
        self.size = 0
        emit(self.HEADER)

    def compress(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.buf += data
        while len(self.buf) >= self.BLOCK:
            block = bytes(self.buf[:self.BLOCK])
            del self.buf[:self.BLOCK]
            self._submit(block, last=False)

    def _submit(self, block: bytes, last: bool) -> None:
        self.pending.append(self.pool.submit(_deflate, block, self.tail, self.level, last))
        self.tail = block[-self.WINDOW:]
        while len(self.pending) > 2 * self.threads:
            self.emit(self.pending.popleft().result())

    def finish(self) -> None:
        try:
            self._submit(bytes(self.buf), last=True)
            while self.pending:
                self.emit(self.pending.popleft().result())
        finally:
            self.pool.shutdown()
        self.emit((self.crc & 0xFFFFFFFF).to_bytes(4, "little")
                  + (self.size & 0xFFFFFFFF).to_bytes(4, "little"))


def _deflate(block: bytes, zdict: bytes, level: int, last: bool) -> bytes:
    z = (zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
         if zdict else zlib.compressobj(level, zlib.DEFLATED, -15))
    return z.compress(block) + z.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


class Compressor:
    """Streams bytes into a compressed blob file, hashing the compressed bytes."""

    def __init__(self, out: IO[bytes], fmt: str, level: int | None = None) -> None:
        self.out = out
        self.fmt = fmt
        self.hash = hashlib.sha256()
        self.size = 0
        self._gzip: _ParallelGzip | None = None
        self._z: Any = None
        if fmt == "gzip":
            self._gzip = _ParallelGzip(self._emit, level if level is not None else GZIP_LEVEL)
        elif fmt == "zstd":
            import zstandard

            # zstd's own worker threads, for the same reason as the gzip blocks
            params = zstandard.ZstdCompressionParameters.from_level(
                level or 3, threads=max(2, min(4, os.cpu_count() or 2)))
            self._z = zstandard.ZstdCompressor(compression_params=params).compressobj()
        elif fmt != "none":
            raise ValueError(f"unknown compression {fmt!r}")

    def _emit(self, data: bytes) -> None:
        if data:
            self.hash.update(data)
            self.size += len(data)
            self.out.write(data)

    def write(self, data: bytes) -> None:
        if self._gzip is not None:
            self._gzip.compress(data)
        else:
            self._emit(self._z.compress(data) if self._z is not None else data)

    def finish(self) -> None:
        if self._gzip is not None:
            self._gzip.finish()
        elif self._z is not None:
            self._emit(self._z.flush())

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def media_type(fmt: str) -> str:
    from rootless.image import mediatypes as mt

    return {"gzip": mt.OCI_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER_TAR}[fmt]


def pack_layer(root: str, blob_path: str, *, fmt: str = "gzip", epoch: int | None = None,
               level: int | None = None, skip: set[str] | None = None) -> LayerBlob:
    """Tar root (a forked writer) and compress it into blob_path (this process).

    Call from a single-threaded process (it forks). Raises OSError/RuntimeError on failure.
    """
    import json
    import sys

    r, w = os.pipe()
    rr, rw = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.close(rr)
            with os.fdopen(w, "wb", buffering=CHUNK) as pipe:
                diff_id, size = write_tar(root, pipe, epoch=epoch, skip=skip)
            os.write(rw, json.dumps({"diff_id": diff_id, "size": size}).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(rw, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.close(rw)
    try:
        with os.fdopen(r, "rb", buffering=0) as pipe, open(blob_path, "wb") as out:
            comp = Compressor(out, fmt, level)
            while chunk := pipe.read(CHUNK):
                comp.write(chunk)
            comp.finish()
            out.flush()
            os.fsync(out.fileno())
        with os.fdopen(rr, "rb") as f:
            report = json.loads(f.read() or b"{}")
    finally:
        _, status = os.waitpid(pid, 0)
    if status != 0 or "error" in report:
        raise RuntimeError(f"writing the layer tar of {root}: {report.get('error', status)}")
    return LayerBlob(report["diff_id"], comp.digest, comp.size, report["size"], media_type(fmt))
