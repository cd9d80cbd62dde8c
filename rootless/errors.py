"""One error hierarchy. Each error knows its exit code and a one-line hint.

Only `rootless.main`/`rootless.cli` print errors: ``Error: <message>`` then the hint.
Exit codes follow podman: 125 rl itself failed, 126 the command cannot be invoked,
127 the command was not found.
"""

from __future__ import annotations

import errno as _errno
import os


class RlError(Exception):
    """An error rl reports to the user. `message` says what rl tried and what went wrong."""

    exit_code = 125

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(RlError):
    """A bad flag or argument value (podman: exit 125)."""


class ConfigError(RlError):
    """A config or profile file is invalid."""


class ImageError(RlError):
    """An image could not be resolved, pulled or unpacked."""


class RegistryError(ImageError):
    """A registry refused or failed a request."""


class SetupError(RlError):
    """Setting up the container (namespaces, mounts, ids) failed."""


class CgroupError(RlError):
    """A cgroup limit could not be applied."""


class NetworkError(RlError):
    """Setting up the container's network failed."""


class StateError(RlError):
    """A container's state does not allow the operation (unknown name, not running...)."""


class CommandError(RlError):
    """The container's command could not be invoked: 126, or 127 when not found."""

    exit_code = 126


def errno_name(err: int) -> str:
    """`ENOENT` for 2; the number itself when the name is unknown."""
    return _errno.errorcode.get(err, str(err))


def describe_oserror(action: str, exc: OSError) -> str:
    """'<action>: <strerror> (<ERRNO>)', the message shape every syscall failure uses."""
    if exc.errno is None:
        return f"{action}: {exc}"
    return f"{action}: {os.strerror(exc.errno)} ({errno_name(exc.errno)})"
