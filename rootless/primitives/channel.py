"""The sync channel between the launcher and the processes it starts.

A SOCK_SEQPACKET socketpair: each send is one message (no framing to get wrong), a closed peer
reads as b"" (so a close-on-exec end tells the launcher that execve succeeded), and SCM_RIGHTS
can carry the pty master back from the container.

Messages are small JSON objects with an "op" key. Failures travel as
{"op": "error", "step": ..., "message": ..., "hint": ..., "errno": ..., "exit_code": ...}
so the launcher raises a proper error instead of reading a bare exit code (STYLE.md #3).
"""

from __future__ import annotations

# The C module directly: socket.py wraps it in enum classes and selectors, ~3 ms of start-up,
# for nothing this channel uses.
import _socket as socket
import os
import struct  # not array: it imports collections.abc, ~1.5 ms of every start

import rootless.jsonc as json  # json's C half: importing json costs ~5 ms (re)

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 1 << 20
INT_SIZE = struct.calcsize("i")


class Channel:
    """One end of a SEQPACKET socketpair carrying JSON messages (and, rarely, fds)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, op: str, **fields: Any) -> None:
        fields["op"] = op
        self.sock.send(json.dumps(fields).encode())

    def send_fd(self, op: str, fd: int, **fields: Any) -> None:
        fields["op"] = op
        fds = struct.pack("i", fd)  # one C int per descriptor (cmsg(3))
        self.sock.sendmsg([json.dumps(fields).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None when the peer closed its end (or exec'd)."""
        msg, fds = self.recv_with_fds()
        for fd in fds:
            os.close(fd)
        return msg

    def recv_with_fds(self) -> tuple[dict[str, Any] | None, list[int]]:
        while True:
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(
                    MAX_MESSAGE, socket.CMSG_SPACE(4 * INT_SIZE)
                )
                break
            except InterruptedError:
                continue
            except ConnectionResetError:
                return None, []
        fds: list[int] = []
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                count = len(payload) // INT_SIZE
                fds.extend(struct.unpack(f"{count}i", payload[: count * INT_SIZE]))
        if not data:
            return None, fds
        return json.loads(data), fds

    def close(self) -> None:
        self.sock.close()


def error_message(step: str, exc: BaseException) -> dict[str, Any]:
    """Turn an exception raised in a child into the fields of an "error" message."""
    from rootless.errors import RlError, describe_oserror

    fields: dict[str, Any] = {"step": step}
    if isinstance(exc, RlError):
        fields.update(message=exc.message, hint=exc.hint, exit_code=exc.exit_code)
    elif isinstance(exc, OSError):
        fields.update(message=describe_oserror(step, exc), errno=exc.errno, exit_code=125)
    else:
        fields.update(message=f"{step}: {type(exc).__name__}: {exc}", exit_code=125)
    return fields


def raise_error(msg: dict[str, Any]) -> None:
    """Re-raise, in the launcher, an error a child sent as data."""
    from rootless.errors import RlError, SetupError

    cls = SetupError if msg.get("exit_code", 125) == 125 else RlError
    raise cls(msg.get("message") or "container set-up failed", hint=msg.get("hint"),
              exit_code=msg.get("exit_code", 125))
