"""The build's one error type: where in the Containerfile, and why."""

from __future__ import annotations

from rootless.errors import RlError


class BuildError(RlError):
    """A Containerfile that cannot be built. Raised before anything runs when the text itself
    is wrong (podman exits 125 for those too)."""

    def __init__(self, reason: str, file: str | None = None, line: int | None = None,
                 hint: str | None = None, *, exit_code: int | None = None) -> None:
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        super().__init__(where + reason, hint, exit_code=exit_code)
        self.reason = reason
        self.file = file
        self.line = line
