"""Reading and writing the small text files rl inspects and sets (/proc, /sys, /etc, cgroup
files): one helper each instead of a private copy in every module. Imports only errno (built
in) and os: it is on `rl run`'s start-up path."""

from __future__ import annotations

import errno
import os

# The errnos that mean "the file is not there", the only ones read_or_empty turns into "":
# ENOENT  no such file (a kernel without that /proc or /sys file, an /etc file the host lacks,
#         /proc/PID of a process that has been reaped);
# ENOTDIR a component of the path is not a directory (the same answer one level up);
# ESRCH   a /proc/PID file whose process exited between open and read (proc_single_show).
MISSING = (errno.ENOENT, errno.ENOTDIR, errno.ESRCH)


def read_or_empty(path: str, missing: tuple[int, ...] = MISSING) -> str:
    """The file's text, or "" when it is not there (an errno in `missing`). Any other error
    (EACCES, EISDIR, EIO...) is raised: an unreadable file is not an empty one."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError as exc:
        if exc.errno not in missing:
            raise
        return ""


def write_existing(path: str, text: str) -> None:
    """One write(2) of `text` to an existing file (no O_CREAT, no truncation): what the
    kernel's files want (cgroup limits, oom_score_adj), each value in a single write."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
