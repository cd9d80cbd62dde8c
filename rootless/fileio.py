"""Reading and writing the small text files rl inspects and sets (/proc, /sys, /etc, cgroup
files): one helper each instead of a private copy in every module. Imports nothing but os: it
is on `rl run`'s start-up path."""

from __future__ import annotations

import os


def read_or_empty(path: str) -> str:
    """The file's text, or "" when it does not exist or cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def write_existing(path: str, text: str) -> None:
    """One write(2) of `text` to an existing file (no O_CREAT, no truncation): what the
    kernel's files want (cgroup limits, oom_score_adj), each value in a single write."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
