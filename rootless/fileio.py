"""Reading the small text files rl inspects (/proc, /sys, /etc): one helper instead of a
private copy in every module. Imports nothing: it is on `rl run`'s start-up path."""

from __future__ import annotations


def read_or_empty(path: str) -> str:
    """The file's text, or "" when it does not exist or cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
