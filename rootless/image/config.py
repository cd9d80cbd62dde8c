"""An image's config, turned into the defaults of a run (podman's rules).

The OCI image config (image-spec/config.md) carries Entrypoint, Cmd, Env, WorkingDir, User,
ExposedPorts and StopSignal under "config". The command a container runs is:

    --entrypoint given      →  that entrypoint (shell-split as JSON array or a plain word)
                               + the CMD args from the command line only (the image's Cmd
                               is dropped, as podman and docker do)
    otherwise               →  image Entrypoint + (command-line args, or else image Cmd)

`--entrypoint ""` clears the entrypoint; the command line (or nothing) remains.
"""

from __future__ import annotations

import json

from rootless.errors import UsageError

# typing and dataclasses stay off `rl run IMAGE`'s start-up path (~12 ms together).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ImageRunConfig:
    __slots__ = ("entrypoint", "cmd", "env", "workdir", "user", "exposed_ports", "stop_signal",
                 "labels")

    def __init__(self, entrypoint: list[str] | None = None, cmd: list[str] | None = None,
                 env: list[str] | None = None, workdir: str = "/", user: str = "",
                 exposed_ports: list[str] | None = None, stop_signal: str | None = None,
                 labels: dict[str, str] | None = None) -> None:
        self.entrypoint = entrypoint or []
        self.cmd = cmd or []
        self.env = env or []
        self.workdir = workdir
        self.user = user
        self.exposed_ports = exposed_ports or []
        self.stop_signal = stop_signal
        self.labels = labels or {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageRunConfig) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        return "ImageRunConfig(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


def _str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def image_run_config(config: dict[str, Any]) -> ImageRunConfig:
    """The run defaults in an image config (the whole config JSON, or its "config" part)."""
    inner = config.get("config") if "rootfs" in config or "config" in config else config
    c: dict[str, Any] = inner if isinstance(inner, dict) else {}
    return ImageRunConfig(
        entrypoint=_str_list(c.get("Entrypoint")),
        cmd=_str_list(c.get("Cmd")),
        env=_str_list(c.get("Env")),
        workdir=c.get("WorkingDir") or "/",
        user=c.get("User") or "",
        exposed_ports=sorted((c.get("ExposedPorts") or {}).keys()),
        stop_signal=c.get("StopSignal") or None,
        labels={str(k): str(v) for k, v in (c.get("Labels") or {}).items()},
    )


def parse_entrypoint(text: str) -> list[str]:
    """podman's --entrypoint: a JSON array ('["/bin/sh","-c"]') or a single command word."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            raise UsageError(f"--entrypoint {text!r} is not a valid JSON array") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"--entrypoint {text!r} must be a JSON array of strings")
        return value
    return [text] if text else []


def resolve_command(
    image_cfg: ImageRunConfig, entrypoint_override: str | None, cmd_args: list[str]
) -> list[str]:
    """The argv a container runs (empty when neither the image nor the user gives one)."""
    if entrypoint_override is not None:
        return parse_entrypoint(entrypoint_override) + list(cmd_args)
    return image_cfg.entrypoint + (list(cmd_args) if cmd_args else image_cfg.cmd)


def merge_env(image_env: list[str], overrides: list[str]) -> list[str]:
    """Image Env, then the run's -e values replacing same-named ones, order kept."""
    out: dict[str, str] = {}
    for item in [*image_env, *overrides]:
        key = item.split("=", 1)[0]
        out[key] = item
    return list(out.values())
