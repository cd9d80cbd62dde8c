"""config.toml's [run] table and profile files as layers, and how layers merge.

Precedence, lowest first: built-in defaults < config.toml [run] < each --profile in order
(a profile's `extends` parents come just before it) < command-line flags.
Scalars: the later layer wins. Lists (env, volumes, publish, ...): each layer appends to
what came before; a layer with `clear = ["env", ...]` drops the inherited items of those keys
first, so its own list replaces theirs.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from rootless.config.schema import PROFILE_KEYS, RUN_KEYS, check_run_value, check_type, closest
from rootless.config.toml import TomlCache, read_toml, where
from rootless.errors import ConfigError, describe_oserror

PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Layer:
    """The validated `rl run` values of one file (or one table of it), with their places."""

    __slots__ = ("name", "path", "text", "table", "values", "clear", "extends", "description")

    def __init__(self, name: str, path: Path, text: str = "", table: str = "") -> None:
        self.name = name
        self.path = path
        self.text = text
        self.table = table
        self.values: dict[str, Any] = {}
        self.clear: list[str] = []
        self.extends: list[str] = []
        self.description = ""

    def place(self, key: str) -> str:
        """'FILE, line N' of `key`. Found on demand: `rl run` never needs it unless a value
        is wrong, and scanning the text for every key costs milliseconds."""
        return where(self.path, self.text, self.table, key)

    @property
    def places(self) -> dict[str, str]:
        return {key: self.place(key) for key in self.values}


class UnsetVariable(ValueError):
    """A ${NAME} in a value names a variable the environment does not have."""


def expand(value: Any, env: dict[str, str]) -> Any:
    """`${NAME}` from the environment in strings and list items (`${PWD}` is the current
    directory even where the shell did not export it); an unset name is UnsetVariable."""
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    if not isinstance(value, str) or "${" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "PWD":
            pwd = env.get("PWD")
            return pwd if pwd and _same_dir(pwd) else os.getcwd()
        if name not in env:
            raise UnsetVariable(f"${{{name}}} is not set in the environment")
        return env[name]

    return _VAR.sub(one, value)


def _same_dir(path: str) -> bool:
    """Whether $PWD still names the current directory. The shell's $PWD may be stale: removed
    since (ENOENT, ENOTDIR), behind a directory we may no longer search (EACCES), or not a
    path at all (ELOOP, ENAMETOOLONG); then the kernel's getcwd() answers instead."""
    try:
        return os.path.samefile(path, ".")
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.ELOOP,
                             errno.ENAMETOOLONG):
            raise ConfigError(describe_oserror(f"checking ${{PWD}} ({path})", exc)) from None
        return False


def build_layer(name: str, path: Path, data: dict[str, Any], text: str, table: str,
                env: dict[str, str], *, profile: bool) -> Layer:
    """Validate `data` (a profile file, or config.toml's [run] table) into a Layer."""
    layer = Layer(name, path, text, table)
    valid = sorted(RUN_KEYS) + (sorted(PROFILE_KEYS) if profile else [])
    for key, raw in data.items():
        label = f"{table}.{key}" if table else key
        if key not in valid:
            guess = closest(key, valid)
            hint = f"did you mean '{guess}'?" if guess else "'rl profile new NAME' lists every key"
            raise ConfigError(f"{layer.place(key)}: unknown key '{label}'", hint=hint)
        try:
            if key == "extends":
                value = [raw] if isinstance(raw, str) else check_type("list", raw)
                for parent in value:
                    if not PROFILE_NAME.fullmatch(parent):
                        raise ValueError(f"{parent!r} is not a profile name")
                layer.extends = value
            elif key == "description":
                layer.description = check_type("str", raw)
            elif key == "clear":
                value = check_type("list", raw)
                for item in value:
                    if RUN_KEYS.get(item) != "list":
                        lists = ", ".join(k for k in sorted(RUN_KEYS) if RUN_KEYS[k] == "list")
                        raise ValueError(f"{item!r} is not a list key ({lists})")
                layer.clear = value
            else:
                layer.values[key] = check_run_value(key, expand(raw, env))
        except ValueError as exc:
            hint = (f"export {str(exc)[2:].partition('}')[0]}, or write the value out"
                    if isinstance(exc, UnsetVariable) else _type_hint(key))
            raise ConfigError(f"{layer.place(key)}: invalid value for '{label}': {exc}",
                              hint=hint) from None
    return layer


