"""Docker's word rules for Containerfile arguments (the Dockerfile reference, "Environment
replacement"): quotes, the escape character and variable substitution.

    $VAR ${VAR}            the value, or "" when unset
    ${VAR:-word} ${VAR-word}   word when VAR is unset or empty (`:-`) / unset (`-`)
    ${VAR:+word} ${VAR+word}   word when VAR is set and not empty (`:+`) / set (`+`)
    ${VAR:?msg}  ${VAR?msg}    an error naming msg when VAR is unset or empty / unset
    'single'               literal, no substitution
    "double"               substitution; the escape character protects `"`, `$` and itself
    \\x (escape char)       x literally (outside quotes)

Substitution is not the shell's: no command substitution, no arithmetic, no globbing. RUN,
CMD and ENTRYPOINT are not substituted here at all (their shell does it).
"""

from __future__ import annotations

from collections.abc import Mapping

from rootless.build.errors import BuildError

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_MODIFIERS = (":-", ":+", ":?", "-", "+", "?")


class _Scanner:
    __slots__ = ("text", "pos")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def done(self) -> bool:
        return self.pos >= len(self.text)


class _Words:
    """Collects words; `split` text breaks on whitespace, quoted text never does."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.current: list[str] = []
        self.in_word = False

    def add(self, text: str, split: bool) -> None:
        if not split:
            self.current.append(text)
            self.in_word = True
            return
        for ch in text:
            if ch.isspace():
                self.end()
            else:
                self.current.append(ch)
                self.in_word = True

    def mark(self) -> None:
        """An empty quoted string still makes a word ("" is one empty argument)."""
        self.in_word = True

    def end(self) -> None:
        if self.in_word:
            self.words.append("".join(self.current))
        self.current = []
        self.in_word = False


class Lexer:
    """Substitution with one escape character (`\\`, or `` ` `` by the escape directive)."""

    def __init__(self, escape: str = "\\") -> None:
        self.escape = escape

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """One word: quotes removed, variables substituted, nothing split."""
        words = _Words()
        self._process(_Scanner(word), env, words, split=False, stop="")
        return "".join(words.current)

    def process_words(self, text: str, env: Mapping[str, str]) -> list[str]:
        """Words split on unquoted whitespace (also inside substituted values), as EXPOSE and
        the shell-form lists take them."""
        words = _Words()
        self._process(_Scanner(text), env, words, split=True, stop="")
        words.end()
        return words.words

    def _process(self, s: _Scanner, env: Mapping[str, str], words: _Words, *, split: bool,
                 stop: str) -> None:
        while not s.done():
            ch = s.peek()
            if stop and ch == stop:
                return
            if ch == self.escape:
                s.next()
                if s.done():
                    words.add(ch, False)  # a trailing escape is itself
                else:
                    words.add(s.next(), False)
            elif ch == "'":
                s.next()
                words.mark()
                words.add(self._single_quoted(s), False)
            elif ch == '"':
                s.next()
                words.mark()
                self._double_quoted(s, env, words)
            elif ch == "$":
                s.next()
                words.add(self._dollar(s, env), split)
            else:
                s.next()
                words.add(ch, split)

    def _single_quoted(self, s: _Scanner) -> str:
        out: list[str] = []
        while not s.done():
            ch = s.next()
            if ch == "'":
                return "".join(out)
            out.append(ch)
        raise BuildError("unexpected end of statement while looking for matching single-quote")

    def _double_quoted(self, s: _Scanner, env: Mapping[str, str], words: _Words) -> None:
        while not s.done():
            ch = s.next()
            if ch == '"':
                return
            if ch == "$":
                words.add(self._dollar(s, env), False)
            elif ch == self.escape and s.peek() in ('"', "$", self.escape):
                words.add(s.next(), False)
            else:
                words.add(ch, False)
        raise BuildError("unexpected end of statement while looking for matching double-quote")

    def _dollar(self, s: _Scanner, env: Mapping[str, str]) -> str:
        if s.peek() == "{":
            s.next()
            return self._braced(s, env)
        name = self._name(s)
        if not name:
            return "$"  # `$` before anything that is not a name stays as it is
        return env.get(name, "")

    def _name(self, s: _Scanner) -> str:
        out = []
        while not s.done() and s.peek() in _NAME_CHARS:
            out.append(s.next())
        return "".join(out)

    def _braced(self, s: _Scanner, env: Mapping[str, str]) -> str:
        name = self._name(s)
        if not name:
            raise BuildError(f"bad substitution: ${{{s.peek()}... needs a variable name")
        if s.peek() == "}":
            s.next()
            return env.get(name, "")
        modifier = next((m for m in _MODIFIERS if s.text.startswith(m, s.pos)), None)
        if modifier is None:
            raise BuildError(f"unsupported modifier ({s.peek()!r}) in substitution of ${{{name}}}")
        s.pos += len(modifier)
        inner = _Words()
        self._process(s, env, inner, split=False, stop="}")
        if s.next() != "}":
            raise BuildError(f"missing '}}' in substitution of ${{{name}}}")
        word = "".join(inner.current)
        value = env.get(name)
        is_set = value is not None
        usable = is_set and (value != "" or not modifier.startswith(":"))
        if modifier.endswith("-"):
            return value if usable and value is not None else word
        if modifier.endswith("+"):
            return word if usable else ""
        if not usable:  # `?`
            raise BuildError(f"{name}: {word or 'is not allowed to be unset'}",
                             hint=f"give it a value: --build-arg {name}=VALUE")
        return value or ""


def split_unquoted(text: str, escape: str = "\\") -> list[str]:
    """Whitespace-separated words, quotes and escapes kept as written (for KEY=VALUE lists,
    which are substituted word by word afterwards)."""
    words: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == escape and quote == '"' and i + 1 < len(text):
                current.append(text[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch == escape and i + 1 < len(text):
            current.extend((ch, text[i + 1]))
            i += 1
        elif ch in ("'", '"'):
            quote = ch
            current.append(ch)
        elif ch.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(ch)
        i += 1
    if quote:
        raise BuildError(f"unterminated {quote} quote in {text!r}")
    if current:
        words.append("".join(current))
    return words
