"""Where rl keeps things, following the XDG base directory spec.

    data:    $XDG_DATA_HOME/rootless      blobs, layers, images, containers (survives reboots)
    runtime: $XDG_RUNTIME_DIR/rootless    state.json, locks, sockets (gone at logout)
    config:  $XDG_CONFIG_HOME/rootless    config.toml, profiles/, auth.json

The values are computed once by `Paths.from_env()` and passed around; nothing reads the
environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path


class Paths:
    """The three XDG roots rl uses, and the well-known places below them."""

    __slots__ = ("data", "runtime", "config")

    def __init__(self, data: Path, runtime: Path, config: Path) -> None:
        self.data = data
        self.runtime = runtime
        self.config = config

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, uid: int | None = None) -> Paths:
        # platformdirs reads the same XDG variables; reading them directly here keeps the
        # start-up path free of its import (about 25 ms on these machines).
        env = dict(os.environ) if env is None else env
        uid = os.getuid() if uid is None else uid
        home = Path(env.get("HOME") or os.path.expanduser("~"))
        data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "rootless"
        config = Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "rootless"
        runtime_root = env.get("XDG_RUNTIME_DIR")
        if not runtime_root:
            # Without a user manager there is no /run/user/UID; podman falls back to /tmp too.
            runtime_root = f"/tmp/rl-runtime-{uid}"
        storage = env.get("RL_STORAGE")
        paths = cls(Path(storage) if storage else data, Path(runtime_root) / "rootless", config)
        if not storage and paths.config_file.exists():
            # config.toml may move the store ([storage] path); read only when the file exists.
            from rootless.config import configured_paths

            paths = configured_paths(paths, env)
        return paths

    # data ----------------------------------------------------------------------------------
    @property
    def blobs(self) -> Path:
        return self.data / "blobs" / "sha256"

    @property
    def layers(self) -> Path:
        return self.data / "layers"

    @property
    def images(self) -> Path:
        return self.data / "images"

    @property
    def containers(self) -> Path:
        return self.data / "containers"

    @property
    def tmp(self) -> Path:
        """Scratch space on the same filesystem as the store, so renames are atomic."""
        return self.data / "tmp"

    # config --------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def profiles(self) -> Path:
        return self.config / "profiles"

    @property
    def auth_file(self) -> Path:
        return self.config / "auth.json"

    def __repr__(self) -> str:
        return f"Paths(data={self.data}, runtime={self.runtime}, config={self.config})"
