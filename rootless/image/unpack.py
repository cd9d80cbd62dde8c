"""Safe unpacking of one image layer into its own directory, in overlay's on-disk format.

A layer is hostile input. The extractor runs as root inside the user's user namespace (so
owners in the image land on the mapped subordinate ids), and it:

- resolves every entry's parent one component at a time from an O_DIRECTORY fd of the layer
  root, with O_NOFOLLOW: a symlink planted by an earlier entry is never followed (openat
  walking, the approach of umoci and containers/storage's chrootarchive without a chroot);
- cleans names lexically (`a/./b` → `a/b`, leading `/` stripped, as podman does) and refuses
  the layer when a name or hard-link target climbs above the root with `..`;
- never calls tarfile.extract(): it creates files itself with O_CREAT|O_EXCL|O_NOFOLLOW and
  streams member data in chunks, so huge and sparse members never sit in memory;
- turns `.wh.NAME` into a 0:0 character device and `.wh..wh..opq` into the xattr
  `user.overlay.opaque=y`: overlay's own format with the `userxattr` mount option
  (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"; mknod of a
  0:0 whiteout is allowed in a user namespace since Linux 5.8, checked on 6.18);
- keeps xattrs from the user.* namespace only, and never `user.overlay.*` from the tar, which
  would let a layer forge opaque markers, redirects or metacopy origins;
- skips device nodes and FIFOs with one notice (mknod needs CAP_MKNOD in the initial
  namespace), and applies directory modes last so read-only directories can still be filled.

The uncompressed stream is hashed while it is extracted; a diff_id mismatch is reported after
the tar ends and the caller discards the directory.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from rootless.errors import ImageError, describe_oserror

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "user.overlay.opaque"
# Every name longer than this is refused: PATH_MAX (linux/limits.h) bounds what any tool in
# the container could open anyway.
NAME_MAX_TOTAL = 4096
CHUNK = 1 << 20
# tarfile's stream buffer: it slices this buffer on every 512-byte header read, so a large
# one costs more than it saves.
TAR_BUFSIZE = 64 << 10

_SKIPPED_KINDS = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


@dataclass
class UnpackResult:
    diff_id: str
    size: int  # bytes of the uncompressed tar stream
    notices: list[str] = field(default_factory=list)


class _HashingReader:
    """File-like view of a stream that hashes and counts every byte read through it."""

    def __init__(self, raw: IO[bytes] | _Inflater) -> None:
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


class _Inflater:
    """gzip stream reader over zlib with large reads; handles concatenated gzip members."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._z = zlib.decompressobj(wbits=31)
        self._pending = b""
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = CHUNK
        out: list[bytes] = []
        have = 0
        while have < n and not self._eof:
            if not self._pending:
                self._pending = self._raw.read(CHUNK)
                if not self._pending:
                    if not self._z.eof and have == 0 and not out:
                        # the decompressor may hold buffered output
                        tail = self._z.flush()
                        self._eof = True
                        if tail:
                            return tail
                        raise ImageError("layer is a truncated gzip stream")
                    self._eof = True
                    break
            try:
                data = self._z.decompress(self._pending, n - have)
            except zlib.error as exc:
                raise ImageError(f"layer is not valid gzip: {exc}") from None
            self._pending = self._z.unconsumed_tail
            if self._z.eof:
                rest = self._z.unused_data
                self._z = zlib.decompressobj(wbits=31)
                self._pending = rest
                if not rest:
                    more = self._raw.read(CHUNK)
                    if not more:
                        self._eof = True
                    self._pending = more
            if data:
                out.append(data)
                have += len(data)
        return b"".join(out)


def open_decompressed(raw: IO[bytes], compression: str) -> Any:
    """A reader of the uncompressed tar stream; compression is mediatypes.COMPRESSION_*."""
    if compression == "gzip":
        return _Inflater(raw)
    if compression == "zstd":
        import zstandard  # imported only for zstd layers

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    if compression == "none":
        return raw
    raise ImageError(f"unknown layer compression {compression!r}")


def unpack_layer(
    raw: IO[bytes],
    compression: str,
    dest: str | os.PathLike[str],
    expected_diff_id: str | None = None,
    *,
    chown: bool = True,
) -> UnpackResult:
    """Decompress, hash and extract one layer into the existing, empty directory dest.

    Raises ImageError when the layer is refused or its diff_id does not match; dest is then
    in an undefined state and the caller removes it.
    """
    reader = _HashingReader(open_decompressed(raw, compression))
    extractor = Extractor(dest, chown=chown)
    try:
        extractor.extract(reader)
        reader.drain()  # the tar's end blocks and padding are part of the diff_id
    finally:
        extractor.close()
    diff_id = "sha256:" + reader.hash.hexdigest()
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise ImageError(
            f"layer content does not match the image config: expected diff_id "
            f"{expected_diff_id}, got {diff_id}",
            "the image is corrupt or was tampered with; it was not stored",
        )
    return UnpackResult(diff_id, reader.size, extractor.notices())


