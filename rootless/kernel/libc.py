"""ctypes bindings for the syscalls Python's os module lacks (3.10 has no os.unshare).

`Libc` is the seam: code that acts on the kernel takes a Libc-like object, so a unit test
can pass a recorder and check the order of calls without privileges.
"""

from __future__ import annotations

import ctypes
import os
import struct

from rootless.kernel import constants as c

# typing is imported for annotations only: importing it costs ~4 ms of `rl run`'s start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _errcheck(name: str) -> Any:
    def check(result: int, func: Any, args: tuple[Any, ...]) -> int:
        if result == -1:
            err = ctypes.get_errno()
            shown = ", ".join(_show(a) for a in args)
            raise OSError(err, f"{name}({shown}): {os.strerror(err)}")
        return result

    return check


def _show(arg: Any) -> str:
    if isinstance(arg, bytes):
        return repr(arg.decode(errors="replace"))
    if isinstance(arg, int):
        return hex(arg) if arg > 4096 else str(arg)
    return repr(arg)


def _path(p: str | bytes | os.PathLike[str] | None) -> bytes | None:
    if p is None:
        return None
    return os.fsencode(p)


class Libc:
    """Thin, typed wrappers over libc. Each method raises OSError on failure."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(None, use_errno=True)
        self._syscall_numbers = c._SYSCALLS.get(os.uname().machine, c._SYSCALLS["x86_64"])

        def bind(name: str, argtypes: list[Any]) -> Any:
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
            fn.errcheck = _errcheck(name)
            return fn

        self._unshare = bind("unshare", [ctypes.c_int])
        self._setns = bind("setns", [ctypes.c_int, ctypes.c_int])
        self._mount = bind(
            "mount",
            [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p],
        )
        self._umount2 = bind("umount2", [ctypes.c_char_p, ctypes.c_int])
        self._prctl = bind(
            "prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        )
        self._sethostname = bind("sethostname", [ctypes.c_char_p, ctypes.c_size_t])
        self._setdomainname = bind("setdomainname", [ctypes.c_char_p, ctypes.c_size_t])
        raw = lib.syscall
        raw.restype = ctypes.c_long
        self._raw_syscall = raw

    # -- namespaces -------------------------------------------------------------------------
    def unshare(self, flags: int) -> None:
        self._unshare(flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._setns(fd, nstype)

    # -- mounts -----------------------------------------------------------------------------
    def mount(
        self,
        source: str | bytes | None,
        target: str | bytes | os.PathLike[str],
        fstype: str | None,
        flags: int = 0,
        data: str | None = None,
    ) -> None:
        self._mount(
            _path(source),
            _path(target),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )

    def umount2(self, target: str | bytes | os.PathLike[str], flags: int = 0) -> None:
        self._umount2(_path(target), flags)

    def pivot_root(self, new_root: str | bytes, put_old: str | bytes) -> None:
        self._syscall("pivot_root", ctypes.c_char_p(_path(new_root)), ctypes.c_char_p(_path(put_old)))

    def mount_setattr(self, dirfd: int, path: str, flags: int, attr_set: int, attr_clr: int = 0) -> None:
        # struct mount_attr { u64 attr_set, attr_clr, propagation, userns_fd; }
        attr = struct.pack("QQQQ", attr_set, attr_clr, 0, 0)
        buf = ctypes.create_string_buffer(attr, len(attr))
        self._syscall(
            "mount_setattr",
            ctypes.c_int(dirfd),
            ctypes.c_char_p(path.encode()),
            ctypes.c_uint(flags),
            buf,
            ctypes.c_size_t(len(attr)),
        )

    # -- processes --------------------------------------------------------------------------
    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        return int(self._prctl(option, arg2, arg3, arg4, arg5))

    def set_pdeathsig(self, sig: int) -> None:
        self.prctl(c.PR_SET_PDEATHSIG, sig)

    def set_name(self, name: str) -> None:
        """The name `ps` shows (comm, 15 bytes)."""
        buf = ctypes.create_string_buffer(name.encode()[:15])
        self._prctl(c.PR_SET_NAME, ctypes.cast(buf, ctypes.c_void_p).value or 0, 0, 0, 0)

    def set_no_new_privs(self) -> None:
        self.prctl(c.PR_SET_NO_NEW_PRIVS, 1)

    def set_dumpable(self, on: bool) -> None:
        self.prctl(c.PR_SET_DUMPABLE, 1 if on else 0)

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        self._sethostname(raw, len(raw))

    def setdomainname(self, name: str) -> None:
        raw = name.encode()
        self._setdomainname(raw, len(raw))

    def pidfd_open(self, pid: int) -> int:
        return self._syscall("pidfd_open", ctypes.c_int(pid), ctypes.c_uint(0))

    def pidfd_send_signal(self, pidfd: int, sig: int) -> None:
        self._syscall(
            "pidfd_send_signal", ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0)
        )

    # -- capabilities (capset/capget, version 3: two 32-bit words per set) -------------------
    def capget(self) -> tuple[int, int, int]:
        """(effective, permitted, inheritable) of the calling thread, as 64-bit masks."""
        header = (ctypes.c_uint32 * 2)(c.LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()
        self._syscall("capget", header, data)
        eff = data[0] | (data[3] << 32)
        perm = data[1] | (data[4] << 32)
        inh = data[2] | (data[5] << 32)
        return eff, perm, inh

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = (ctypes.c_uint32 * 2)(c.LINUX_CAPABILITY_VERSION_3, 0)
        m = 0xFFFFFFFF
        data = (ctypes.c_uint32 * 6)(
            effective & m, permitted & m, inheritable & m,
            effective >> 32, permitted >> 32, inheritable >> 32,
        )
        self._syscall("capset", header, data)

    # -- raw --------------------------------------------------------------------------------
    def _syscall(self, name: str, *args: Any) -> int:
        number = self._syscall_numbers[name]
        result = int(self._raw_syscall(ctypes.c_long(number), *args))
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, f"{name}: {os.strerror(err)}")
        return result


_instance: list[Libc] = []


def libc() -> Libc:
    """The process's Libc, created on first use (ctypes.CDLL costs a little)."""
    if not _instance:
        _instance.append(Libc())
    return _instance[0]
