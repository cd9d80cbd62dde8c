"""Errors of the idmap package. Messages are complete sentences a user can act on."""

from __future__ import annotations


class IdMapError(Exception):
    """An id mapping could not be read, planned or applied. `hint` says how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class SubidFileError(IdMapError):
    """A line of /etc/subuid or /etc/subgid is malformed; the message names file and line."""