def clean_name(name: bytes) -> list[bytes]:
    """A tar name as path components under the root, or ImageError if it climbs out.

    Leading '/' is stripped (an absolute name means the same path in the layer) and '.' and
    empty components dropped; '..' is resolved lexically and refused when it leaves the root,
    like containers/storage's breakout check in pkg/archive.
    """
    if len(name) > NAME_MAX_TOTAL:
        raise ImageError(
            f"layer entry name is {len(name)} bytes long (the limit is {NAME_MAX_TOTAL})",
            "the layer is malformed or hostile; it was not stored",
        )
    if b"\0" in name:
        raise ImageError("layer entry name contains a NUL byte")
    parts: list[bytes] = []
    for comp in name.split(b"/"):
        if comp in (b"", b"."):
            continue
        if comp == b"..":
            if not parts:
                raise ImageError(
                    f"layer entry {_show(name)} points outside the layer",
                    "the layer is malformed or hostile; it was not stored",
                )
            parts.pop()
            continue
        parts.append(comp)
    return parts


def _show(name: bytes | list[bytes]) -> str:
    if isinstance(name, list):
        name = b"/".join(name)
    text = name.decode("utf-8", "backslashreplace")
    return repr(text if len(text) < 200 else text[:200] + "...")


@dataclass
class _DirMeta:
    parts: list[bytes]
    mode: int
    uid: int
    gid: int
    mtime: float


