"""Container state (placeholder until the lifecycle work lands): name reservation and the
running/exited records `rl ps` reads."""

from __future__ import annotations

from typing import Any


def reserve_name(paths: Any, name: str | None, cid: str) -> None:
    """Claim `name` for container cid atomically; UsageError 125 when it is in use."""


def record_running(prepared: Any, pid1: int, helper_pid: int) -> None:
    """Write the state of a container whose PID 1 has started."""


def record_exited(prepared: Any, exit_code: int | None) -> None:
    """Write the state of a container that ended (or remove it with --rm)."""
