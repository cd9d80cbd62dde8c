"""Pull progress: rich bars on a terminal, one line per layer otherwise, nothing when quiet.

rich is imported only when bars are drawn. Methods may be called from download threads.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO


def short_digest(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def human_size(size: int | float) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


class PullProgress:
    def __init__(
        self, *, quiet: bool = False, stream: TextIO | None = None, bars: bool | None = None
    ) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        if bars is None:
            bars = not quiet and _isatty(self.stream)
        self.bars = bars and not quiet
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._done: dict[str, int] = {}
        self._sizes: dict[str, int | None] = {}

    def _rich(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("Copying blob {task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._progress.start()
        return self._progress

    def message(self, text: str) -> None:
        """A line of its own (`Writing manifest to image destination`)."""
        if self.quiet:
            return
        with self._lock:
            self._emit(text)

    def layer_started(self, digest: str, size: int | None) -> None:
        if self.quiet:
            return
        with self._lock:
            self._done[digest] = 0
            self._sizes[digest] = size
            if self.bars:
                self._tasks[digest] = self._rich().add_task(short_digest(digest), total=size)

    def advance(self, digest: str, nbytes: int) -> None:
        if self.quiet:
            return
        with self._lock:
            self._done[digest] = self._done.get(digest, 0) + nbytes
            task = self._tasks.get(digest)
            if task is not None:
                self._progress.update(task, advance=nbytes)

    def retry(self, digest: str | None, attempt: int, attempts: int, reason: str) -> None:
        """A request is about to be tried again: on the blob's line (a bar's label, or a
        line of its own), or as a message when no blob is concerned (a manifest)."""
        if self.quiet:
            return
        label = f"retrying ({attempt}/{attempts}): {reason}"
        with self._lock:
            task = self._tasks.get(digest) if digest else None
            if task is not None:
                self._progress.update(task, description=f"{short_digest(digest or '')} {label}")
            elif digest:
                self._emit(f"Copying blob {short_digest(digest)} {label}")
            else:
                self._emit(label[0].upper() + label[1:])

    def layer_done(self, digest: str, *, skipped: bool = False) -> None:
        """`skipped`: the blob was already in the store."""
        if self.quiet:
            return
        with self._lock:
            task = self._tasks.get(digest)
            if task is not None:
                total = self._sizes.get(digest)
                self._progress.update(
                    task, completed=total if total is not None else self._done.get(digest, 0),
                    description=short_digest(digest),
                )
                return
            if skipped:
                line = f"Copying blob {short_digest(digest)} skipped: already exists"
            else:
                line = f"Copying blob {short_digest(digest)} done {human_size(self._done.get(digest, 0))}"
            self._emit(line)

    def _emit(self, line: str) -> None:
        if self._progress is not None:
            self._progress.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def finish(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
