"""The local image store: verified blobs, one extracted directory per layer, named images.

    blobs/sha256/<hex>          manifests, configs and compressed layers, exactly as pulled
    layers/<diff hex>/          one extracted tree per layer, shared by every image (lowerdir)
    layers/<diff hex>.json      {"size": uncompressed bytes}
    layers/l/<16 chars>         -> ../<diff hex>: short lowerdir names, so a deep image fits
                                the one page mount(2) accepts for options (podman's l/ links)
    images/index.json           {"names": {name: manifest digest}}: the only source of names
    images/<manifest hex>.json  the image record
    locks/                      flock files: one per blob, per layer, the index, the store
    tmp/                        downloads in progress (same filesystem, so rename is atomic)

Nothing appears under its final name before it is complete and verified: blobs are written
to tmp/ and renamed; layers are extracted to layers/.tmp-* and renamed. A crash leaves only
temporaries, which the next pull removes once their lock is free.

Concurrency: a per-blob lock makes two pulls download a blob once; a per-layer lock makes
them extract it once; pulls hold the store lock shared and `prune`/`rmi` take it exclusive,
so garbage collection never removes what a running pull has not recorded yet.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

from rootless.errors import ImageError, describe_oserror
from rootless.paths import Paths

# Imports for annotations only: `rl run IMAGE` reads the store on every start, and typing,
# dataclasses and hashlib (OpenSSL) cost ~15 ms of it together.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from pathlib import Path
    from typing import IO, Any

    from rootless.image.blobfeed import BlobFeed


def _sha256(data: bytes = b"") -> Any:
    """A sha256 hasher without importing hashlib's OpenSSL binding on the start-up path."""
    try:
        from _sha256 import sha256  # CPython <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # CPython >= 3.12
        except ImportError:
            from hashlib import sha256
    return sha256(data)

# linux/fs.h: the inode flags ioctls (chattr(1)) and FS_TOPDIR_FL ("top of directory
# hierarchies", chattr +T).
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_TOPDIR_FL = 0x00020000

def _bulk_sha256() -> Any:
    """OpenSSL's sha256 (hashlib), for blobs: about ten times faster than the built-in one
    _sha256() uses on these machines (SHA extensions), and it releases the GIL. Only the
    download and import paths pay for importing it."""
    import hashlib

    return hashlib.sha256()


_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGEST = re.compile(r"sha256:([0-9a-f]{64})")
STALE_SECONDS = 3600
CACHE_DIR = "build-cache"
LINK_PREFIX = "l"
_COPY_CHUNK = 1 << 20


def digest_hex(digest: str) -> str:
    """The hex of a sha256 digest; ImageError for anything else (the store keys on sha256)."""
    m = _DIGEST.fullmatch(digest)
    if not m:
        raise ImageError(f"unsupported or malformed digest {digest!r}",
                         "rl stores sha256 content only")
    return m.group(1)


def link_id(diff_hex: str) -> str:
    """16 base32 characters naming a layer's short link (80 bits of a hash of its diff_id)."""
    import base64

    raw = _sha256(b"rl-layer-link:" + diff_hex.encode()).digest()
    return base64.b32encode(raw).decode()[:16]


class LocalImage:
    """An image in the store: its record (images/<manifest hex>.json) and its names."""

    __slots__ = ("id", "manifest_digest", "names", "config", "diff_ids", "created", "size",
                 "layers", "media_type")

    def __init__(self, id: str, manifest_digest: str, names: list[str], config: dict[str, Any],
                 diff_ids: list[str], created: str | None, size: int,
                 layers: list[dict[str, Any]] | None = None, media_type: str = "") -> None:
        self.id = id  # config digest, as podman's IMAGE ID
        self.manifest_digest = manifest_digest
        self.names = names
        self.config = config
        self.diff_ids = diff_ids
        self.created = created
        self.size = size
        self.layers = layers if layers is not None else []  # compressed descriptors
        self.media_type = media_type

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalImage) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"LocalImage(id={self.id!r}, names={self.names!r})"

    def layer_dirs(self, store: Store) -> list[Path]:
        """Bottom to top."""
        return [store.layer_dir(d) for d in self.diff_ids]

    def layer_links(self, store: Store) -> list[str]:
        """Bottom to top, relative to store.paths.layers (overlay wants top first: reverse)."""
        return [store.layer_link(d) for d in self.diff_ids]

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "manifest_digest": self.manifest_digest, "names": self.names,
            "config": self.config, "diff_ids": self.diff_ids, "created": self.created,
            "size": self.size, "layers": self.layers, "media_type": self.media_type,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], names: list[str]) -> LocalImage:
        return cls(
            id=data["id"], manifest_digest=data["manifest_digest"], names=names,
            config=data.get("config") or {}, diff_ids=list(data.get("diff_ids") or []),
            created=data.get("created"), size=int(data.get("size") or 0),
            layers=list(data.get("layers") or []), media_type=data.get("media_type") or "",
        )


