"""The image config as a build changes it, and its history, in the shape Docker writes them
(image-spec/config.md; Docker's `#(nop)` history lines for instructions without a layer).

A config here is the whole JSON document: {"architecture", "os", "config": {...},
"rootfs": {"type": "layers", "diff_ids": [...]}, "history": [...], "created"}.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from rootless.build.args import host_platform

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHELL = ["/bin/sh", "-c"]


def rfc3339(epoch: float) -> str:
    """Docker's timestamp format: UTC with nanoseconds, 'Z'."""
    seconds = int(epoch)
    nanos = int(round((epoch - seconds) * 1e9))
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{nanos:09d}Z" if nanos else f"{base}Z"


def scratch_config(platform: str | None = None) -> dict[str, Any]:
    """FROM scratch: no layers; PATH set, as buildah sets it for every image without one."""
    os_, arch, variant = host_platform()
    if platform:
        parts = platform.split("/")
        os_, arch = parts[0], parts[1] if len(parts) > 1 else arch
        variant = parts[2] if len(parts) > 2 else ""
    cfg: dict[str, Any] = {"architecture": arch, "os": os_,
                           "config": {"Env": [DEFAULT_PATH]},
                           "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    if variant:
        cfg["variant"] = variant
    return cfg


def from_base(base: dict[str, Any]) -> dict[str, Any]:
    """A new image's starting config: the base's, with its ONBUILD triggers consumed."""
    cfg = copy.deepcopy(base)
    inner = cfg.setdefault("config", {}) or {}
    cfg["config"] = inner
    inner.pop("OnBuild", None)
    env = inner.get("Env") or []
    if not any(e.startswith("PATH=") for e in env):
        inner["Env"] = [DEFAULT_PATH, *env]
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    cfg.setdefault("history", [])
    for key in ("container", "container_config", "docker_version", "id", "parent"):
        cfg.pop(key, None)
    return cfg


def inner(cfg: dict[str, Any]) -> dict[str, Any]:
    out = cfg.setdefault("config", {})
    if out is None:
        out = cfg["config"] = {}
    return out


def env_list(cfg: dict[str, Any]) -> list[str]:
    return list(inner(cfg).get("Env") or [])


def set_env(cfg: dict[str, Any], name: str, value: str) -> None:
    env = [e for e in env_list(cfg)]
    item = f"{name}={value}"
    for i, e in enumerate(env):
        if e.split("=", 1)[0] == name:
            env[i] = item
            break
    else:
        env.append(item)
    inner(cfg)["Env"] = env


def add_history(cfg: dict[str, Any], created: str, created_by: str, empty: bool,
                comment: str | None = None) -> None:
    entry: dict[str, Any] = {"created": created, "created_by": created_by}
    if comment:
        entry["comment"] = comment
    if empty:
        entry["empty_layer"] = True
    cfg.setdefault("history", []).append(entry)
    cfg["created"] = created


def add_layer(cfg: dict[str, Any], diff_id: str) -> None:
    cfg.setdefault("rootfs", {"type": "layers", "diff_ids": []}).setdefault("diff_ids", []).append(
        diff_id)


def nop(text: str) -> str:
    """The created_by of an instruction without a layer, as buildah writes it."""
    return f"/bin/sh -c #(nop) {text}"


def manifest_for(config_digest: str, config_size: int, layers: list[dict[str, Any]],
                 annotations: dict[str, str] | None = None) -> dict[str, Any]:
    from rootless.image import mediatypes as mt

    manifest: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    if annotations:
        manifest["annotations"] = annotations
    return manifest