def _type_hint(key: str) -> str:
    kind = RUN_KEYS.get(key)
    examples = {"bool": f"{key} = true", "int": f"{key} = 30", "str": f'{key} = "value"',
                "list": f'{key} = ["value"]'}
    if key == "extends":
        return 'extends = "base" (or a list of profile names)'
    return f"for example: {examples.get(kind or 'list')}"


def profile_file(profiles_dir: Path, name: str) -> Path:
    if not PROFILE_NAME.fullmatch(name):
        raise ConfigError(f"invalid profile name {name!r}",
                          hint="profile names are letters, digits, '_', '.' and '-'")
    return profiles_dir / f"{name}.toml"


def _unreadable(action: str, profiles_dir: Path, exc: OSError) -> ConfigError:
    return ConfigError(describe_oserror(action, exc),
                       hint=f"{profiles_dir} must be a directory you can read")


def available_profiles(profiles_dir: Path) -> list[str]:
    try:
        names = os.listdir(profiles_dir)
    except FileNotFoundError:
        return []  # ENOENT: no profile was ever written
    except OSError as exc:
        raise _unreadable(f"cannot list the profiles in {profiles_dir}", profiles_dir, exc) from None
    return sorted(n[:-5] for n in names if n.endswith(".toml") and PROFILE_NAME.fullmatch(n[:-5]))


def read_profile(profiles_dir: Path, name: str, env: dict[str, str],
                 wanted_by: str | None = None, cache: TomlCache | None = None) -> Layer:
    path = profile_file(profiles_dir, name)
    try:
        found = path.is_file()  # False for ENOENT and ENOTDIR; raises EACCES (Python < 3.13)
    except OSError as exc:
        raise _unreadable(f"cannot read {path}", profiles_dir, exc) from None
    if not found:
        have = available_profiles(profiles_dir)
        first = f"{wanted_by}: " if wanted_by else ""
        hint = (f"the profiles in {profiles_dir} are: {', '.join(have)}" if have
                else f"create it with 'rl profile new {name}'")
        guess = closest(name, have, 0.5 if len(name) <= 3 else 0.6) if have else None
        if guess:
            hint = f"did you mean '{guess}'? " + hint
        raise ConfigError(f"{first}profile '{name}' not found ({path} does not exist)", hint=hint)
    data, text = read_toml(path, cache)
    return build_layer(f"profile {name}", path, data, text, "", env, profile=True)


def profile_chain(profiles_dir: Path, names: list[str], env: dict[str, str],
                  cache: TomlCache | None = None) -> list[Layer]:
    """The layers of `names` in order, each preceded by its `extends` parents. A profile
    reached twice is applied once (where first reached), so lists are not doubled."""
    out: list[Layer] = []
    done: set[str] = set()

    def visit(name: str, stack: list[str], wanted_by: str | None) -> None:
        if name in stack:
            cycle = " -> ".join(stack[stack.index(name):] + [name])
            raise ConfigError(f"profile '{name}' extends itself: {cycle}",
                              hint="remove one 'extends' from the cycle")
        if name in done:
            return
        layer = read_profile(profiles_dir, name, env, wanted_by, cache)
        for parent in layer.extends:
            text = read_toml(layer.path, cache)[1]
            visit(parent, stack + [name], where(layer.path, text, "", "extends"))
        done.add(name)
        out.append(layer)

    for name in names:
        visit(name, [], None)
    return out


def merge(layers: list[Layer], with_places: bool = True,
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values, places): scalars from the last layer that sets them; lists appended across
    layers after each layer's `clear`. places[key] is one place for a scalar, and one place
    per item for a list (left empty without `with_places`)."""
    values: dict[str, Any] = {}
    places: dict[str, Any] = {}
    for layer in layers:
        for key in layer.clear:
            values.pop(key, None)
            places.pop(key, None)
        for key, value in layer.values.items():
            place = layer.place(key) if with_places else ""
            if RUN_KEYS[key] == "list" and key != "command":
                values[key] = values.get(key, []) + value
                places[key] = places.get(key, []) + [place] * len(value)
            else:
                # `command` is the argv, not a list of items: a later one replaces it.
                values[key] = value
                places[key] = place
    return values, places
