"""A blob handed from the download to the unpacker while it is still being written.

`rl pull` unpacks a layer as its blob downloads, as `curl | tar -xz` would, instead of after
the download: the extractor (a process in the user namespace, forked before any download
thread starts) follows the blob's temporary file in the store as it grows.

One socketpair (AF_UNIX, SOCK_SEQPACKET: message boundaries kept) per layer carries at most
two messages from the puller to the extractor, so the puller never blocks on it, whatever
order the two sides work in:

  1. "file" with an open, read-only descriptor of the blob file (SCM_RIGHTS, unix(7)): the
     file may be renamed into place or replaced by another pull's copy meanwhile, the
     descriptor still reads the same bytes;
  2. "done SIZE" once the puller has the whole blob, verified; or "fail" when the download
     failed (the extractor then stops and removes what it wrote).

Until "done", the extractor reads what the file holds (fstat) and, at its end, waits for more
(a short poll of the socket, then fstat again). It verifies the blob's digest itself over the
bytes it unpacked (LayerStream), so a layer is renamed into place only when what was
extracted is exactly the blob the manifest names. A puller that dies closes its end: EOF on
the socket is a failure too.
"""

from __future__ import annotations

import os
import select
import socket

from rootless.errors import ImageError

READ_SIZE = 256 << 10
POLL_SECONDS = 0.02  # how long the extractor waits at the end of the file before looking again


class DownloadFailed(ImageError):
    """The puller reported its download failed: its own error is the one to report."""


class BlobFeed:
    """The puller's end: say which file holds the blob, then whether it is complete."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._open = True

    def file(self, path: str | os.PathLike[str]) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._send(b"file", [fd])
        finally:
            os.close(fd)

    def done(self, size: int) -> None:
        self._send(b"done %d" % size)
        self.close()

    def fail(self) -> None:
        self._send(b"fail")
        self.close()

    def _send(self, message: bytes, fds: list[int] | None = None) -> None:
        if not self._open:
            return
        try:
            socket.send_fds(self._sock, [message], fds or [])
        except (BrokenPipeError, ConnectionResetError):
            # The extractor does not need this blob (another pull extracted the layer) or it
            # stopped; its own report says which. The download goes on: the blob is stored.
            self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            self._sock.close()


class GrowingBlob:
    """The extractor's end: a file-like reader of the blob as it is written."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self._sock = sock
        self._what = what  # "blob sha256:..." for messages
        self._fd = -1
        self._pos = 0
        self._size: int | None = None  # known once "done" arrived

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = READ_SIZE
        while True:
            if self._fd >= 0:
                end = self._size if self._size is not None else os.fstat(self._fd).st_size
                if self._pos < end:
                    data = os.pread(self._fd, min(n, end - self._pos), self._pos)
                    if not data:
                        raise ImageError(f"{self._what}: the downloaded file is shorter than "
                                         "announced")
                    self._pos += len(data)
                    return data
                if self._size is not None:
                    return b""
            self._receive(block=self._fd < 0)

    def _receive(self, *, block: bool) -> None:
        if not block:
            ready, _, _ = select.select([self._sock], [], [], POLL_SECONDS)
            if not ready:
                return
        message, fds, _, _ = socket.recv_fds(self._sock, 64, 1)
        for fd in fds:
            if self._fd >= 0:
                os.close(fd)
            else:
                self._fd = fd
        if message == b"file":
            return
        if message.startswith(b"done "):
            self._size = int(message[5:])
            return
        raise DownloadFailed(f"{self._what}: the download stopped before the end")

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._sock.close()


def feed_pair() -> tuple[BlobFeed, socket.socket]:
    """(the puller's feed, the extractor's socket for GrowingBlob) of one blob."""
    puller, extractor = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return BlobFeed(puller), extractor
