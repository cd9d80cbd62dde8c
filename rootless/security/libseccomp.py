"""Compiling a docker/podman JSON seccomp profile with libseccomp (ctypes over the system's
libseccomp.so.2). Imported only when the compiled filter is not in the cache yet; see
rootless/security/seccomp.py for the profile semantics and the cache.
"""

from __future__ import annotations

import ctypes
import os

from rootless.errors import SetupError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# <seccomp.h> actions
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_KILL_THREAD = 0x00000000
SCMP_ACT_TRAP = 0x00030000
SCMP_ACT_LOG = 0x7FFC0000
SCMP_ACT_ALLOW = 0x7FFF0000


def _errno_action(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


def _trace_action(value: int) -> int:
    return 0x7FF00000 | (value & 0xFFFF)


_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}

# uname -m -> the Go/OCI architecture names profiles use in includes.arches.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm",
            "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64": "mips64"}
# uname -m -> the profile's SCMP_ARCH_* name.
_SCMP_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64",
              "i686": "SCMP_ARCH_X86", "armv7l": "SCMP_ARCH_ARM", "ppc64le": "SCMP_ARCH_PPC64LE",
              "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}


class ScmpArgCmp(ctypes.Structure):
    # struct scmp_arg_cmp { unsigned int arg; enum scmp_compare op; uint64 datum_a, datum_b; }
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


# -- profile rules --------------------------------------------------------------------------

def _kernel_at_least(release: str, wanted: str) -> bool:
    def nums(text: str) -> tuple[int, ...]:
        out = []
        for part in text.split("-")[0].split(".")[:3]:
            digits = "".join(ch for ch in part if ch.isdigit())
            out.append(int(digits or 0))
        return tuple(out)

    return nums(release) >= nums(wanted)


def rule_applies(rule: dict[str, Any], caps: set[str], go_arch: str, release: str) -> bool:
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if inc.get("arches") and go_arch not in inc["arches"]:
        return False
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    if inc.get("minKernel") and not _kernel_at_least(release, inc["minKernel"]):
        return False
    if exc.get("arches") and go_arch in exc["arches"]:
        return False
    if exc.get("caps") and any(c in caps for c in exc["caps"]):
        return False
    return True


def action_of(name: str, errno_ret: int | None, where: str) -> int:
    if name == "SCMP_ACT_ALLOW":
        return SCMP_ACT_ALLOW
    if name == "SCMP_ACT_ERRNO":
        return _errno_action(1 if errno_ret is None else errno_ret)  # EPERM unless told
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return SCMP_ACT_KILL_THREAD
    if name == "SCMP_ACT_KILL_PROCESS":
        return SCMP_ACT_KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return SCMP_ACT_TRAP
    if name == "SCMP_ACT_LOG":
        return SCMP_ACT_LOG
    if name == "SCMP_ACT_TRACE":
        return _trace_action(1 if errno_ret is None else errno_ret)
    raise UsageError(f"seccomp profile: unsupported action {name!r} in {where}",
                     hint="rl supports ALLOW, ERRNO, KILL, KILL_PROCESS, TRAP, LOG and TRACE")


def profile_arches(profile: dict[str, Any], machine: str) -> list[str]:
    """libseccomp architecture names (x86_64, x86, x32...) for the native machine."""
    native = _SCMP_ARCH.get(machine)
    names: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            names = [native, *(entry.get("subArchitectures") or [])]
    if not names and profile.get("architectures"):
        names = list(profile["architectures"])
    return [n.removeprefix("SCMP_ARCH_").lower() for n in names]


# -- libseccomp ------------------------------------------------------------------------------

class LibSeccomp:
    """The few libseccomp calls used to compile a profile (seccomp.h, libseccomp >= 2.4)."""

    def __init__(self, name: str = "libseccomp.so.2") -> None:
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise FileNotFoundError(str(exc)) from None
        vp = ctypes.c_void_p
        self.init = self._fn(lib, "seccomp_init", vp, [ctypes.c_uint32])
        self.release = self._fn(lib, "seccomp_release", None, [vp])
        self.arch_add = self._fn(lib, "seccomp_arch_add", ctypes.c_int, [vp, ctypes.c_uint32])
        self.arch_resolve = self._fn(lib, "seccomp_arch_resolve_name", ctypes.c_uint32,
                                     [ctypes.c_char_p])
        self.resolve = self._fn(lib, "seccomp_syscall_resolve_name", ctypes.c_int,
                                [ctypes.c_char_p])
        self.rule_add = self._fn(lib, "seccomp_rule_add_array", ctypes.c_int,
                                 [vp, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                  ctypes.POINTER(ScmpArgCmp)])
        self.export_bpf = self._fn(lib, "seccomp_export_bpf", ctypes.c_int, [vp, ctypes.c_int])

    @staticmethod
    def _fn(lib: Any, name: str, restype: Any, argtypes: list[Any]) -> Any:
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
        return fn


def compile_profile(profile: dict[str, Any], caps: set[str], machine: str, release: str,
                    libseccomp: LibSeccomp) -> bytes:
    """The BPF program for `profile` as it applies to a container with `caps`."""
    default = action_of(profile.get("defaultAction", ""), profile.get("defaultErrnoRet"),
                        "defaultAction")
    ls = libseccomp
    ctx = ls.init(default)
    if not ctx:
        raise SetupError("seccomp: libseccomp refused to create a filter")
    go_arch = _GO_ARCH.get(machine, machine)
    try:
        for arch in profile_arches(profile, machine):
            token = ls.arch_resolve(arch.encode())
            if token == 0:
                continue  # an architecture this libseccomp does not know
            rc = ls.arch_add(ctx, token)
            if rc not in (0, -17):  # -EEXIST: the native one is always there
                raise SetupError(f"seccomp: adding architecture {arch}: {os.strerror(-rc)}")
        for i, rule in enumerate(profile.get("syscalls") or []):
            if not rule_applies(rule, caps, go_arch, release):
                continue
            where = f"syscalls[{i}]"
            action = action_of(rule.get("action", ""), rule.get("errnoRet"), where)
            if action == default:
                continue  # libseccomp refuses rules that repeat the default action
            args = rule.get("args") or []
            array = (ScmpArgCmp * max(len(args), 1))()
            for j, arg in enumerate(args):
                op = _OPS.get(arg.get("op", ""))
                if op is None or not 0 <= int(arg.get("index", -1)) < 6:
                    raise UsageError(f"seccomp profile: bad argument filter in {where}: {arg}")
                array[j] = ScmpArgCmp(int(arg["index"]), op, int(arg.get("value", 0)),
                                      int(arg.get("valueTwo", 0)))
            names = rule.get("names") or ([rule["name"]] if rule.get("name") else [])
            for name in names:
                nr = ls.resolve(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: not a syscall of this libseccomp
                    continue
                rc = ls.rule_add(ctx, action, nr, len(args), array)
                if rc < 0:
                    raise SetupError(f"seccomp: rule for {name} in {where}: {os.strerror(-rc)}")
        fd = os.memfd_create("rl-seccomp", os.MFD_CLOEXEC)
        try:
            rc = ls.export_bpf(ctx, fd)
            if rc < 0:
                raise SetupError(f"seccomp: exporting the filter: {os.strerror(-rc)}")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        ls.release(ctx)
