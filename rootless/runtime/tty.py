"""The launcher's side of `-t`: raw mode on the user's terminal and a copy loop to the pty
master that PID 1 sent over the channel."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
import tty as _tty

from rootless.kernel import constants as k


def window_size(fd: int = 0) -> tuple[int, int] | None:
    """(rows, cols) of the terminal on fd, or None when it is not a terminal."""
    for candidate in (fd, 1, 2):
        try:
            rows, cols, _x, _y = struct.unpack(
                "HHHH", fcntl.ioctl(candidate, k.TIOCGWINSZ, b"\0" * 8)
            )
            return rows, cols
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EBADF):  # not a terminal; not open
                raise
    return None


def set_window_size(master: int, size: tuple[int, int] | None) -> None:
    if size:
        fcntl.ioctl(master, k.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


class RawMode:
    """Put stdin in raw mode while the container runs; restore it on exit."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        self.saved: list | None = None

    def __enter__(self) -> RawMode:
        if os.isatty(self.fd):
            self.saved = termios.tcgetattr(self.fd)
            _tty.setraw(self.fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSAFLUSH, self.saved)


def copy_chunk(src: int, dst: int) -> bool:
    """Copy what is readable from src to dst; False at end-of-file, when the other side of a
    pty or terminal is gone (EIO) or when dst is a closed pipe (EPIPE). A non-blocking src
    with nothing to read raises BlockingIOError (the callers that drain a pty stop there)."""
    try:
        data = os.read(src, 65536)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno != errno.EIO:  # a pty master whose slave side is closed, a hung-up tty
            raise
        return False
    if not data:
        return False
    view = memoryview(data)
    while view:
        try:
            n = os.write(dst, view)
        except BlockingIOError:
            import select

            select.select([], [dst], [])
            continue
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EPIPE):
                raise
            return False
        view = view[n:]
    return True
