"""Reading one TOML file into a dict, with errors that name the file and the line.

tomllib reports the line of a syntax error; for a key whose value is wrong the line is found
here by looking for the key in its table, so every message can say where to look.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

from rootless.errors import ConfigError, describe_oserror


class TomlCache:
    """Parsed files kept as JSON in the runtime directory, keyed by (inode, size, mtime).

    Importing tomllib costs about 10 ms, a sixth of `rl run`'s start-up budget; a CI runner
    passes the same --profile hundreds of times a day, so the parse is kept until the file
    changes. JSON cannot hold TOML datetimes: such files are simply not cached.
    A cache rl cannot use costs only a parse, so its problems are warnings, never errors.
    """

    __slots__ = ("path", "entries", "dirty")

    def __init__(self, path: Path) -> None:
        import json

        self.path = path
        self.dirty = False
        self.entries: dict[str, Any] = {}
        try:
            data = json.loads(path.read_bytes())
            self.entries = data if isinstance(data, dict) else {}
        except FileNotFoundError:
            pass  # ENOENT: the first run since boot (the runtime directory is a tmpfs)
        except ValueError:
            pass  # not JSON (cut short by a full disk, or an older format): rewritten on save
        except OSError as exc:
            _warn(describe_oserror(f"ignoring the parse cache {path}", exc))

    @staticmethod
    def key(path: Path) -> list[int] | None:
        """The file's identity, or None when it is not there (ENOENT, ENOTDIR: reading it
        next says so). Other errnos are raised for the caller to report."""
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return [st.st_ino, st.st_size, st.st_mtime_ns]

    def get(self, path: Path) -> tuple[dict[str, Any], str] | None:
        entry = self.entries.get(str(path))
        if entry and entry[0] == self.key(path):
            return entry[1], entry[2]
        return None

    def put(self, path: Path, key: list[int] | None, data: dict[str, Any], text: str) -> None:
        import json

        if key is None:
            return
        try:
            json.dumps(data)
        except (TypeError, ValueError):
            return  # a TOML datetime has no JSON form: this file is parsed every time
        self.entries[str(path)] = [key, data, text]
        self.dirty = True

    def save(self) -> None:
        import json
        import os

        if not self.dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            # ENOSPC, EDQUOT (the runtime directory is full) and EROFS only cost the next run
            # a parse; anything else means the runtime directory is not what rl expects.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                _warn(describe_oserror(f"cannot write the parse cache {self.path}", exc))


def _warn(text: str) -> None:
    import sys

    sys.stderr.write(f"rl: warning: {text}\n")


def read_toml(path: Path, cache: TomlCache | None = None) -> tuple[dict[str, Any], str]:
    """(data, text) of `path`; ConfigError for an unreadable file or invalid TOML."""
    try:
        if cache is not None:
            hit = cache.get(path)
            if hit is not None:
                return hit
        key = TomlCache.key(path)  # before reading: a change while reading misses next time
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
