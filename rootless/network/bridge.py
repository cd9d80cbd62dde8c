"""Container-to-container networks (`rl network create NAME`, `rl run --network NAME`)."""

from __future__ import annotations

from typing import Any

from rootless.errors import UsageError


def plan(mode: str, spec: Any, ports: list[Any], runtime_dir: str) -> Any:
    raise UsageError(f"network {mode!r} not found",
                     hint="use none, host, pasta[:OPTS], slirp4netns[:OPTS] or create it with 'rl network create'")