class RemoveResult:
    __slots__ = ("untagged", "deleted")

    def __init__(self) -> None:
        self.untagged: list[str] = []
        self.deleted: list[str] = []


class PruneResult:
    __slots__ = ("images", "layers", "blobs", "bytes_freed")

    def __init__(self) -> None:
        self.images: list[str] = []
        self.layers: list[str] = []
        self.blobs: list[str] = []
        self.bytes_freed = 0


AsRoot = Callable[[Callable[[], None], str], None]


if TYPE_CHECKING:
    from typing import Protocol

    class Started(Protocol):
        """A call of fn() that runs elsewhere (a child process) until wait() returns."""

        def wait(self) -> None: ...

    StartAsRoot = Callable[[Callable[[], None], str], Started]


class _Later:
    """fn() run by wait() itself: for an injected as_root (tests) that cannot run beside
    the caller. The pull's feeds never block, so the result is the same, only later."""

    def __init__(self, as_root: AsRoot, fn: Callable[[], None], name: str) -> None:
        self._as_root = as_root
        self._fn = fn
        self._name = name

    def wait(self) -> None:
        self._as_root(self._fn, self._name)


def _default_as_root(paths: Paths) -> AsRoot:
    def run(fn: Callable[[], None], name: str) -> None:
        if os.getuid() == 0:
            fn()  # real root: the image's owners are the host's ids
            return
        from rootless.primitives.userns import run_in_userns

        run_in_userns(fn, paths=paths, name=name)

    return run


def _default_start_as_root(paths: Paths) -> StartAsRoot:
    def start(fn: Callable[[], None], name: str) -> Started:
        if os.getuid() == 0:
            from rootless.image.forked import ForkedTask

            return ForkedTask(fn, name)  # real root: no namespace, but beside the caller
        from rootless.primitives.userns import start_in_userns

        return start_in_userns(fn, paths=paths, name=name)

    return start


