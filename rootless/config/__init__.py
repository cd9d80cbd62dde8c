"""config.toml and profiles -> validated settings for `rl run`, and rl's per-user config.

    $XDG_CONFIG_HOME/rootless/config.toml          [run] defaults, [storage], [registries]
    $XDG_CONFIG_HOME/rootless/profiles/NAME.toml   any `rl run` setting; `extends = "other"`

`run_settings(paths, profiles)` is what `rl run` calls (only when a profile is asked for or
config.toml exists): a dict keyed by the `dest` names of rootless.runopts.OPTIONS, in the
shapes the flag parser produces. Every problem is a ConfigError (exit 125) naming the file,
the key and the line. Layer rules are in rootless.config.layers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rootless.errors import ConfigError

if TYPE_CHECKING:
    from rootless.config.layers import Layer
    from rootless.config.toml import TomlCache
    from rootless.paths import Paths

__all__ = ["Config", "ConfigError", "configured_paths", "load_config", "resolve", "run_settings",
           "storage_path"]


class Config:
    """rl's per-user configuration (config.toml), with its defaults when the file is absent."""

    __slots__ = ("path", "exists", "storage", "search_registries", "insecure_registries",
                 "mirrors", "credentials_file", "run", "text", "keys")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.exists = False
        self.storage: Path | None = None          # [storage] path; RL_STORAGE still wins
        # Short names (alpine) are looked up in these registries, in order.
        self.search_registries: list[str] = ["docker.io"]
        self.insecure_registries: list[str] = []  # HTTP or unverified TLS allowed
        self.mirrors: dict[str, list[str]] = {}   # registry -> mirrors tried first
        self.credentials_file: Path | None = None  # default: paths.auth_file
        self.run: Layer | None = None               # the [run] table
        self.text = ""
        self.keys: list[tuple[str, str]] = []      # (table, key) set in the file

    @property
    def places(self) -> dict[str, str]:
        """"registries.search" -> "FILE, line N" for what the file sets."""
        from rootless.config.toml import where

        return {f"{t}.{k}": where(self.path, self.text, t, k) for t, k in self.keys}

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "exists": self.exists,
            "storage": str(self.storage) if self.storage else None,
            "registries": {"search": self.search_registries,
                           "insecure": self.insecure_registries, "mirrors": self.mirrors,
                           "credentials_file": (str(self.credentials_file)
                                                if self.credentials_file else None)},
            "run": dict(self.run.values) if self.run else {},
        }


def load_config(paths: Paths, env: dict[str, str] | None = None,
                cache: TomlCache | None = None) -> Config:
    """Read and validate config.toml (defaults when it does not exist)."""
    from rootless.config.layers import build_layer, expand
    from rootless.config.schema import CONFIG_TABLES, check_type, closest
    from rootless.config.toml import read_toml, where

    env = dict(os.environ) if env is None else env
    config = Config(paths.config_file)
    if not paths.config_file.exists():
        return config
    path = paths.config_file
    data, text = read_toml(path, cache)
    config.exists = True
    config.text = text
    tables = sorted(CONFIG_TABLES) + ["run"]
    for table, body in data.items():
        if table not in tables:
            guess = closest(table, tables)
            raise ConfigError(f"{where(path, text, '', table)}: unknown table [{table}]",
                              hint=f"did you mean [{guess}]?" if guess
                              else f"config.toml has the tables {', '.join(tables)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where(path, text, '', table)}: '{table}' must be a table: "
                              f"write [{table}] on its own line",
                              hint=f"for example:\n[{table}]\n...")
        if table == "run":
            config.run = build_layer("config.toml [run]", path, body, text, "run", env,
                                     profile=False)
            continue
        keys = CONFIG_TABLES[table]
        for key, raw in body.items():
            if key not in keys:
                guess = closest(key, sorted(keys))
                raise ConfigError(f"{where(path, text, table, key)}: unknown key '{table}.{key}'",
                                  hint=f"did you mean '{guess}'?" if guess
                                  else f"[{table}] takes {', '.join(sorted(keys))}")
            try:
                value = expand(check_type(keys[key], raw), env)
                _set(config, table, key, value)
            except ValueError as exc:
                raise ConfigError(f"{where(path, text, table, key)}: invalid value for "
                                  f"'{table}.{key}': {exc}") from None
            config.keys.append((table, key))
    return config


def _set(config: Config, table: str, key: str, value: Any) -> None:
    if (table, key) == ("storage", "path") or (table, key) == ("registries", "credentials_file"):
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            raise ValueError(f"{value!r} is not an absolute path (~ is allowed)")
        if key == "path":
            config.storage = path
        else:
            config.credentials_file = path
    elif key == "search":
        config.search_registries = value
    elif key == "insecure":
        config.insecure_registries = value
    elif key == "mirrors":
        for registry, mirrors in value.items():
            if isinstance(mirrors, str):
                mirrors = [mirrors]
            if not isinstance(mirrors, list) or not all(isinstance(m, str) for m in mirrors):
                raise ValueError(f"mirrors of {registry!r} must be a list of registry hosts")
            config.mirrors[registry] = mirrors


def storage_path(paths: Paths, env: dict[str, str] | None = None) -> Path | None:
    """The storage directory config.toml asks for, unless RL_STORAGE overrides it."""
    from rootless.config.toml import TomlCache

    env = dict(os.environ) if env is None else env
    if env.get("RL_STORAGE") or not paths.config_file.exists():
        return None
    cache = TomlCache(paths.runtime / "toml-cache.json")
    storage = load_config(paths, env, cache).storage
    cache.save()
    return storage


def configured_paths(paths: Paths, env: dict[str, str] | None = None) -> Paths:
    """`paths` with the data directory moved to config.toml's [storage] path, if it sets one
    (RL_STORAGE still wins). Costs nothing when config.toml does not exist."""
    storage = storage_path(paths, env)
    if storage is None:
        return paths
    return type(paths)(storage, paths.runtime, paths.config)


def resolve(paths: Paths, profiles: list[str], env: dict[str, str] | None = None,
            config: Config | None = None, cache: TomlCache | None = None,
            with_places: bool = True) -> tuple[dict[str, Any], dict[str, Any], list[Layer]]:
    """(values, places, layers) for `rl run --profile P1 --profile P2 ...`."""
    from rootless.config.layers import merge, profile_chain

    env = dict(os.environ) if env is None else env
    config = load_config(paths, env, cache) if config is None else config
    layers = [config.run] if config.run else []
    layers += profile_chain(paths.profiles, profiles, env, cache)
    values, places = merge(layers, with_places)
    return values, places, layers


def run_settings(paths: Paths, profiles: list[str]) -> dict[str, Any]:
    """The settings dict `rl run` merges its flags onto (see rootless.main.load_settings).
    Parsed files are cached in the runtime directory (rootless.config.toml.TomlCache)."""
    from rootless.config.toml import TomlCache

    cache = TomlCache(paths.runtime / "toml-cache.json")
    values = resolve(paths, profiles, cache=cache, with_places=False)[0]
    cache.save()
    return values
