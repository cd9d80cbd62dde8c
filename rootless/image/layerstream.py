"""A layer's uncompressed tar stream, decompressed and hashed in a thread of its own.

`tar -xzf` is fast partly because gzip runs as a second process: decompression and the
extraction's system calls overlap on two CPUs. LayerStream does the same inside one process:
a producer thread reads the compressed blob, verifies its digest when asked, inflates it and
hashes the result (the diff_id); zlib, ISA-L and hashlib all release the GIL on large buffers,
so that thread really runs beside the extractor's Python code and its system calls.

gzip is inflated with ISA-L (PyPI `isal`) when it is installed — about 2.5 times faster than
zlib on these machines (157 against 395 ms for a 12 MB layer) — and with the standard
library's zlib otherwise. Both give the same bytes; the digests check them.

The consumer side is file-like for tarfile in its seekable mode ("r:"): read(n) returns
exactly n bytes unless the stream ends, tell() counts, and seek() moves forward only (by
skipping), which is all tarfile does when members are read in order. That avoids the
stream mode's ("r|") buffer juggling, which cost more than the header parsing.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import zlib
from typing import Any, Protocol

from rootless.errors import ImageError

CHUNK = 1 << 20  # largest piece the producer hands over (bounds memory against gzip bombs)
READ_SIZE = 256 << 10  # compressed bytes read at a time
QUEUE_CHUNKS = 8  # pieces in flight between the threads


class Readable(Protocol):
    """What a layer is read from: a file, a pipe, a blob still being written."""

    def read(self, n: int = -1, /) -> bytes: ...


def _zlib_module() -> Any:
    """ISA-L's zlib-compatible module when installed, else the standard library's zlib."""
    try:
        from isal import isal_zlib  # optional: a faster inflate with the same API

        return isal_zlib
    except ImportError:
        return zlib


class Inflater:
    """gzip reader with bounded output per call; handles concatenated gzip members."""

    def __init__(self, raw: Readable, zmod: Any = None) -> None:
        self._raw = raw
        self._zmod = zmod or _zlib_module()
        self._z = self._zmod.decompressobj(wbits=31)
        self._pending = b""
        self._started = False  # a member has begun: input ending now is a truncation
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        """Up to n (CHUNK when n < 0) uncompressed bytes; b"" at the end of the stream."""
        if n is None or n < 0:
            n = CHUNK
        while not self._eof:
            if not self._pending:
                self._pending = self._raw.read(READ_SIZE)
                if not self._pending:
                    self._eof = True
                    if self._started:
                        raise ImageError("layer is a truncated gzip stream")
                    return b""
            self._started = True
            try:
                data: bytes = self._z.decompress(self._pending, n)
            except self._zmod.error as exc:
                raise ImageError(f"layer is not valid gzip: {exc}") from None
            self._pending = self._z.unconsumed_tail
            if self._z.eof:
                # the end of one gzip member; another may follow (RFC 1952 section 2.2)
                self._pending = self._z.unused_data
                self._z = self._zmod.decompressobj(wbits=31)
                self._started = False
            if data:
                return data
        return b""


class _ZstdReader:
    def __init__(self, raw: Readable) -> None:
        import zstandard  # imported only for zstd layers

        self._reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True)  # type: ignore[arg-type]  # any object with read()
        self._error = zstandard.ZstdError

    def read(self, n: int = -1) -> bytes:
        try:
            data: bytes = self._reader.read(CHUNK if n is None or n < 0 else n)
        except self._error as exc:
            raise ImageError(f"layer is not valid zstd: {exc}") from None
        return data


def open_decompressed(raw: Readable, compression: str) -> Any:
    """A reader of the uncompressed tar stream; compression is mediatypes.COMPRESSION_*."""
    if compression == "gzip":
        return Inflater(raw)
    if compression == "zstd":
        return _ZstdReader(raw)
    if compression == "none":
        return raw
    raise ImageError(f"unknown layer compression {compression!r}")


class _VerifiedRaw:
    """The compressed blob as it is read, hashed and counted against its descriptor."""

    def __init__(self, raw: Readable, digest: str, size: int | None) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        algorithm = digest.split(":", 1)[0]
        if algorithm not in ("sha256", "sha512"):
            raise ImageError(f"unsupported blob digest {digest!r}")
        self._hash = hashlib.new(algorithm)
        self._count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._count += len(data)
            if self._size is not None and self._count > self._size:
                raise ImageError(f"blob {self._digest} is larger than its {self._size} bytes")
            self._hash.update(data)
            return data
        if self._size is not None and self._count != self._size:
            raise ImageError(f"blob {self._digest} has {self._count} bytes, expected {self._size}")
        actual = f"{self._hash.name}:{self._hash.hexdigest()}"
        if actual != self._digest:
            raise ImageError(f"blob {self._digest} does not match its digest (content is {actual})",
                             "the data was altered; it was discarded")
        return b""


class LayerStream:
    """The uncompressed stream of one layer, produced by a thread (see the module's doc).

    `diff_id` and `size` are final once read() has returned b"" (the producer finished).
    When `blob_digest` is given, the compressed bytes are verified too, and the end of the
    stream raises ImageError if they do not match. close() stops the producer.
    """

    def __init__(self, raw: Readable, compression: str, *, blob_digest: str | None = None,
                 blob_size: int | None = None) -> None:
        source: Readable = raw
        if blob_digest is not None:
            source = _VerifiedRaw(raw, blob_digest, blob_size)
        self._source = open_decompressed(source, compression)
        self._hash = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._chunk = b""
        self._off = 0
        self._pos = 0
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="rl-inflate", daemon=True)
        self._thread.start()

    @property
    def diff_id(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    # -- producer thread -------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._source.read(CHUNK)
                if not data:
                    break
                self._hash.update(data)
                self.size += len(data)
                self._queue.put(data)
            self._queue.put(b"")
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put(exc)

    # -- consumer side ---------------------------------------------------------------------
    def _next_chunk(self) -> bool:
        if self._ended:
            return False
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if not item:
            self._ended = True
            return False
        self._chunk, self._off = item, 0
        return True

    def read_some(self, n: int) -> bytes:
        """Between 1 and n bytes (b"" at the end): no copy when a whole piece fits."""
        if self._off >= len(self._chunk) and not self._next_chunk():
            return b""
        chunk, off = self._chunk, self._off
        if off == 0 and n >= len(chunk):
            data = chunk
        else:
            data = chunk[off:off + n]
        self._off = off + len(data)
        self._pos += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        """Exactly n bytes unless the stream ends first (tarfile relies on it)."""
        if n is None or n < 0:
            parts = []
            while data := self.read_some(CHUNK):
                parts.append(data)
            return b"".join(parts)
        first = self.read_some(n)
        if len(first) == n or not first:
            return first
        parts = [first]
        have = len(first)
        while have < n and (data := self.read_some(n - have)):
            parts.append(data)
            have += len(data)
        return b"".join(parts)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        """Forward only, by skipping: tarfile seeks past a member's padding."""
        target = offset if whence == 0 else self._pos + offset
        if whence not in (0, 1) or target < self._pos:
            raise ImageError("internal error: the layer stream cannot seek backwards")
        while self._pos < target and self.read_some(target - self._pos):
            pass
        return self._pos

    def drain(self) -> None:
        """Read to the end: the tar's end blocks and padding are part of the diff_id."""
        while self.read_some(CHUNK):
            pass

    def close(self) -> None:
        """Stop the producer (unblocking it if the queue is full) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(0.01)
