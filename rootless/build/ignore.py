"""`.containerignore` / `.dockerignore`: which context paths COPY and ADD never see.

The rules are Docker's (its ignore-file reader and pattern matcher):

- one pattern a line; `#` lines are comments; blanks are trimmed; a leading `!` makes an
  exception; each pattern is cleaned like Go's filepath.Clean and a leading `/` dropped;
- Go's filepath.Match syntax: `*` any run of non-separators, `?` one non-separator,
  `[a-z]` / `[^a-z]` classes, `\\` escapes; plus `**`, any number of directories (even none);
- a pattern that matches a directory excludes everything below it (`foo` excludes
  `foo/bar`), but `*.go` alone matches only at the top;
- the last matching pattern wins, so `!keep.md` after `*.md` brings one file back.

The context directory's own `.containerignore` is read first, `.dockerignore` otherwise.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

from rootless.build.errors import BuildError

IGNORE_FILES = (".containerignore", ".dockerignore")


@dataclass(frozen=True)
class Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def compile_pattern(text: str) -> re.Pattern[str]:
    """Go filepath.Match + Docker's `**`, as one anchored regular expression."""
    out = ["^"]
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "*":
            if i + 1 < n and text[i + 1] == "*":
                i += 2
                if i < n and text[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
                continue
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = text.find("]", i + 2 if i + 1 < n and text[i + 1] in "^!" else i + 1)
            if end < 0:
                raise BuildError(f"syntax error in ignore pattern {text!r}: unclosed '['")
            body = text[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(text[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out), re.DOTALL)


def parse_ignore(text: str) -> list[Pattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            continue
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/") or "/"
        if line == ".":
            continue  # "." would exclude the whole context; Docker ignores it too
        patterns.append(Pattern(line, exclusion, compile_pattern(line)))
    return patterns


def read_ignore_file(context: str) -> list[Pattern]:
    for name in IGNORE_FILES:
        path = os.path.join(context, name)
        try:
            with open(path, encoding="utf-8") as f:
                return parse_ignore(f.read())
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BuildError(f"reading {path}: {exc.strerror}") from None
    return []


class Matcher:
    """Decides for context-relative paths ('a/b', no leading slash) whether COPY sees them."""

    def __init__(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns
        self.has_exceptions = any(p.exclusion for p in patterns)

    def excluded(self, path: str) -> bool:
        path = posixpath.normpath(path).lstrip("/")
        if path in ("", "."):
            return False
        parts = path.split("/")
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:
                continue  # an exception only matters once excluded, and vice versa
            hit = bool(p.regex.match(path))
            # a pattern naming a parent directory excludes what is below it
            for i in range(1, len(parts)):
                if hit:
                    break
                hit = bool(p.regex.match("/".join(parts[:i])))
            if hit:
                matched = not p.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could bring back something below an excluded directory
        (else the walk skips it whole, as Docker does)."""
        if not self.has_exceptions:
            return False
        prefix = posixpath.normpath(directory).lstrip("/") + "/"
        for p in self.patterns:
            if not p.exclusion:
                continue
            if p.text.startswith(prefix) or "*" in p.text or "?" in p.text or "[" in p.text:
                return True
        return False
