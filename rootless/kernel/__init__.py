"""The only code that calls libc. Imports nothing else from the project.

Every function raises OSError naming the call and its arguments when the kernel refuses;
callers turn that into an RlError with a hint.
"""

from rootless.kernel.libc import Libc, libc

__all__ = ["Libc", "libc"]
