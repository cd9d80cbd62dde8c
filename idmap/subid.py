"""Reading /etc/subuid and /etc/subgid (subuid(5)): the ids a user may map with newuidmap.

Each line is ``owner:start:count``; the owner is a login name or a numeric uid. shadow's
newuidmap accepts a request when one of the owner's lines covers it.
"""

from __future__ import annotations

import os

from idmap._record import Frozen
from idmap.errors import IdMapError, SubidFileError

# uid_t is 32 bits and (uid_t)-1 means "no id" to every setuid-family call, so the last
# usable id is 4294967294 and a range may end (exclusive) at 4294967295 at the most.
ID_LIMIT = 2**32 - 1


class SubidRange(Frozen):
    """One /etc/subuid or /etc/subgid entry owned by the user: ids start .. start+count-1."""

    __slots__ = ("start", "count")
    start: int
    count: int

    @property
    def end(self) -> int:
        """The first id after the range."""
        return self.start + self.count


def read_subids(path: str | os.PathLike[str], user: str, uid: int) -> list[SubidRange]:
    """Return the ranges `path` grants to `user` (by name or by numeric `uid`), in file order.

    A missing file grants nothing. A malformed line anywhere raises SubidFileError naming
    the file and line; ranges of the user that overlap each other raise SubidFileError too.
    A line repeated word for word is read once: it grants nothing new, and setup scripts
    that run twice leave such repeats behind (shadow's newuidmap accepts them).
    """
    # Plain open(), not pathlib: this runs on every `rl run` (pathlib costs ~8 ms to import).
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise IdMapError(
            f"rl could not read {path}: {e.strerror}.",
            hint=f"check that {path} is readable by your user (it is normally mode 0644).",
        ) from e

    owners = {user, str(uid)}
    found: list[tuple[int, SubidRange]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        owner, entry = _parse_line(path, lineno, line)
        if owner not in owners:
            continue
        earlier = [(n, r) for n, r in found if r.start < entry.end and entry.start < r.end]
        if earlier and earlier[0][1] == entry:
            continue
        if earlier:
            n, r = earlier[0]
            raise SubidFileError(
                f"{path}:{lineno}: the range {entry.start}-{entry.end - 1} for {owner} overlaps "
                f"the range {r.start}-{r.end - 1} on line {n}.",
                hint=f"remove or fix one of the two lines in {path}.",
            )
        found.append((lineno, entry))
    return [r for _, r in found]


def _parse_line(path: str, lineno: int, line: str) -> tuple[str, SubidRange]:
    def bad(why: str) -> SubidFileError:
        return SubidFileError(
            f"{path}:{lineno}: {why} in {line!r}; each line must be NAME:START:COUNT.",
            hint=f"fix or remove line {lineno} of {path} (the format is in subuid(5)).",
        )

    fields = line.split(":")
    if len(fields) != 3:
        raise bad(f"expected 3 fields separated by ':' but found {len(fields)}")
    owner, start_s, count_s = fields
    if not owner:
        raise bad("the owner is empty")
    for name, value in (("start", start_s), ("count", count_s)):
        if not (value.isascii() and value.isdigit()):
            raise bad(f"the {name} {value!r} is not a non-negative whole number")
    start, count = int(start_s), int(count_s)
    if count == 0:
        raise bad("the count is 0")
    if start + count > ID_LIMIT:
        raise bad(f"the range ends beyond the largest id {ID_LIMIT - 1}")
    return owner, SubidRange(start, count)
