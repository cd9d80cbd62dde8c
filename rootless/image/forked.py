"""Tasks run in forked processes, their failures sent home as data (an error message on a pipe).

Used inside the unpacking child (which is single-threaded when it forks: see pull.py) to
extract several layers at once, and by the store as real root, where no user namespace is
needed but the puller still wants the extraction to run beside its downloads.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from rootless.errors import ImageError


class ForkedTask:
    """A task running in a child process; wait() raises its failure as ImageError."""

    def __init__(self, task: Callable[[], object], name: str = "rl:[worker]") -> None:
        from rootless.primitives.channel import error_message

        r, w = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                from rootless.kernel import libc

                lib = libc()
                lib.set_pdeathsig(signal.SIGKILL)  # never outlive the process waiting for us
                lib.set_name(name)
                task()
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                os.write(w, json.dumps(error_message(name, exc)).encode()[:60000])
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        os.close(w)
        self.pid = pid
        self._read = r

    def error(self, status: int) -> dict[str, Any] | None:
        """The task's failure once the process ended with `status`, or None."""
        with os.fdopen(self._read, "rb") as f:
            data = f.read()
        if os.waitstatus_to_exitcode(status) == 0:
            return None
        return json.loads(data) if data else {
            "message": f"a layer extractor exited with status {os.waitstatus_to_exitcode(status)}"}

    def wait(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        failure = self.error(status)
        if failure is not None:
            raise ImageError(failure.get("message") or "unpacking a layer failed",
                             failure.get("hint"))


def run_parallel(tasks: list[Callable[[], object]], workers: int) -> None:
    """Run tasks in up to `workers` forked processes, in order; raise the first failure as
    ImageError (no new task starts after one failed). Call from a single-threaded point."""
    pending = list(tasks)
    running: dict[int, ForkedTask] = {}
    errors: list[dict[str, Any]] = []
    while pending or running:
        while pending and len(running) < workers and not errors:
            started = ForkedTask(pending.pop(0))
            running[started.pid] = started
        if not running:
            break
        pid, status = os.wait()
        task = running.pop(pid, None)
        if task is None:
            continue
        failure = task.error(status)
        if failure is not None:
            errors.append(failure)
    if errors:
        first = errors[0]
        raise ImageError(first.get("message") or "unpacking a layer failed", first.get("hint"))
