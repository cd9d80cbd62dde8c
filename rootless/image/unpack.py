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
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rootless.errors import ImageError, describe_oserror
from rootless.image.layerstream import CHUNK, LayerStream, Readable, open_decompressed

__all__ = ["CHUNK", "EntryError", "UnpackResult", "clean_name", "open_decompressed",
           "remove_tree", "unpack_layer"]

WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "user.overlay.opaque"
# Every name longer than this is refused: PATH_MAX (linux/limits.h) bounds what any tool in
# the container could open anyway.
NAME_MAX_TOTAL = 4096
_SKIPPED_KINDS = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
}


class EntryError(ImageError):
    """A system call failed on one entry (ENOSPC, EIO...): the entry, the step, the errno."""

    def __init__(self, action: str, cause: OSError) -> None:
        super().__init__(describe_oserror(action, cause))
        self.action = action
        self.cause = cause


@dataclass
class UnpackResult:
    diff_id: str
    size: int  # bytes of the uncompressed tar stream
    notices: list[str] = field(default_factory=list)


def unpack_layer(
    raw: Readable,
    compression: str,
    dest: str | os.PathLike[str],
    expected_diff_id: str | None = None,
    *,
    chown: bool = True,
    blob_digest: str | None = None,
    blob_size: int | None = None,
) -> UnpackResult:
    """Decompress, hash and extract one layer into the existing, empty directory dest.

    With blob_digest (and blob_size), the compressed bytes are verified as they stream, for
    a blob read straight from the network. Raises ImageError when the layer is refused or a
    digest does not match; dest is then in an undefined state and the caller removes it.
    """
    stream = LayerStream(raw, compression, blob_digest=blob_digest, blob_size=blob_size)
    extractor = Extractor(dest, chown=chown)
    try:
        extractor.extract(stream)
        stream.drain()  # the tar's end blocks and padding are part of the diff_id
    finally:
        extractor.close()
        stream.close()
    if expected_diff_id is not None and stream.diff_id != expected_diff_id:
        raise ImageError(
            f"layer content does not match the image config: expected diff_id "
            f"{expected_diff_id}, got {stream.diff_id}",
            "the image is corrupt or was tampered with; it was not stored",
        )
    return UnpackResult(stream.diff_id, stream.size, extractor.notices())


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
        self._stream: LayerStream | None = None
        # What rl creates is owned by its creator: when that is root (in the namespace), an
        # entry owned by 0:0 needs no chown (the usual case, and one system call saved).
        self._creator_is_root = os.geteuid() == 0 and os.getegid() == 0
        # Entries are created with their final permission bits (no fchmod afterwards), so
        # the process umask must not take any away; restored by close().
        self._umask = os.umask(0)

    def close(self) -> None:
        self._forget_dirs()
        self._close_retired()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1
        if self._umask >= 0:
            os.umask(self._umask)
            self._umask = -1

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
    def extract(self, stream: LayerStream) -> None:
        """Extract every member of the tar stream, then apply directory modes and times."""
        self._stream = stream
        try:
            # "r" (seekable) mode over the stream's forward-only seek: see layerstream.py
            tar = tarfile.TarFile(fileobj=stream, mode="r", encoding="utf-8",  # type: ignore[arg-type]
                                  errors="surrogateescape")
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
        return EntryError(f"layer entry {_show(parts)}: {action}", exc)

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
            self._chown(comp, parent, 0, 0, created=True)
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
        """Create one entry. Names are created exclusively (O_EXCL, mkdirat, symlinkat,
        linkat never replace): only when one exists already is it removed, so the usual
        case costs no lookup."""
        name = parts[-1]
        if m.isdir():
            try:
                os.mkdir(name, 0o700, dir_fd=parent)
                created = True
            except FileExistsError:
                created = not self._remove(parent, parts, keep_dir=True)
                if created:
                    os.mkdir(name, 0o700, dir_fd=parent)
            self._chown(name, parent, m.uid, m.gid, created=created)
            if m.pax_headers:
                self._dir_xattrs(m, name, parent)
            self._remember_dir(parts, m)
            return
        if m.isreg():
            self._write_file(tar, m, parent, parts)
        elif m.issym():
            target = os.fsencode(m.linkname)
            try:
                os.symlink(target, name, dir_fd=parent)
            except FileExistsError:
                self._remove(parent, parts)
                os.symlink(target, name, dir_fd=parent)
            self._chown(name, parent, m.uid, m.gid, created=True)
            self._utime(name, parent, m.mtime)
        elif m.islnk():
            self._hardlink(m, parent, parts)
            # a hard link shares the target's inode: owner, mode and times are its
        else:
            self._remove(parent, parts)
            kind = f"entry of unknown type {m.type!r}"
            self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def _write_file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parent: int,
                    parts: list[bytes]) -> None:
        name = parts[-1]
        mode = m.mode & 0o7777
        owned = self._already_owned(m.uid, m.gid)
        # chown(2) and write(2) clear setuid/setgid (should_remove_suid() in the kernel): a
        # file with special bits gets its mode after its data and owner.
        late_mode = bool(mode & 0o7000)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        create_mode = 0o600 if late_mode else mode
        try:
            fd = os.open(name, flags, create_mode, dir_fd=parent)
        except FileExistsError:
            self._remove(parent, parts)
            fd = os.open(name, flags, create_mode, dir_fd=parent)
        try:
            self._step = "writing its data"
            if m.issparse():
                self._write_sparse(tar, m, fd)
            else:
                self._write_data(m, fd)
            if not owned:
                self._fchown(fd, m.uid, m.gid)
            if late_mode:
                self._step = f"setting its mode to {mode:04o}"
                os.fchmod(fd, mode)
            if m.pax_headers:
                self._xattrs(m, fd)
            ns = _mtime_ns(m.mtime)
            self._step = "setting its modification time"
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)

    def _write_data(self, m: tarfile.TarInfo, fd: int) -> None:
        """m.size bytes from the stream, where tarfile left it: at the member's data."""
        assert self._stream is not None
        remaining = m.size
        while remaining:
            data = self._stream.read_some(min(CHUNK, remaining))
            if not data:
                raise ImageError(f"layer entry {_show(os.fsencode(m.name))}: the tar stream "
                                 "ends inside its data", "the layer is truncated or corrupt")
            remaining -= len(data)
            written = os.write(fd, data)
            if written < len(data):
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(fd, view):]

    def _write_sparse(self, tar: tarfile.TarFile, m: tarfile.TarInfo, fd: int) -> None:
        """A sparse member through tarfile's map of it, keeping its holes."""
        src = tar.extractfile(m)
        if src is None:
            return
        zeros = bytes(CHUNK)
        while chunk := src.read(CHUNK):
            if chunk == zeros[: len(chunk)]:
                os.lseek(fd, len(chunk), os.SEEK_CUR)  # keep the hole
                continue
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.ftruncate(fd, m.size)

    def _hardlink(self, m: tarfile.TarInfo, parent: int, parts: list[bytes]) -> None:
        name = parts[-1]
        target = clean_name(os.fsencode(m.linkname))
        if not target:
            raise ImageError(f"layer hard link {_show(name)} points at the layer root")
        try:
            tparent = self._open_parent(target[:-1], create=False)
            # linkat without AT_SYMLINK_FOLLOW: a symlink target is linked as the link itself
            try:
                os.link(target[-1], name, src_dir_fd=tparent, dst_dir_fd=parent,
                        follow_symlinks=False)
            except FileExistsError:
                self._remove(parent, parts)
                tparent = self._open_parent(target[:-1], create=False)  # the cache may be new
                os.link(target[-1], name, src_dir_fd=tparent, dst_dir_fd=parent,
                        follow_symlinks=False)
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

    def _already_owned(self, uid: int, gid: int) -> bool:
        """True when a freshly created entry already has this owner (no chown needed)."""
        return not self.chown or (self._creator_is_root and uid == 0 and gid == 0)

    # chown(2) in a user namespace answers EINVAL for an id the namespace does not map (the
    # single-id mode has only 0): the entry keeps root as its owner and the user is told how
    # many did (notices()). Any other errno is an error.
    def _chown(self, name: bytes, parent: int, uid: int, gid: int, *, created: bool = False) -> None:
        if created and self._already_owned(uid, gid) or not self.chown:
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

    def _xattrs(self, m: tarfile.TarInfo, fd: int) -> None:
        """The entry's user.* extended attributes (SCHILY.xattr.* pax records) on fd."""
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            attr = key[len("SCHILY.xattr."):]
            if not attr.startswith("user.") or attr.startswith("user.overlay."):
                self.dropped_xattrs += 1
                continue
            # A user.* attribute the file system refuses (ENOTSUP, E2BIG...) is an error like
            # any other: the image would differ from what its author built.
            self._step = f"setting its extended attribute {attr}"
            os.setxattr(fd, attr, value.encode("utf-8", "surrogateescape"))

    def _dir_xattrs(self, m: tarfile.TarInfo, name: bytes, parent: int) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)
        try:
            self._xattrs(m, fd)
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
        except FileNotFoundError:
            pass  # removed meanwhile: func(p) says what is wrong, if anything
        func(p)

    if not os.path.lexists(path):
        return
    shutil.rmtree(path, onerror=fix)
