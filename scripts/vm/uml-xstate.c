/*
 * LD_PRELOAD shim that lets Debian's User-Mode Linux 6.1 (linux.uml) run on hosts whose XSAVE
 * area is larger than UML's fixed buffer, such as CPUs with AMX. run-in-vm.sh builds and
 * preloads it; where the sizes agree it passes every call through unchanged.
 *
 * Why: UML saves and restores each guest process's FPU/vector state with
 * ptrace(PTRACE_GETREGSET / PTRACE_SETREGSET, pid, NT_X86_XSTATE, iov) using a buffer of a size
 * fixed at build time (2696 bytes: x87, SSE, AVX, AVX-512 and PKRU). The host kernel returns a
 * truncated state for a short GETREGSET, but refuses any SETREGSET whose length is not its own
 * full XSAVE size (arch/x86/kernel/fpu/regset.c, xstateregs_set: EFAULT), which with AMX tile
 * data is about 11 KiB. UML then panics with "ptrace set fp regs failed, errno = 14".
 * Making NT_X86_XSTATE fail so that UML falls back to PTRACE_SETFPREGS is not sound: that
 * restores only the 512-byte legacy area, and every page fault of a guest process goes through a
 * host signal handler (the skas SIGSEGV stub), whose delivery resets the whole extended state to
 * its initial value; the upper halves of YMM/ZMM, ZMM16-31 and the mask registers are then lost
 * (glibc's AVX-512 memcpy copies zeros, and busybox dies at once).
 *
 * What: a SETREGSET of NT_X86_XSTATE shorter than the host's size is re-issued with a buffer of
 * the host's size: UML's bytes first, zeros after, and in the XSAVE header only the components
 * that lie wholly inside UML's bytes (the others therefore take their initial state, which is
 * what a guest process that cannot use them — UML does not grant AMX — has anyway).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

typedef long (*ptrace_fn)(enum __ptrace_request, pid_t, void *, void *);

/* XSAVE standard format (Intel SDM vol. 1, 13.4): a 512-byte legacy area, then a 64-byte
 * header whose first word is XSTATE_BV, the set of components present. */
#define LEGACY_SIZE 512
#define HEADER_SIZE 64
/* Larger than any XSAVE area so far (AMX makes it about 11 KiB). Only the tracing thread of
 * UML calls ptrace on its guest processes, so one buffer is enough. */
static unsigned char full[64 * 1024];
static size_t host_size;      /* the kernel's XSAVE size: 0 until known */
static size_t masked_for;     /* UML's length for which `keep` was computed */
static uint64_t keep;         /* XSTATE_BV bits of components inside UML's length */

static ptrace_fn real_ptrace(void)
{
	static ptrace_fn real;

	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	return real;
}

/* The kernel's XSAVE size, learnt once from a GETREGSET that is given more than it needs: the
 * kernel shortens iov_len to exactly its size (kernel/ptrace.c, ptrace_regset). */
static size_t kernel_xstate_size(pid_t pid)
{
	struct iovec iov = { full, sizeof(full) };

	if (!host_size && real_ptrace()(PTRACE_GETREGSET, pid, (void *)NT_X86_XSTATE, &iov) == 0)
		host_size = iov.iov_len;
	return host_size;
}

/* Components 0 and 1 (x87, SSE) live in the legacy area; component i >= 2 is at the offset
 * CPUID leaf 0xD sub-leaf i gives in EBX, with the size in EAX. */
static uint64_t components_inside(size_t len)
{
	uint64_t mask = 3;
	unsigned int size, offset, ecx, edx;

	for (unsigned int i = 2; i < 64; i++)
		if (__get_cpuid_count(0xd, i, &size, &offset, &ecx, &edx) && size &&
		    (size_t)offset + size <= len)
			mask |= 1ULL << i;
	return mask;
}

long ptrace(enum __ptrace_request request, ...)
{
	va_list ap;
	pid_t pid;
	void *addr, *data;
	struct iovec *given, iov;
	size_t size;
	uint64_t bv;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);

	if (request != PTRACE_SETREGSET || (uintptr_t)addr != NT_X86_XSTATE || !data)
		return real_ptrace()(request, pid, addr, data);
	given = data;
	size = kernel_xstate_size(pid);
	if (!size || size > sizeof(full) || given->iov_len >= size ||
	    given->iov_len < LEGACY_SIZE + HEADER_SIZE)
		return real_ptrace()(request, pid, addr, data);

	if (masked_for != given->iov_len) {
		keep = components_inside(given->iov_len);
		masked_for = given->iov_len;
	}
	memcpy(full, given->iov_base, given->iov_len);
	memset(full + given->iov_len, 0, size - given->iov_len);
	memcpy(&bv, full + LEGACY_SIZE, sizeof(bv));
	bv &= keep;
	memcpy(full + LEGACY_SIZE, &bv, sizeof(bv));
	iov.iov_base = full;
	iov.iov_len = size;
	return real_ptrace()(request, pid, addr, &iov);
}
