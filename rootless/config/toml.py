"""Reading one TOML file into a dict, with errors that name the file and the line.

tomllib reports the line of a syntax error; for a key whose value is wrong the line is found
here by looking for the key in its table, so every message can say where to look.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rootless.errors import ConfigError


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    """(data, text) of `path`; ConfigError for an unreadable file or invalid TOML."""
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
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f", line {m.group(1)}" if m else ""
        what = msg[: m.start()].strip() if m else msg
        raise ConfigError(f"{path}{where}: invalid TOML: {what}",
                          hint="see https://toml.io for the syntax") from None


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