class Extractor:
    """Extracts tar members below one root directory, never following a symlink."""

    def __init__(self, root: str | os.PathLike[str], *, chown: bool = True) -> None:
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.chown = chown
        self.dirs: dict[tuple[bytes, ...], _DirMeta] = {}
        self.skipped: dict[str, int] = {}
        self.chown_failures = 0
        self.dropped_xattrs = 0
        # Directory fds reached by an O_NOFOLLOW walk, by path. Only this extractor changes
        # the tree, and a path can stop naming the same directory only through _remove,
        # which empties the cache whenever it deletes a directory.
        self._dir_fds: dict[tuple[bytes, ...], int] = {}
        self._retired: list[int] = []  # forgotten fds a caller may still hold: closed later
        self._step = ""  # what is being done to the current entry, for error messages

    def close(self) -> None:
        self._forget_dirs()
        self._close_retired()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1

    def _forget_dirs(self) -> None:
        self._retired.extend(self._dir_fds.values())
        self._dir_fds.clear()

    def _close_retired(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def notices(self) -> list[str]:
        out = []
        for kind, count in sorted(self.skipped.items()):
            out.append(f"skipped {count} {kind}{'s' if count > 1 else ''} "
                       "(an unprivileged user cannot create them)")
        if self.chown_failures:
            out.append(f"{self.chown_failures} file owners are outside the id mapping; "
                       "they were kept as root")
        if self.dropped_xattrs:
            out.append(f"ignored {self.dropped_xattrs} extended attributes (rl keeps user.* only, "
                       "and never user.overlay.* from a layer)")
        return out

    # -- the loop --------------------------------------------------------------------------
    def extract(self, stream: Any) -> None:
        try:
            tar = tarfile.open(fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE,
                               encoding="utf-8", errors="surrogateescape")
        except tarfile.ReadError as exc:
            raise ImageError(f"layer is not a valid tar stream: {exc}") from None
        try:
            for member in tar:
                self._member(tar, member)
                self._close_retired()
        except tarfile.TarError as exc:
            raise ImageError(f"layer is not a valid tar stream: {exc}") from None
        finally:
            tar.close()
        self._finish_dirs()

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        raw = os.fsencode(m.name)
        parts = clean_name(raw)
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, m)
            return
        if m.type in _SKIPPED_KINDS:
            if m.type == tarfile.CHRTYPE and m.devmajor == 0 and m.devminor == 0 and parts:
                # already in overlay's format (a layer exported from an overlay upper dir)
                self._make_whiteout(parts[:-1], parts[-1])
                return
            kind = _SKIPPED_KINDS[m.type]
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        if not parts:
            if m.isdir():
                self._remember_dir(parts, m)
            return  # "./" as a file or link: nothing sensible to do with the root
        try:
            parent = self._open_parent(parts[:-1], create=True)
        except OSError as exc:
            raise self._error(parts, "opening the parent directory", exc) from None
        self._step = "creating it"
        try:
            self._create(tar, m, parent, parts)
        except OSError as exc:
            raise self._error(parts, self._step, exc) from None

    def _error(self, parts: list[bytes], action: str, exc: OSError) -> ImageError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return ImageError(
                f"layer entry {_show(parts)}: a parent is a symlink or not a directory; "
                "rl never writes through a symlink",
                "the layer is malformed or hostile; it was not stored",
            )
        return ImageError(describe_oserror(f"unpacking layer entry {_show(parts)}: {action}", exc))

    # -- walking ---------------------------------------------------------------------------
    def _open_parent(self, parts: list[bytes], *, create: bool) -> int:
        """An fd of the directory at parts, walked with O_NOFOLLOW; created when missing.

        The fd belongs to the cache (or is root_fd): callers must not close it.
        """
        key = tuple(parts)
        cached = self._dir_fds.get(key)
        if cached is not None:
            return cached
        if not parts:
            return self.root_fd
        parent = self._open_parent(parts[:-1], create=create)
        comp = parts[-1]
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(comp, flags, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            # implicit parents: root-owned 0755, as podman creates them
            os.mkdir(comp, 0o755, dir_fd=parent)
            self._chown(comp, parent, 0, 0)
            fd = os.open(comp, flags, dir_fd=parent)
            self.dirs.setdefault(key, _DirMeta(list(parts), 0o755, 0, 0, -1))
        if len(self._dir_fds) >= 256:
            self._forget_dirs()
        self._dir_fds[key] = fd
        return fd

    def _remove(self, parent: int, parts: list[bytes], *, keep_dir: bool = False) -> bool:
        """Remove an existing entry (recursively for a directory, never following links).

        Returns True when a directory was kept because keep_dir was asked.
        """
        name = parts[-1]
        try:
            st = os.lstat(name, dir_fd=parent)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            import shutil

            self._forget_dirs()
            shutil.rmtree(name, dir_fd=parent)  # fd-based on Linux: symlink-attack resistant
            self._forget_metadata(parts)
        else:
            os.unlink(name, dir_fd=parent)
        return False

    def _forget_metadata(self, parts: list[bytes]) -> None:
        """Drop the pending metadata of a removed directory and of every directory below it:
        what is left in self.dirs is exactly the set of directories on disk, so the final
        pass can treat any failure as an error."""
        prefix = tuple(parts)
        depth = len(prefix)
        for key in [k for k in self.dirs if k[:depth] == prefix]:
            del self.dirs[key]

    # -- entries ---------------------------------------------------------------------------
    def _create(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, parts: list[bytes]) -> None:
        name = parts[-1]
        if m.isdir():
            if not self._remove(parent, parts, keep_dir=True):
                os.mkdir(name, 0o700, dir_fd=parent)
            self._chown(name, parent, m.uid, m.gid)
            self._xattrs(m, name, parent)
            self._remember_dir(parts, m)
            return
        self._remove(parent, parts)
        if m.isreg():
            self._write_file(tar, m, parent, name)
        elif m.issym():
            os.symlink(os.fsencode(m.linkname), name, dir_fd=parent)
            self._chown(name, parent, m.uid, m.gid)
        elif m.islnk():
            self._hardlink(m, parent, name)
            return  # a hard link shares the target's inode: owner, mode and times are its
        else:
            kind = f"entry of unknown type {m.type!r}"
            self.skipped[kind] = self.skipped.get(kind, 0) + 1
            return
        if not m.issym():
            self._xattrs(m, name, parent)
        self._utime(name, parent, m.mtime)

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int, name: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent)
        try:
            self._step = "writing its data"
            src = tar.extractfile(m)
            sparse = m.issparse()
            if src is not None:
                zeros = bytes(CHUNK) if sparse else b""
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    if sparse and chunk == zeros[: len(chunk)]:
                        os.lseek(fd, len(chunk), os.SEEK_CUR)  # keep the hole
                        continue
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                if sparse:
                    os.ftruncate(fd, m.size)
            self._fchown(fd, m.uid, m.gid)
            # after chown, which clears setuid/setgid (chown(2))
            self._step = f"setting its mode to {m.mode & 0o7777:04o}"
            os.fchmod(fd, m.mode & 0o7777)
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, parent: int, name: bytes) -> None:
        target = clean_name(os.fsencode(m.linkname))
        if not target:
            raise ImageError(f"layer hard link {_show(name)} points at the layer root")
        try:
            tparent = self._open_parent(target[:-1], create=False)
            # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked as the link itself
            os.link(target[-1], name, src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise ImageError(
                f"layer hard link {_show(name)} points at {_show(target)}, which is not in "
                "this layer",
                "the layer is malformed or hostile; it was not stored",
            ) from None

    def _whiteout(self, parts: list[bytes], m: tarfile.TarInfo) -> None:
        name = parts[-1]
        dir_parts = parts[:-1]
        if name == OPAQUE_MARKER:
            fd = self._open_dir_checked(dir_parts)
            try:
                os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
            except OSError as exc:
                raise self._error(parts, "marking the directory opaque", exc) from None
            return
        if name.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here
        target = name[len(WHITEOUT_PREFIX):]
        if target in (b"", b".", b".."):
            raise ImageError(
                f"layer whiteout {_show(parts)} names no file in its directory",
                "the layer is malformed or hostile; it was not stored",
            )
        self._make_whiteout(dir_parts, target)

    def _open_dir_checked(self, parts: list[bytes]) -> int:
        try:
            return self._open_parent(parts, create=True)
        except OSError as exc:
            raise self._error(parts, "opening the directory", exc) from None

    def _make_whiteout(self, dir_parts: list[bytes], target: bytes) -> None:
        fd = self._open_dir_checked(dir_parts)
        try:
            self._remove(fd, dir_parts + [target])
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=fd)
        except OSError as exc:
            raise self._error(dir_parts + [target], "creating the whiteout", exc) from None

    # -- metadata --------------------------------------------------------------------------
    def _remember_dir(self, parts: list[bytes], m: tarfile.TarInfo) -> None:
        self.dirs[tuple(parts)] = _DirMeta(list(parts), m.mode & 0o7777, m.uid, m.gid, m.mtime)
        if not parts:
            self._fchown(self.root_fd, m.uid, m.gid)

    # chown(2) in a user namespace answers EINVAL for an id the namespace does not map (the
    # single-id mode has only 0): the entry keeps root as its owner and the user is told how
    # many did (notices()). Any other errno is an error.
    def _chown(self, name: bytes, parent: int, uid: int, gid: int) -> None:
        if not self.chown:
            return
        self._step = f"setting its owner to {uid}:{gid}"
        try:
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.chown_failures += 1

    def _fchown(self, fd: int, uid: int, gid: int) -> None:
        if not self.chown:
            return
        self._step = f"setting its owner to {uid}:{gid}"
        try:
            os.fchown(fd, uid, gid)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.chown_failures += 1

    def _xattrs(self, m: tarfile.TarInfo, name: bytes, parent: int) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if not attr.startswith("user.") or attr.startswith("user.overlay."):
                self.dropped_xattrs += 1
                continue
            data = value.encode("utf-8", "surrogateescape")
            # A user.* attribute the file system refuses (ENOTSUP, E2BIG...) is an error like
            # any other: the image would differ from what its author built.
            self._step = f"setting its extended attribute {attr}"
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=parent)
            try:
                os.setxattr(fd, attr, data)
            finally:
                os.close(fd)

    def _utime(self, name: bytes, parent: int, mtime: float) -> None:
        ns = _mtime_ns(mtime)
        self._step = "setting its modification time"
        os.utime(name, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def _finish_dirs(self) -> None:
        """Directory modes and times, deepest first, once all their children exist (creating
        a child changes a directory's mtime). Owners were set when each was created."""
        for key in sorted(self.dirs, key=len, reverse=True):
            meta = self.dirs[key]
            try:
                fd = self._open_parent(meta.parts, create=False)
                os.fchmod(fd, meta.mode)
                if meta.mtime >= 0:
                    ns = _mtime_ns(meta.mtime)
                    os.utime(fd, ns=(ns, ns))
            except OSError as exc:
                raise self._error(meta.parts, "setting the directory's mode and time",
                                  exc) from None
            finally:
                # The walk may have retired cached descriptors: close them now, not at the
                # end, or thousands of directories exhaust RLIMIT_NOFILE (EMFILE).
                self._close_retired()


def _mtime_ns(mtime: float) -> int:
    """A tar mtime as nanoseconds, refused when no file system could store it."""
    ns = int(mtime * 1_000_000_000)
    if not -(1 << 63) <= ns < (1 << 63):
        raise ImageError(f"layer entry has an impossible modification time ({mtime})",
                         "the layer is malformed; it was not stored")
    return ns


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove an extracted layer tree, including read-only directories, never following links."""
    import shutil

    def fix(func: Callable[..., Any], p: str, _exc: Any) -> None:
        parent = os.path.dirname(p)
        try:
            os.chmod(parent, 0o700)
        except OSError:
            pass
        func(p)

    if not os.path.lexists(path):
        return
    shutil.rmtree(path, onerror=fix)
