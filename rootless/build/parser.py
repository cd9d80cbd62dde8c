"""A Containerfile's text → instructions, following the Dockerfile reference:

- parser directives (`# escape=`` ` ``, `# syntax=…`) only in the leading comment lines; an
  unknown one ends them, as any other comment does; `syntax` is ignored with a notice (rl has
  one frontend of its own);
- a line ending in the escape character continues on the next; comment and empty lines
  inside a continuation are dropped;
- comments are whole lines whose first non-blank character is `#`;
- heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`) for RUN, COPY and ADD: the lines after the
  instruction up to the terminator, several per instruction;
- JSON (exec) form for RUN, CMD, ENTRYPOINT, SHELL, COPY, ADD and VOLUME when the arguments
  are a JSON array of strings, shell form otherwise;
- `--flag[=value]` words before the arguments of FROM, RUN, COPY, ADD and HEALTHCHECK.

Nothing is substituted here (that needs the ARG and ENV in scope: rootless.build.args).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from rootless.build.errors import BuildError

INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})
JSON_FORMS = frozenset({"RUN", "CMD", "ENTRYPOINT", "SHELL", "COPY", "ADD", "VOLUME"})
HEREDOC_FORMS = frozenset({"RUN", "COPY", "ADD"})
FLAGGED = frozenset({"FROM", "RUN", "COPY", "ADD", "HEALTHCHECK"})
ALLOWED_FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "link", "checksum", "keep-git-dir"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
REPEATABLE_FLAGS = frozenset({"mount", "exclude"})

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")
# <<EOF, <<-EOF, <<"EOF", <<'EOF' (not <<<): buildkit's heredoc markers.
_HEREDOC = re.compile(r"(?<![<\w])<<(-?)\s*([\"']?)([A-Za-z0-9_][A-Za-z0-9_.\-]*)\2")


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # unquoted delimiter: variables in the content are substituted
    strip_tabs: bool


@dataclass
class Instruction:
    cmd: str  # upper case
    args: str  # the text after the keyword and its flags
    line: int
    file: str
    original: str  # as written (continuations joined), for STEP lines and history
    flags: dict[str, list[str | None]] = field(default_factory=dict)
    json: list[str] | None = None  # exec form
    heredocs: list[Heredoc] = field(default_factory=list)
    onbuild: Instruction | None = None

    def flag(self, name: str) -> str | None:
        """The last value of --name (None when absent; "" for a bare --name)."""
        values = self.flags.get(name)
        if not values:
            return None
        value = values[-1]
        return "" if value is None else value

    def has_flag(self, name: str) -> bool:
        return name in self.flags

    def error(self, reason: str, hint: str | None = None) -> BuildError:
        return BuildError(reason, self.file, self.line, hint)


@dataclass
class Containerfile:
    instructions: list[Instruction]
    escape: str = "\\"
    notices: list[str] = field(default_factory=list)


def parse(text: str, file: str = "Containerfile") -> Containerfile:
    """Parse a Containerfile; BuildError with the file and line for anything malformed."""
    lines = text.splitlines()
    escape, notices, i = _directives(lines, file)
    out: list[Instruction] = []
    n = len(lines)
    while i < n:
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i + 1
        parts: list[str] = []
        while True:
            content, continued = _continuation(lines[i], escape)
            parts.append(content)
            i += 1
            if not continued:
                break
            while i < n and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= n:
                break
        logical = "".join(parts).strip()
        if not logical:
            continue
        ins = parse_instruction(logical, file, start, escape)
        if ins.cmd in HEREDOC_FORMS and ins.json is None:
            i = _read_heredocs(ins, lines, i)
        out.append(ins)
    if not any(ins.cmd == "FROM" for ins in out):
        raise BuildError("no FROM instruction: a Containerfile must start a stage with FROM",
                         file)
    for ins in out:
        if ins.cmd == "FROM":
            break
        if ins.cmd != "ARG":
            raise ins.error(f"{ins.cmd} before the first FROM: only ARG may come before FROM")
    return Containerfile(out, escape, notices)


def _directives(lines: list[str], file: str) -> tuple[str, list[str], int]:
    escape = "\\"
    seen: set[str] = set()
    notices: list[str] = []
    i = 0
    for i, line in enumerate(lines):  # noqa: B007 - i is the first line after them
        m = _DIRECTIVE.fullmatch(line.strip())
        if not m:
            return escape, notices, i
        key, value = m.group(1).lower(), m.group(2)
        if key not in ("escape", "syntax", "check"):
            return escape, notices, i  # an ordinary comment: directives end here
        if key in seen:
            raise BuildError(f"only one {key} parser directive can be used", file, i + 1)
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise BuildError(f"invalid escape token {value!r}: it must be ` or \\", file,
                                 i + 1)
            escape = value
        elif key == "syntax":
            notices.append(f"{file}:{i + 1}: ignoring '# syntax={value}': rl builds with its "
                           "own Containerfile frontend")
    return escape, notices, len(lines)


def _continuation(line: str, escape: str) -> tuple[str, bool]:
    """(the line without a trailing escape, whether it continues)."""
    trimmed = line.rstrip()
    if trimmed.endswith(escape):
        return trimmed[:-1], True
    return line, False


def parse_instruction(logical: str, file: str, line: int, escape: str = "\\") -> Instruction:
    keyword, _, rest = logical.partition(" ") if " " in logical else _split_tab(logical)
    cmd = keyword.upper()
    rest = rest.strip()
    if cmd not in INSTRUCTIONS:
        raise BuildError(f"unknown instruction: {keyword}", file, line,
                         "check the spelling; instructions are listed in the Dockerfile reference")
    ins = Instruction(cmd=cmd, args=rest, line=line, file=file, original=logical)
    if cmd in FLAGGED:
        ins.flags, ins.args = _flags(rest, cmd, file, line)
    if cmd == "ONBUILD":
        _parse_onbuild(ins, escape)
        return ins
    if cmd in JSON_FORMS and ins.args.startswith("["):
        ins.json = _json_list(ins.args)
    if cmd == "SHELL" and ins.json is None:
        raise ins.error('SHELL requires the arguments to be in JSON form: SHELL ["executable", '
                        '"parameters"]')
    if cmd == "SHELL" and not ins.json:
        raise ins.error("SHELL requires at least one argument")
    if not ins.args and cmd not in ("RUN", "CMD", "ENTRYPOINT"):
        raise ins.error(f"{cmd} requires at least one argument")
    return ins


def _split_tab(logical: str) -> tuple[str, str, str]:
    parts = logical.split(None, 1)
    return parts[0], " ", parts[1] if len(parts) > 1 else ""


def _flags(rest: str, cmd: str, file: str, line: int) -> tuple[dict[str, list[str | None]], str]:
    flags: dict[str, list[str | None]] = {}
    while rest.startswith("--"):
        word, _, remainder = rest.partition(" ")
        if "\t" in word:
            word, _, tail = word.partition("\t")
            remainder = tail + " " + remainder
        body = word[2:]
        if not body:  # `--` alone ends the flags
            rest = remainder.strip()
            break
        name, eq, value = body.partition("=")
        if name not in ALLOWED_FLAGS.get(cmd, set()):
            raise BuildError(f"unknown flag for {cmd}: --{name}", file, line)
        if name in flags and name not in REPEATABLE_FLAGS:
            flags[name] = []
        flags.setdefault(name, []).append(value if eq else None)
        rest = remainder.strip()
    return flags, rest


def _json_list(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None  # not JSON: the shell form, as Docker treats it
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _parse_onbuild(ins: Instruction, escape: str) -> None:
    if not ins.args:
        raise ins.error("ONBUILD requires an instruction")
    inner = parse_instruction(ins.args, ins.file, ins.line, escape)
    if inner.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
        raise ins.error(f"{inner.cmd} isn't allowed as an ONBUILD trigger")
    ins.onbuild = inner


def _read_heredocs(ins: Instruction, lines: list[str], i: int) -> int:
    """Read the bodies of the heredocs ins names from lines[i:]; returns the next index."""
    for m in _HEREDOC.finditer(ins.args):
        strip_tabs, quote, name = m.group(1) == "-", m.group(2), m.group(3)
        body: list[str] = []
        while True:
            if i >= len(lines):
                raise ins.error(f"heredoc <<{name} has no terminating line {name!r}")
            text = lines[i]
            i += 1
            if strip_tabs:
                text = text.lstrip("\t")
            if text == name:
                break
            body.append(text)
        content = "".join(f"{b}\n" for b in body)
        ins.heredocs.append(Heredoc(name, content, expand=not quote, strip_tabs=strip_tabs))
    return i
