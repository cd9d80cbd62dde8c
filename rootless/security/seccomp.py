"""seccomp: a docker/podman JSON profile compiled to a BPF program through libseccomp.

libseccomp (Debian's libseccomp2) is used through ctypes (rootless/security/libseccomp.py);
it compiles the profile and exports the classic-BPF program (seccomp_export_bpf). The program is cached under the
runtime directory, keyed by a hash of the profile, the capabilities its rules depend on and
the architecture, so a run with a cached filter never loads libseccomp at all: PID 1 only
hands the bytes to prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) (seccomp(2)).

Profile semantics (the format podman, docker and the OCI runtime spec use):
  defaultAction/defaultErrnoRet     what a syscall no rule matches gets
  archMap (or architectures)        the native architecture plus its sub-architectures
                                    (x86 and x32 on x86_64): a 32-bit syscall entry must not
                                    be a way around the filter
  syscalls[].names/action/errnoRet  one rule per name; unknown names are skipped
  syscalls[].args                   {index, value, valueTwo, op}: all must hold (AND)
  syscalls[].includes/excludes      caps, arches, minKernel: the rule applies only when the
                                    container has (has not) those capabilities, etc.
"""

from __future__ import annotations

import ctypes
import os
import struct

from rootless.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

FORMAT = b"rl-seccomp-1"

# <linux/seccomp.h>, <linux/prctl.h>
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

class Filter:
    """A compiled program, ready for PID 1: the buffers live as long as this object."""

    __slots__ = ("program", "_buf", "_fprog")

    def __init__(self, program: bytes) -> None:
        if not program or len(program) % 8:
            raise ValueError("a BPF program is a non-empty array of 8-byte instructions")
        self.program = program
        self._buf = ctypes.create_string_buffer(program, len(program))
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; } (<linux/filter.h>)
        fprog = struct.pack("@HP", len(program) // 8, ctypes.addressof(self._buf))
        self._fprog = ctypes.create_string_buffer(fprog, len(fprog))

    def install(self, lib: Any) -> None:
        """Load the filter into the calling thread. The kernel wants no_new_privs or
        CAP_SYS_ADMIN in the caller's user namespace (seccomp(2)), else EACCES."""
        lib.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._fprog))

    def __len__(self) -> int:
        return len(self.program) // 8


# -- the cache -------------------------------------------------------------------------------

def cache_key(profile_bytes: bytes, caps: set[str], machine: str, release: str) -> str:
    try:
        from _blake2 import blake2b  # 0.2 ms to import; hashlib pulls in OpenSSL (3 ms)
    except ImportError:
        from hashlib import blake2b
    h = blake2b(digest_size=20)
    for part in (FORMAT, machine.encode(), release.encode(), ",".join(sorted(caps)).encode(),
                 profile_bytes):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def load_filter(profile_bytes: bytes, source: str, caps: set[str], cache_dir: str | None,
                libseccomp_name: str = "libseccomp.so.2", log: Any = None) -> Filter:
    """The compiled filter for a profile, from the cache or compiled (and cached) now.
    Raises FileNotFoundError when libseccomp is missing and nothing is cached. A cache entry
    that cannot be read is compiled again (`log`, when given, says why)."""
    uname = os.uname()  # platform.machine() is the same value, but importing platform costs
    machine, release = uname.machine, uname.release
    key = cache_key(profile_bytes, caps, machine, release)
    path = os.path.join(cache_dir, key + ".bpf") if cache_dir else None
    if path:
        try:
            with open(path, "rb") as f:
                return Filter(f.read())
        except FileNotFoundError:
            pass  # not compiled yet for this profile, capability set and kernel
        except (OSError, ValueError) as exc:
            if log:
                log(f"seccomp: the cached filter {path} is unusable ({exc}): compiling again")
    import json

    try:
        profile = json.loads(profile_bytes)
    except ValueError as exc:
        raise UsageError(f"seccomp profile {source}: not valid JSON: {exc}") from None
    if not isinstance(profile, dict):
        raise UsageError(f"seccomp profile {source}: expected a JSON object")
    from rootless.security.libseccomp import LibSeccomp, compile_profile

    program = compile_profile(profile, caps, machine, release, LibSeccomp(libseccomp_name))
    if path and cache_dir:
        _store(cache_dir, path, program, log)
    return Filter(program)


def _store(cache_dir: str, path: str, program: bytes, log: Any = None) -> None:
    """Write the cache entry under a temporary name, then rename it into place. Any failure
    (a full or read-only runtime directory) only costs the next run a compile: it is logged,
    and the temporary file removed."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(cache_dir, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, program)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        if log:
            log(f"seccomp: cannot cache the compiled filter in {cache_dir}: {exc}")
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
