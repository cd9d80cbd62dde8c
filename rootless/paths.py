"""Where rl keeps things, following the XDG base directory spec.

    data:    $XDG_DATA_HOME/rootless      blobs, layers, images, containers (survives reboots)
    runtime: $XDG_RUNTIME_DIR/rootless    state.json, locks, sockets (gone at logout)
    config:  $XDG_CONFIG_HOME/rootless    config.toml, profiles/, auth.json

The values are computed once by `Paths.from_env()` and passed around; nothing reads the
environment at import time.

Two views of the same places: the pathlib properties (`paths.data / "x"`) that most code uses,
and plain strings (`paths.data_dir`, `paths.containers_dir`, ...) for the start-up path of
`rl run`, which must not pay for importing pathlib (with `re` and `urllib.parse` it pulls in,
~8 ms on these machines).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


class Paths:
    """The three XDG roots rl uses, and the well-known places below them."""

    __slots__ = ("_data", "_runtime", "_config")

    def __init__(self, data: str | os.PathLike[str], runtime: str | os.PathLike[str],
                 config: str | os.PathLike[str]) -> None:
        self._data = os.fspath(data)
        self._runtime = os.fspath(runtime)
        self._config = os.fspath(config)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, uid: int | None = None) -> Paths:
        # platformdirs reads the same XDG variables; reading them directly here keeps the
        # start-up path free of its import (about 25 ms on these machines).
        env = dict(os.environ) if env is None else env
        uid = os.getuid() if uid is None else uid
        home = env.get("HOME") or os.path.expanduser("~")
        data = os.path.join(env.get("XDG_DATA_HOME") or os.path.join(home, ".local", "share"), "rootless")
        config = os.path.join(env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "rootless")
        runtime_root = env.get("XDG_RUNTIME_DIR")
        if not runtime_root:
            # Without a user manager there is no /run/user/UID; podman falls back to /tmp too.
            runtime_root = f"/tmp/rl-runtime-{uid}"
        storage = env.get("RL_STORAGE")
        paths = cls(storage or data, os.path.join(runtime_root, "rootless"), config)
        if not storage and os.path.exists(paths.config_file_path):
            # config.toml may move the store ([storage] path); read only when the file exists.
            from rootless.config import configured_paths

            paths = configured_paths(paths, env)
        return paths

    # plain strings, for the start-up path ------------------------------------------------
    @property
    def data_dir(self) -> str:
        return self._data

    @property
    def runtime_dir(self) -> str:
        return self._runtime

    @property
    def config_dir(self) -> str:
        return self._config

    @property
    def containers_dir(self) -> str:
        return os.path.join(self._data, "containers")

    @property
    def layers_dir(self) -> str:
        return os.path.join(self._data, "layers")

    @property
    def config_file_path(self) -> str:
        return os.path.join(self._config, "config.toml")

    # pathlib ---------------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return _path(self._data)

    @property
    def runtime(self) -> Path:
        return _path(self._runtime)

    @property
    def config(self) -> Path:
        return _path(self._config)

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

    @property
    def config_file(self) -> Path:
        return self.config / "config.toml"

    @property
    def profiles(self) -> Path:
        return self.config / "profiles"

    @property
    def auth_file(self) -> Path:
        return self.config / "auth.json"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and (self._data, self._runtime, self._config) == (
            other._data, other._runtime, other._config)

    def __repr__(self) -> str:
        return f"Paths(data={self._data}, runtime={self._runtime}, config={self._config})"