class Store:
    """Blobs, layers and images under one Paths. Methods raise ImageError."""

    def __init__(self, paths: Paths, as_root: AsRoot | None = None) -> None:
        self.paths = paths
        # Layer trees hold files owned by subordinate ids: only root in the user's namespace
        # may create or remove them. as_root(fn, process name) runs fn there; a single
        # call per pull, from a single-threaded point. Tests pass a plain call.
        # start_as_root(fn, name) does the same but returns at once (see Started).
        self.as_root = as_root or _default_as_root(paths)
        self.start_as_root: StartAsRoot = (
            _default_start_as_root(paths) if as_root is None
            else lambda fn, name: _Later(self.as_root, fn, name))

    # -- directories and locks -------------------------------------------------------------
    @property
    def locks(self) -> Path:
        return self.paths.data / "locks"

    def ensure_dirs(self) -> None:
        try:
            self.paths.data.mkdir(parents=True, exist_ok=True, mode=0o700)
            for d in (self.paths.blobs, self.paths.layers, self.paths.layers / LINK_PREFIX,
                      self.paths.images, self.paths.tmp, self.locks):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
            # the layer root must be searchable by the mapped ids (overlay runs as them)
            os.chmod(self.paths.layers, 0o711)
        except OSError as exc:
            raise ImageError(describe_oserror(f"creating the image store in {self.paths.data}", exc),
                             "check that the storage directory is writable (rl doctor)") from None

    def mark_layer_root(self) -> None:
        """Make layers/ a "top directory" for ext4's Orlov allocator (chattr +T), so that each
        layer's new tree is placed in a block group of its own instead of beside the trees
        just removed. Without it, a pull right after an rmi spent seconds in the kernel here:
        ext4 without a journal skips, one inode-table lookup each, every inode deleted in the
        last 30 s while it allocates (recently_deleted() in fs/ext4/ialloc.c); `tar -xzf` of
        a 4,000-entry layer after removing the same tree took 1.3-2.2 s of system time in a
        plain directory and 0.2-0.6 s below a +T one. A file system without the flag (tmpfs,
        xfs, btrfs) answers ENOTTY, EOPNOTSUPP or EINVAL and is left as it is."""
        fd = os.open(self.paths.layers, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flags = bytearray(4)  # the kernel reads and writes an int (linux/fs.h comment)
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags)
            value = int.from_bytes(flags, sys.byteorder)
            if not value & _FS_TOPDIR_FL:
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, (value | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder))
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL):
                raise self.storage_error(f"marking {self.paths.layers} as a top directory",
                                         exc) from None
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _lock(self, name: str, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
        """flock on locks/<name>.lock; yields False when wait=False and it is taken."""
        self.ensure_dirs()
        fd = os.open(self.locks / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            try:
                fcntl.flock(fd, op if wait else op | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def blob_lock(self, digest: str) -> AbstractContextManager[bool]:
        return self._lock(f"blob-{digest_hex(digest)}")

    def layer_lock(self, diff_id: str) -> AbstractContextManager[bool]:
        return self._lock(f"layer-{digest_hex(diff_id)}")

    def using(self) -> AbstractContextManager[bool]:
        """Held shared by a pull or load from its first blob until its image is recorded."""
        return self._lock("store", shared=True)

    def _gc_lock(self) -> AbstractContextManager[bool]:
        return self._lock("store")

    # -- blobs -----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.paths.blobs / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def write_blob(self, digest: str, size: int | None, chunks: Iterable[bytes]) -> Path:
        """Store a blob from chunks, verified against digest and size (ImageError if not)."""
        return self.ensure_blob(digest, size, lambda: contextlib.nullcontext(chunks))

    def write_blob_bytes(self, data: bytes, digest: str | None = None) -> Path:
        digest = digest or "sha256:" + _sha256(data).hexdigest()
        return self.write_blob(digest, len(data), [data])

    def ensure_blob(
        self,
        digest: str,
        size: int | None,
        open_chunks: Callable[[], AbstractContextManager[Iterable[bytes]]],
        on_chunk: Callable[[int], None] | None = None,
        feed: BlobFeed | None = None,
    ) -> Path:
        """The blob's path, downloading it with open_chunks() only when it is missing.

        Under the blob's lock, so a second pull of the same blob waits and then finds it.
        `feed` (blobfeed.py) hands the file to an extractor while it is being written; it is
        told "done" once the blob is verified, and "fail" when it is not.
        """
        hexd = digest_hex(digest)
        final = self.paths.blobs / hexd
        try:
            with self.blob_lock(digest):
                if final.is_file():
                    if feed is not None:
                        feed.file(final)
                        feed.done(final.stat().st_size)
                    return final
                self._download_blob(digest, size, open_chunks, on_chunk, feed)
        except BaseException:
            if feed is not None:
                feed.fail()
            raise
        return final

    def _download_blob(
        self,
        digest: str,
        size: int | None,
        open_chunks: Callable[[], AbstractContextManager[Iterable[bytes]]],
        on_chunk: Callable[[int], None] | None,
        feed: BlobFeed | None,
    ) -> None:
        hexd = digest_hex(digest)
        tmp = self.paths.tmp / f"blob-{hexd}-{os.urandom(4).hex()}"
        step = f"writing blob {digest} to {tmp}"
        try:
            # unbuffered: the extractor following the file sees each chunk once written
            with self._new_file(tmp, step) as out, open_chunks() as chunks:
                if feed is not None:
                    feed.file(tmp)
                hasher = _bulk_sha256()
                received = 0
                for chunk in chunks:
                    received += len(chunk)
                    if size is not None and received > size:
                        raise ImageError(f"blob {digest} is larger than its {size} bytes")
                    hasher.update(chunk)
                    self._guard(step, _write_all, out, chunk)
                    if on_chunk is not None:
                        on_chunk(len(chunk))
                if size is not None and received != size:
                    raise ImageError(f"blob {digest} has {received} bytes, expected {size}")
                if hasher.hexdigest() != hexd:
                    raise ImageError(
                        f"blob {digest} does not match its digest "
                        f"(content is sha256:{hasher.hexdigest()})",
                        "the data was altered; it was discarded",
                    )
                # The bytes are verified: the extractor may finish while this thread makes
                # them durable.
                if feed is not None:
                    feed.done(received)
                self._guard(step, os.fsync, out)
            final = self.paths.blobs / hexd
            step = f"storing blob {digest} as {final}"
            self._guard(step, os.chmod, tmp, 0o644)
            self._guard(step, os.replace, tmp, final)
            self._guard(step, _fsync_dir, self.paths.blobs)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def storage_error(self, step: str, exc: OSError) -> ImageError:
        """An OSError while writing the store, as an error naming the step (which names the
        blob or layer and the path) and, for a full file system, what the user can do."""
        hint = None
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = (f"free space on the file system of {self.paths.data} ('rl image prune' "
                    "removes unused layers and blobs), or set XDG_DATA_HOME to a larger one")
        return ImageError(describe_oserror(step, exc), hint)

    def _guard(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            raise self.storage_error(step, exc) from None

    @contextlib.contextmanager
    def _new_file(self, path: Path, step: str) -> Iterator[int]:
        """An fd of a new file (O_EXCL), closed on exit; OSErrors become storage errors."""
        fd = self._guard(step, os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                         0o600)
        try:
            yield fd
        finally:
            os.close(fd)

    def import_blob(self, src: IO[bytes], expected: str | None = None) -> tuple[str, int]:
        """Store a blob read from src whose digest is learnt while copying (rl load).

        Returns (digest, size); ImageError when `expected` is given and does not match.
        """
        self.ensure_dirs()
        tmp = self.paths.tmp / f"import-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            hasher = _bulk_sha256()
            size = 0
            with open(tmp, "xb") as out:
                while chunk := src.read(_COPY_CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = f"sha256:{hasher.hexdigest()}"
            if expected is not None and expected != digest:
                raise ImageError(f"blob {expected} does not match its digest (content is {digest})",
                                 "the archive is corrupt or was altered")
            with self.blob_lock(digest):
                final = self.blob_path(digest)
                if final.is_file():
                    os.unlink(tmp)
                else:
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, final)
                    _fsync_dir(self.paths.blobs)
            return digest, size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def find_layer_blob(self, diff_id: str) -> dict[str, Any] | None:
        """A stored compressed blob of the layer diff_id (its descriptor), from any image."""
        for image in self.list_images():
            for layer_diff, desc in zip(image.diff_ids, image.layers, strict=False):
                if layer_diff == diff_id and self.has_blob(desc["digest"]):
                    return desc
        return None

    def open_blob(self, digest: str) -> IO[bytes]:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store",
                             "pull the image again") from None

    def clean_tmp(self) -> None:
        """Remove downloads left by interrupted pulls: their lock is free or they are stale."""
        try:
            entries = list(os.scandir(self.paths.tmp))
        except FileNotFoundError:
            return
        now = time.time()
        for entry in entries:
            parts = entry.name.split("-")
            if len(parts) == 3 and parts[0] == "blob" and _HEX64.fullmatch(parts[1]):
                with self._lock(f"blob-{parts[1]}", wait=False) as free:
                    if free:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                continue
            try:  # anything else: removed once stale (a crashed `rl load`'s import file)
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS:
                    os.unlink(entry.path)
            except FileNotFoundError:
                pass  # its owner removed it meanwhile
            except OSError as exc:
                raise self.storage_error(f"cleaning up {entry.path}", exc) from None

    # -- layers ----------------------------------------------------------------------------
    def layer_dir(self, diff_id: str) -> Path:
        return self.paths.layers / digest_hex(diff_id)

    def layer_link(self, diff_id: str) -> str:
        return f"{LINK_PREFIX}/{link_id(digest_hex(diff_id))}"

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_dir(diff_id).is_dir() and (self.paths.layers / self.layer_link(diff_id)).is_symlink()

    def layer_size(self, diff_id: str) -> int:
        """The layer's uncompressed size, 0 when it has no record (a layer being removed)."""
        path = self.paths.layers / f"{digest_hex(diff_id)}.json"
        try:
            data = json.loads(path.read_text())
            return int(data.get("size", 0))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise self.storage_error(f"reading layer record {path}", exc) from None
        except (ValueError, AttributeError, TypeError) as exc:
            raise ImageError(f"reading layer record {path}: not a size record ({exc})",
                             "remove the image and pull it again") from None

    def extract_layer(
        self,
        diff_id: str,
        compression: str,
        blob_digest: str,
        notify: Callable[[str], None] | None = None,
        chown: bool = True,
    ) -> bool:
        """Unpack a stored blob as the layer diff_id, unless it is there (extract_layers)."""
        done = self.extract_layers([LayerSource(diff_id, compression, blob_digest)],
                                   notify=notify, chown=chown)
        return bool(done)

    def extract_layers(
        self,
        layers: list[LayerSource],
        *,
        notify: Callable[[str], None] | None = None,
        chown: bool = True,
        workers: int = 1,
    ) -> list[str]:
        """Unpack the layers that are not in the store yet, all or none. Run as root in the
        user namespace. Returns the diff_ids this call extracted.

        Every layer's lock is held throughout (taken in diff_id order, so two pulls cannot
        wait for each other), each layer is extracted into layers/.tmp-HEX-RAND (by up to
        `workers` forked processes), and only when all succeeded are they renamed into
        place: a pull that fails half-way leaves no layer behind, not even the ones that
        were complete. A layer with a `feed` is read from the blob a puller is writing.
        """
        from rootless.image.forked import run_parallel
        from rootless.image.unpack import remove_tree

        unique = list({layer.diff_id: layer for layer in layers}.values())
        pending: list[tuple[LayerSource, Path]] = []
        with contextlib.ExitStack() as locks:
            for diff_id in sorted(layer.diff_id for layer in unique):
                locks.enter_context(self.layer_lock(diff_id))
            for layer in unique:
                hexd = digest_hex(layer.diff_id)
                if (self.paths.layers / hexd).is_dir():
                    if layer.feed is not None:
                        layer.feed.close()  # another pull extracted it meanwhile
                    self._ensure_link(hexd)
                    continue
                pending.append((layer, self.paths.layers / f".tmp-{hexd}-{os.urandom(4).hex()}"))
            tasks: list[Callable[[], object]] = [
                functools.partial(self._extract_into, layer, tmp, notify, chown)
                for layer, tmp in pending]
            try:
                if workers <= 1 or len(tasks) <= 1:
                    for task in tasks:
                        task()
                else:
                    run_parallel(tasks, workers)
                for layer, tmp in pending:
                    hexd = digest_hex(layer.diff_id)
                    what = f"storing layer {layer.diff_id}"
                    self._guard(what, os.rename, _size_file(tmp), self.paths.layers / f"{hexd}.json")
                    self._guard(what, os.rename, tmp, self.paths.layers / hexd)
            except BaseException:
                for _, tmp in pending:
                    remove_tree(tmp)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_size_file(tmp))
                raise
            for layer, _ in pending:
                self._guard(f"linking layer {layer.diff_id}", self._ensure_link,
                            digest_hex(layer.diff_id))
        return [layer.diff_id for layer, _ in pending]

    def _extract_into(self, layer: LayerSource, tmp: Path, notify: Callable[[str], None] | None,
                      chown: bool) -> None:
        """Extract one layer into tmp (created here) and write its size beside it."""
        from rootless.image.blobfeed import DownloadFailed, GrowingBlob
        from rootless.image.unpack import EntryError, unpack_layer

        what = f"unpacking layer {layer.diff_id} (blob {layer.blob_digest}) into {tmp}"
        source = GrowingBlob(layer.feed, f"blob {layer.blob_digest}") if layer.feed else None
        try:
            self._guard(what, os.mkdir, tmp, 0o755)
            if source is not None:
                result = unpack_layer(source, layer.compression, tmp, layer.diff_id, chown=chown,
                                      blob_digest=layer.blob_digest, blob_size=layer.blob_size)
            else:
                with self.open_blob(layer.blob_digest) as raw:
                    result = unpack_layer(raw, layer.compression, tmp, layer.diff_id, chown=chown)
            self._guard(f"recording layer {layer.diff_id}", _write_json, _size_file(tmp),
                        {"size": result.size})
        except DownloadFailed:
            raise  # the puller reports its own error
        except EntryError as exc:
            raise self.storage_error(f"{what}: {exc.action}", exc.cause) from None
        except ImageError as exc:
            if exc.message.startswith(what):
                raise
            raise ImageError(f"{what}: {exc.message}", exc.hint) from None
        finally:
            if source is not None:
                source.close()
        if notify:
            for notice in result.notices:
                notify(f"layer {layer.diff_id[7:19]}: {notice}")

    def add_layer(self, diff_id: str, tree: str, size: int) -> bool:
        """Move a layer tree written in overlay's format (rl build's upper directory) into
        place as diff_id; when the layer is there already, the tree is removed instead.
        Run as root in the user namespace (the tree holds files of subordinate ids).
        Returns True when this call added it."""
        from rootless.image.unpack import remove_tree

        hexd = digest_hex(diff_id)
        final = self.paths.layers / hexd
        with self.layer_lock(diff_id):
            added = not final.is_dir()
            if added:
                os.rename(tree, final)
                _write_json(self.paths.layers / f"{hexd}.json", {"size": size})
            else:
                remove_tree(tree)
            self._ensure_link(hexd)
        return added

    def adopt_blob(self, tmp: str, digest: str) -> None:
        """Rename a complete, already hashed file (on the store's filesystem) into place."""
        with self.blob_lock(digest):
            final = self.blob_path(digest)
            if final.is_file():
                os.unlink(tmp)
                return
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)

    def _ensure_link(self, hexd: str) -> None:
        link = self.paths.layers / LINK_PREFIX / link_id(hexd)
        target = f"../{hexd}"
        try:
            if os.readlink(link) == target:
                return
        except FileNotFoundError:
            pass  # no link yet
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a symlink, replaced below
                raise
        tmp = link.with_name(f".tmp-{link.name}-{os.urandom(4).hex()}")
        os.symlink(target, tmp)
        os.replace(tmp, link)

    def clean_layer_tmp(self) -> None:
        """Remove half-extracted layers (and their size files) whose lock is free. Run as
        root in the namespace."""
        from rootless.image.unpack import remove_tree

        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.paths.layers):
                parts = entry.name.split("-")
                if entry.name.startswith(".tmp-") and len(parts) == 3 and _HEX64.fullmatch(parts[1]):
                    with self._lock(f"layer-{parts[1]}", wait=False) as free:
                        if not free:
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            remove_tree(entry.path)
                        else:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(entry.path)

    # -- images ----------------------------------------------------------------------------
    @property
    def _index_file(self) -> str:
        # Strings, not pathlib, on the read path: `rl run IMAGE` reads the index and the
        # image record on every start, and importing pathlib costs ~5 ms there.
        return os.path.join(self.paths.data_dir, "images", "index.json")

    def _read_index(self) -> dict[str, str]:
        try:
            with open(self._index_file) as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ImageError(f"reading the image index {self._index_file}: {exc}") from None
        names = data.get("names", {})
        return {str(k): str(v) for k, v in names.items()}

    def _write_index(self, names: dict[str, str]) -> None:
        self._guard(f"writing the image index {self._index_file}", _write_json,
                    self._index_file, {"names": dict(sorted(names.items()))})

    def _record_path(self, manifest_digest: str) -> str:
        return os.path.join(self.paths.data_dir, "images", f"{digest_hex(manifest_digest)}.json")

    def _read_record(self, manifest_digest: str) -> dict[str, Any] | None:
        try:
            with open(self._record_path(manifest_digest)) as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ImageError(f"reading image record {manifest_digest}: {exc}") from None
        return data if isinstance(data, dict) else None

    def _names_by_manifest(self, index: dict[str, str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, digest in index.items():
            out.setdefault(digest, []).append(name)
        return out

    def add_image(
        self,
        *,
        manifest_digest: str,
        config_digest: str,
        config: dict[str, Any],
        names: Iterable[str],
        layers: list[dict[str, Any]],
        media_type: str = "",
    ) -> LocalImage:
        """Record an image whose blobs and layers are in the store, and point names at it."""
        diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
        for d in diff_ids:
            if not self.has_layer(d):
                raise ImageError(f"layer {d} is missing from the store")
        size = sum(self.layer_size(d) for d in diff_ids)
        names = list(dict.fromkeys(names))
        record = LocalImage(
            id=config_digest, manifest_digest=manifest_digest, names=names, config=config,
            diff_ids=diff_ids, created=config.get("created"), size=size, layers=layers,
            media_type=media_type,
        )
        with self._lock("images"):
            index = self._read_index()
            known = os.path.exists(self._record_path(manifest_digest))
            if known and all(index.get(name) == manifest_digest for name in names):
                # recorded already under these names (a rebuild that changed nothing):
                # nothing to write, and no fsync
                record.names = self._names_by_manifest(index).get(manifest_digest, [])
                return record
            for name in names:
                index[name] = manifest_digest
            record.names = self._names_by_manifest(index).get(manifest_digest, [])
            self._guard(f"recording image {manifest_digest}", _write_json,
                        self._record_path(manifest_digest), record.to_json())
            self._write_index(index)
        return record

    def _load(self, manifest_digest: str, names: list[str]) -> LocalImage | None:
        data = self._read_record(manifest_digest)
        return LocalImage.from_json(data, names) if data else None

    def list_images(self) -> list[LocalImage]:
        index = self._read_index()
        by_manifest = self._names_by_manifest(index)
        out = []
        try:
            files = sorted(self.paths.images.glob("*.json"))
        except FileNotFoundError:
            return []  # no store yet
        for f in files:
            if not _HEX64.fullmatch(f.stem):
                continue
            image = self._load(f"sha256:{f.stem}", sorted(by_manifest.get(f"sha256:{f.stem}", [])))
            if image:
                out.append(image)
        return out

    def _candidates(self, text: str) -> list[str]:
        """The index names text may mean: its canonical form, then localhost/ for a short
        name (podman's rule for images built or loaded here), then text itself."""
        from rootless.errors import UsageError
        from rootless.image.reference import parse_reference

        names = []
        try:
            ref = parse_reference(text)
            names.append(str(ref))
            if ref.registry == "docker.io" and not text.startswith("docker.io/"):
                names.append(str(parse_reference(f"localhost/{text}")))
        except UsageError:
            pass  # not a reference: maybe an id
        names.append(text)
        return names

    def lookup(self, text: str) -> tuple[LocalImage, str | None] | None:
        """(image, the name it was found by, or None when found by id)."""
        index = self._read_index()
        by_manifest = self._names_by_manifest(index)

        def load(md: str) -> LocalImage | None:
            return self._load(md, sorted(by_manifest.get(md, [])))

        bare = text[7:] if text.startswith("sha256:") else text
        if _HEX64.fullmatch(bare):
            for image in self.list_images():
                if digest_hex(image.id) == bare or digest_hex(image.manifest_digest) == bare:
                    return image, None
        for name in self._candidates(text):
            if name in index:
                image = load(index[name])
                if image:
                    return image, name
            if "@sha256:" in name:
                repo, _, digest = name.partition("@")
                for image in self.list_images():
                    if image.manifest_digest == digest:
                        return image, None
        if re.fullmatch(r"[0-9a-f]{3,63}", bare):
            found = [i for i in self.list_images() if digest_hex(i.id).startswith(bare)]
            if len({i.id for i in found}) > 1:
                raise ImageError(f"{text}: short image id is ambiguous",
                                 "give more characters of the id")
            if found:
                return found[0], None
        return None

    def get_image(self, name_or_id: str) -> LocalImage | None:
        found = self.lookup(name_or_id)
        return found[0] if found else None

    def remove_image(
        self, name_or_id: str, force: bool, in_use: Callable[[str], bool]
    ) -> RemoveResult:
        """podman rmi's rules: a name of a multi-name image is untagged; an image a container
        uses is refused (with force, it loses its names and stays for the container)."""
        found = self.lookup(name_or_id)
        if not found:
            raise ImageError(f"{name_or_id}: image not known", exit_code=1)
        image, by_name = found
        result = RemoveResult()
        with self._gc_lock():
            if by_name is not None and len(image.names) > 1:
                self._untag(image, [by_name])
                result.untagged.append(by_name)
                return result
            if by_name is None and len(image.names) > 1 and not force:
                raise ImageError(
                    f"unable to delete image {image.short_id} by id: it has several names "
                    f"({', '.join(image.names)})",
                    "remove it by name, or use 'rl rmi -f'",
                    exit_code=2,
                )
            if in_use(image.id):
                if not force:
                    raise ImageError(
                        f"image {image.short_id} is in use by a container",
                        "remove the container first ('rl rm'), or untag the image with 'rl rmi -f'",
                        exit_code=2,
                    )
                self._untag(image, image.names)
                result.untagged.extend(image.names)
                return result
            self._untag(image, image.names)
            result.untagged.extend(image.names)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._record_path(image.manifest_digest))
            result.deleted.append(image.id)
            self._collect(PruneResult())
        return result

    def _untag(self, image: LocalImage, names: list[str]) -> None:
        with self._lock("images"):
            index = self._read_index()
            for name in names:
                if index.get(name) == image.manifest_digest:
                    del index[name]
            self._write_index(index)
            data = self._read_record(image.manifest_digest)
            if data is not None:
                data["names"] = sorted(self._names_by_manifest(index).get(image.manifest_digest, []))
                self._guard(f"recording image {image.manifest_digest}", _write_json,
                            self._record_path(image.manifest_digest), data)

    def forget_image(self, manifest_digest: str) -> None:
        """Drop an image record no name points at any more (its blobs go with a prune)."""
        with self._lock("images"):
            if manifest_digest not in self._read_index().values():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._record_path(manifest_digest))

    def untag(self, image: LocalImage, names: list[str]) -> None:
        """Remove names from an image; the image stays (dangling when it has none left)."""
        self._untag(image, names)

    def tag(self, image: LocalImage, name: str) -> None:
        with self._lock("images"):
            index = self._read_index()
            index[name] = image.manifest_digest
            self._write_index(index)

    def prune(self, in_use: Callable[[str], bool] = lambda _id: False,
              build_cache: str = "unused") -> PruneResult:
        """Remove dangling images no container uses, then unreferenced layers and blobs.

        build_cache: "unused" drops rl build's cache records whose layer no remaining image
        holds (as podman's prune takes dangling intermediate images), "all" drops every
        record (`rl builder prune`), "keep" none."""
        result = PruneResult()
        with self._gc_lock():
            for image in self.list_images():
                if not image.names and not in_use(image.id):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._record_path(image.manifest_digest))
                    result.images.append(image.id)
            if build_cache != "keep":
                keep = None
                if build_cache == "unused":
                    keep = {d for image in self.list_images() for d in image.diff_ids}
                self.drop_cache(keep)
            self._collect(result)
        return result

    # -- rl build's cache records (written by rootless.build.cache) -------------------------
    @property
    def cache_dir(self) -> str:
        return os.path.join(self.paths.data_dir, CACHE_DIR)

    def cache_records(self) -> list[tuple[str, dict[str, Any]]]:
        out = []
        try:
            names = sorted(os.listdir(self.cache_dir))
        except FileNotFoundError:
            return []
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.cache_dir, name)) as f:
                    record = json.load(f)
            except (FileNotFoundError, ValueError):
                continue
            if isinstance(record, dict):
                out.append((name[:-5], record))
        return out

    def drop_cache(self, keep_diff_ids: set[str] | None = None) -> int:
        """Remove every cache record, or those whose layer is not in keep_diff_ids."""
        removed = 0
        for key, record in self.cache_records():
            if keep_diff_ids is not None and record.get("diff_id") in keep_diff_ids:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.cache_dir, f"{key}.json"))
                removed += 1
        return removed

    def _collect(self, result: PruneResult) -> None:
        """Remove layers and blobs no image record refers to. Caller holds the gc lock."""
        # layers and blobs rl build's cache records still point at (rootless.build.cache)
        keep_layers: set[str] = set()
        keep_blobs: set[str] = set()
        for _, record in self.cache_records():
            if _DIGEST.fullmatch(str(record.get("diff_id"))):
                keep_layers.add(digest_hex(record["diff_id"]))
            if isinstance(record.get("layer"), dict) and _DIGEST.fullmatch(
                    str(record["layer"].get("digest"))):
                keep_blobs.add(digest_hex(record["layer"]["digest"]))
        for image in self.list_images():
            keep_layers.update(digest_hex(d) for d in image.diff_ids)
            keep_blobs.add(digest_hex(image.manifest_digest))
            keep_blobs.add(digest_hex(image.id))
            keep_blobs.update(digest_hex(layer["digest"]) for layer in image.layers)
        doomed: list[str] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.paths.layers):
                if _HEX64.fullmatch(entry.name) and entry.name not in keep_layers:
                    doomed.append(entry.name)
        for hexd in doomed:
            result.bytes_freed += self.layer_size(f"sha256:{hexd}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.layers / LINK_PREFIX / link_id(hexd))
        if doomed:
            from rootless.image.unpack import remove_tree

            layers = self.paths.layers

            def remove() -> None:
                for hexd in doomed:
                    # rename first: a half-removed tree must never look like a layer
                    gone = layers / f".tmp-{hexd}-{os.urandom(4).hex()}"
                    os.rename(layers / hexd, gone)
                    remove_tree(gone)

            self.as_root(remove, "rl:[store]")
            for hexd in doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.paths.layers / f"{hexd}.json")
                result.layers.append(f"sha256:{hexd}")
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.paths.blobs):
                if _HEX64.fullmatch(entry.name) and entry.name not in keep_blobs:
                    with contextlib.suppress(FileNotFoundError):
                        result.bytes_freed += entry.stat().st_size
                        os.unlink(entry.path)
                        result.blobs.append(f"sha256:{entry.name}")


class LayerSource:
    """A layer to extract: its diff_id, and the blob it comes from (in the store, or still
    being written by a puller when `feed` is its extractor's socket: blobfeed.py)."""

    __slots__ = ("diff_id", "compression", "blob_digest", "blob_size", "feed")

    def __init__(self, diff_id: str, compression: str, blob_digest: str,
                 blob_size: int | None = None, feed: socket.socket | None = None) -> None:
        self.diff_id = diff_id
        self.compression = compression
        self.blob_digest = blob_digest
        self.blob_size = blob_size
        self.feed = feed


def _size_file(tmp: Path) -> Path:
    """Where a layer being extracted into tmp records its size until it is renamed."""
    return tmp.with_name(tmp.name + ".json")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{os.urandom(3).hex()}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
