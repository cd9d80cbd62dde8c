"""JSON through the C accelerator `_json` alone, for the start-up path.

`import json` costs ~5 ms on these machines: json.decoder and json.encoder import `re`, which
imports `enum` and compiles patterns. The C scanner and encoder that json uses underneath need
none of it. `loads` and `dumps` here give the same results as json's for the data rl writes
(objects, lists, strings, numbers, booleans, null); errors are ValueError (json's own
JSONDecodeError, which `_json` raises for malformed strings, is a ValueError too).
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """The attributes _json.make_scanner reads from a json.JSONDecoder."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict[str, str] = {}


_WHITESPACE = " \t\n\r"


def loads(text: str | bytes) -> Any:
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8")
    scan = _json.make_scanner(_Context())
    start = 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    try:
        value, end = scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value: char {exc.value}") from None
    while end < len(text) and text[end] in _WHITESPACE:
        end += 1
    if end != len(text):
        raise ValueError(f"Extra data: char {end}")
    return value


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any, sort_keys: bool = False) -> str:
    """As json.dumps(obj, sort_keys=...) writes it (", " and ": " separators, ASCII only)."""
    encode = _json.make_encoder(None, _default, _json.encode_basestring_ascii, None, ": ",
                                ", ", sort_keys, False, True)
    return "".join(encode(obj, 0))
