"""Runs the cgroup v2 VM suite (tests/vm) inside the User-Mode Linux guest and fails if it
fails. This host's cgroups are a v1/v2 hybrid, so real limits can only be shown in the guest
(scripts/vm/run-in-vm.sh; ../shared notes: cgroup-v2-vm.md)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, need, need_tool

pytestmark = pytest.mark.vm

# Run as a tracer with the shim preloaded: a stopped child's XSAVE state is read and written back
# with UML 6.1's fixed 2696-byte buffer, with markers in XMM0 (legacy area, offset 160) and in
# the upper half of YMM0 (AVX component 2, offset 576 in the standard format, made present in
# XSTATE_BV), then read again. Without the shim, a host with AMX refuses the write (EFAULT).
TRACER = r"""
import ctypes, os, signal, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
L = ctypes.c_long
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
GETREGSET, SETREGSET, NT_X86_XSTATE, UML = 0x4204, 0x4205, 0x202, 2696
pid = os.fork()
if pid == 0:
    libc.ptrace(L(0), L(0), L(0), L(0))  # PTRACE_TRACEME
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)
os.waitpid(pid, os.WUNTRACED)
def regset(request, buf):
    iov = Iov(ctypes.addressof(buf), len(buf))
    if libc.ptrace(L(request), L(pid), L(NT_X86_XSTATE), ctypes.byref(iov)) != 0:
        sys.exit(f"ptrace {request:#x}: {os.strerror(ctypes.get_errno())}")
buf = ctypes.create_string_buffer(UML)
regset(GETREGSET, buf)
buf[160:176] = b"xmm0-low-marker!"
buf[576:592] = b"ymm0-high-marker"
bv = struct.unpack_from("<Q", buf, 512)[0] | 0b111
struct.pack_into("<Q", buf, 512, bv)
regset(SETREGSET, buf)
back = ctypes.create_string_buffer(UML)
regset(GETREGSET, back)
os.kill(pid, signal.SIGKILL)
print(back[160:176].decode(), back[576:592].decode())
"""


def test_xstate_shim_lets_uml_write_its_short_fpu_state(tmp_path: Path) -> None:
    """scripts/vm/uml-xstate.c, which run-in-vm.sh preloads into linux.uml: UML's short
    PTRACE_SETREGSET of NT_X86_XSTATE succeeds and sets the registers, whatever the size of
    this host's XSAVE area (larger than UML's buffer on CPUs with AMX)."""
    gcc = need_tool("gcc")
    shim = tmp_path / "uml-xstate.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(shim),
                    str(REPO / "scripts" / "vm" / "uml-xstate.c")], check=True)
    r = subprocess.run([sys.executable, "-c", TRACER], env={**os.environ, "LD_PRELOAD": str(shim)},
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, "xmm0-low-marker! ymm0-high-marker"), r.stderr


def test_cgroup_suite_in_the_vm() -> None:
    need(shutil.which("linux.uml") is not None,
         "linux.uml is not installed (apt-get install user-mode-linux kmod uidmap)")
    need(shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe"),
         "modprobe is not installed (apt-get install kmod)")
    need_tool("gcc")  # run-in-vm.sh builds scripts/vm/uml-xstate.c
    env = dict(os.environ)
    env["RL_VM_VENV"] = sys.prefix
    job = ("PYTHONDONTWRITEBYTECODE=1 python -m pytest -q -p no:cacheprovider -o addopts= "
           "tests/vm")
    # A session of its own, so that a guest that hangs is stopped whole (UML is many processes).
    proc = subprocess.Popen([str(REPO / "scripts" / "vm" / "run-in-vm.sh"), job], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the VM suite did not finish in 10 minutes\n{out}\n{err}")
    report = f"--- guest stdout\n{out}\n--- guest stderr\n{err}"
    assert proc.returncode == 0, report
    # The guest really ran the suite (an empty collection would exit 5, but be explicit).
    assert " passed" in out and " failed" not in out, report
