"""Reading one TOML file into a dict, with errors that name the file and the line.

tomllib reports the line of a syntax error; for a key whose value is wrong the line is found
here by looking for the key in its table, so every message can say where to look.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rootless.errors import ConfigError


class TomlCache:
    """Parsed files kept as JSON in the runtime directory, keyed by (inode, size, mtime).

    Importing tomllib costs about 10 ms, a sixth of `rl run`'s start-up budget; a CI runner
    passes the same --profile hundreds of times a day, so the parse is kept until the file
    changes. JSON cannot hold TOML datetimes: such files are simply not cached.
    """

    __slots__ = ("path", "entries", "dirty")

    def __init__(self, path: Path) -> None:
        import json

        self.path = path
        self.dirty = False
        try:
            self.entries: dict[str, Any] = json.loads(path.read_bytes())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(path: Path) -> list[int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def get(self, path: Path) -> tuple[dict[str, Any], str] | None:
        entry = self.entries.get(str(path))
        if entry and entry[0] == self.key(path):
            return entry[1], entry[2]
        return None

    def put(self, path: Path, key: list[int] | None, data: dict[str, Any], text: str) -> None:
        if key is not None:
            self.entries[str(path)] = [key, data, text]
            self.dirty = True

    def save(self) -> None:
        import json
        import os

        if not self.dirty:
            return
        try:
            blob = json.dumps(self.entries)
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(blob)
            os.replace(tmp, self.path)
        except (OSError, TypeError, ValueError):
            pass  # a cache that cannot be written only costs the next run a parse


def read_toml(path: Path, cache: TomlCache | None = None) -> tuple[dict[str, Any], str]:
    """(data, text) of `path`; ConfigError for an unreadable file or invalid TOML."""
    if cache is not None:
        hit = cache.get(path)
        if hit is not None:
            return hit
    key = TomlCache.key(path)  # before reading: a change while reading misses next time
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text", hint="TOML files must be UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}",
                          hint=f"check that {path} exists and is readable") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f", line {m.group(1)}" if m else ""
        what = msg[: m.start()].strip() if m else msg
        raise ConfigError(f"{path}{where}: invalid TOML: {what}",
                          hint="see https://toml.io for the syntax") from None
    if cache is not None:
        cache.put(path, key, data, text)
    return data, text


def key_line(text: str, table: str, key: str) -> int | None:
    """The line (1-based) where `key` is set in `[table]` ("" for the top level)."""
    current = ""
    pattern = re.compile(r'\s*(?:"%s"|\'%s\'|%s)\s*=' % ((re.escape(key),) * 3))
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[\s*([^\]\[]+?)\s*\]\s*(?:#.*)?$", line)
        if header:
            current = header.group(1).strip().strip('"')
            continue
        if current == table and pattern.match(line):
            return number
    return None


def where(path: Path, text: str, table: str, key: str) -> str:
    """'FILE, line N' (or just FILE) for messages and `rl profile show`."""
    line = key_line(text, table, key)
    return f"{path}, line {line}" if line else str(path)
