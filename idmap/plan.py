"""Planning the uid and gid maps of a new user namespace: pure arithmetic, no I/O.

Podman rootless is the reference. An unprivileged user owns an *intermediate* id space:
id 0 is the user's own id and ids 1..N are the subordinate ranges from /etc/subuid
(or /etc/subgid) in file order. Every plan (default, --userns=keep-id, --uidmap) is a list of
CONTAINER:INTERMEDIATE:SIZE pieces translated into real host ids, one map line per run.
"""

from __future__ import annotations

from itertools import pairwise

from idmap._record import Frozen
from idmap.errors import IdMapError
from idmap.subid import ID_LIMIT, SubidRange

# collections.abc for annotations only: importing it (and collections) costs ~1.5 ms of every
# container start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

# Since Linux 4.15 a uid_map or gid_map may hold up to 340 lines (user_namespaces(7));
# the kernel refuses a longer write with EINVAL.
MAX_MAP_LINES = 340

MODE_SINGLE = "single"
MODE_SUBID = "subid"
# Written directly by a writer that is root of the parent namespace (CAP_SETUID and CAP_SETGID
# there: user_namespaces(7) lets it map any id of its own namespace); setgroups stays "allow".
MODE_DIRECT = "direct"
# Maps of a namespace nested in one that has the user's default maps (an rl network's): written
# in that namespace's ids, by a process inside it that holds CAP_SETUID/CAP_SETGID there.
MODE_NESTED = "nested"


class IdRange(Frozen):
    """One line of /proc/PID/uid_map: ids inside..inside+count-1 are outside..outside+count-1."""

    __slots__ = ("inside", "outside", "count")
    inside: int
    outside: int
    count: int

    def line(self) -> str:
        return f"{self.inside} {self.outside} {self.count}"


class IdMapping(Frozen):
    """The planned maps of one user namespace and how to write them.

    mode "single": one id each, written directly by the parent (needs setgroups "deny").
    mode "subid": written by the setuid helpers newuidmap/newgidmap.
    mode "direct": any ids, written directly by a parent that is root of its namespace.
    mode "nested": see nested().

    uid_inner/gid_inner are the same maps before translation to host ids: their outside ids are
    intermediate ids (0 your own, 1.. your subordinate ids in file order).
    """

    __slots__ = ("uid_map", "gid_map", "mode", "notice", "uid_inner", "gid_inner")
    _defaults = {"notice": None, "uid_inner": (), "gid_inner": ()}
    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]
    mode: str
    notice: str | None
    uid_inner: tuple[IdRange, ...]
    gid_inner: tuple[IdRange, ...]

    def nested(self) -> IdMapping:
        """The maps for a user namespace created inside one whose maps are the user's default
        (intermediate id N is that namespace's id N): the containers of an rl network share
        such a namespace, and a container with other maps gets its own namespace inside it.
        Written directly (user_namespaces(7): a writer in the parent namespace with
        CAP_SETUID/CAP_SETGID there may map any id mapped in it, without setgroups "deny")."""
        return IdMapping(self.uid_inner, self.gid_inner, MODE_NESTED)

    def container_uid_to_host(self, uid: int) -> int | None:
        return _to_host(self.uid_map, uid)

    def container_gid_to_host(self, gid: int) -> int | None:
        return _to_host(self.gid_map, gid)

    def size(self) -> int:
        """How many container uids are mapped."""
        return sum(r.count for r in self.uid_map)

    def describe(self) -> str:
        how = {MODE_SUBID: "newuidmap/newgidmap", MODE_DIRECT: "direct write by root"}.get(
            self.mode, "direct write, setgroups deny")
        n = self.size()
        out = [f"id mapping: mode {self.mode} ({how}), {n} container uid{'s' if n != 1 else ''}"]
        for kind, ranges in (("uid", self.uid_map), ("gid", self.gid_map)):
            out.append(f"  {kind}_map (container -> host, count):")
            out.extend(
                f"    {r.inside}-{r.inside + r.count - 1} -> "
                f"{r.outside}-{r.outside + r.count - 1} ({r.count})"
                for r in ranges
            )
        if self.notice:
            out.append(f"  notice: {self.notice}")
        return "\n".join(out)


def _to_host(ranges: Sequence[IdRange], cid: int) -> int | None:
    for r in ranges:
        if r.inside <= cid < r.inside + r.count:
            return r.outside + (cid - r.inside)
    return None


class _Piece:
    """CONTAINER:INTERMEDIATE:SIZE, as podman's --uidmap takes it rootless.

    (Internal helpers are plain slotted classes: a dataclass costs ~0.5 ms at import.)"""

    __slots__ = ("container", "host", "size")

    def __init__(self, container: int, host: int, size: int) -> None:
        self.container, self.host, self.size = container, host, size


class _Side:
    """What the planner knows about one kind of id (uid or gid)."""

    __slots__ = ("kind", "user", "own", "subids", "subid_file", "single_hint")

    def __init__(
        self,
        kind: str,  # "uid" or "gid"
        user: str,
        own: int,
        subids: tuple[SubidRange, ...],
        subid_file: str,
        single_hint: str,  # why the plan is single-id and how to get ranges ("" in subid mode)
    ) -> None:
        self.kind, self.user, self.own, self.subids = kind, user, own, subids
        self.subid_file, self.single_hint = subid_file, single_hint

    @property
    def owned(self) -> int:
        return 1 + sum(r.count for r in self.subids)


def plan_mapping(
    *,
    uid: int,
    gid: int,
    user: str,
    subuids: list[SubidRange],
    subgids: list[SubidRange],
    helpers_available: bool,
    userns: str = "",
    uidmaps: Sequence[str] = (),
    gidmaps: Sequence[str] = (),
) -> IdMapping:
    """Plan the maps for `user` (uid, gid) the way podman rootless would.

    Without subordinate ids for uids or gids, or without the helpers, the plan maps one id
    each (mode "single") and carries a notice saying how to get full ranges.
    """
    if userns == "host":
        raise IdMapError(
            "--userns=host is not possible rootless: rl needs a user namespace of its own.",
            hint="drop --userns=host, or use --userns=keep-id to run as your own uid.",
        )
    if userns not in ("", "keep-id"):
        raise IdMapError(
            f"--userns={userns} is not supported; rootless rl accepts '' (default) or keep-id.",
            hint="use --userns=keep-id, or leave --userns out.",
        )
    if userns == "keep-id" and (uidmaps or gidmaps):
        raise IdMapError(
            "--userns=keep-id cannot be combined with --uidmap or --gidmap.",
            hint="use either --userns=keep-id or explicit --uidmap/--gidmap flags.",
        )
    # As podman does: one kind of flag alone stands for both maps.
    uid_flag, gid_flag = "--uidmap", "--gidmap"
    if uidmaps and not gidmaps:
        gidmaps, gid_flag = uidmaps, uid_flag
    elif gidmaps and not uidmaps:
        uidmaps, uid_flag = gidmaps, gid_flag

    full = helpers_available and bool(subuids) and bool(subgids)
    notice, single_hint = None, ""
    if not full:
        cause = _single_cause(user, subuids, subgids, helpers_available)
        fix = _subid_fix(user, subuids, subgids, helpers_available)
        notice = f"rl: {cause}: running with a single id; {fix}"
        single_hint = f"rl runs with a single id because {cause}; {fix}."
        if userns == "keep-id" and (uid != 0 or gid != 0):
            raise IdMapError(
                f"--userns=keep-id needs subordinate ids, but {cause}.", hint=f"{fix}."
            )
    sides = (
        _Side("uid", user, uid, tuple(subuids) if full else (), "/etc/subuid", single_hint),
        _Side("gid", user, gid, tuple(subgids) if full else (), "/etc/subgid", single_hint),
    )

    maps: list[tuple[IdRange, ...]] = []
    inner: list[tuple[IdRange, ...]] = []
    for side, specs, flag in zip(sides, (uidmaps, gidmaps), (uid_flag, gid_flag), strict=True):
        if specs:
            pieces = _explicit_pieces(side, specs, flag)
        elif userns == "keep-id":
            pieces = _keep_id_pieces(side)
        else:
            pieces = [_Piece(0, 0, side.owned)]
        maps.append(_validated(side, _translate(side, pieces)))
        inner.append(tuple(IdRange(p.container, p.host, p.size) for p in pieces))
    if uidmaps:
        notice = None  # explicit maps that fit are what the user asked for
    return IdMapping(maps[0], maps[1], MODE_SUBID if full else MODE_SINGLE, notice,
                     inner[0], inner[1])


def _single_cause(
    user: str, subuids: Sequence[SubidRange], subgids: Sequence[SubidRange], helpers: bool
) -> str:
    missing = [f for f, ranges in (("/etc/subuid", subuids), ("/etc/subgid", subgids))
               if not ranges]
    causes = []
    if missing:
        causes.append(f"no subordinate ids for {user} in {' and '.join(missing)}")
    if not helpers:
        causes.append("newuidmap/newgidmap not found")
    return " and ".join(causes)


def _subid_fix(
    user: str, subuids: Sequence[SubidRange], subgids: Sequence[SubidRange], helpers: bool
) -> str:
    fixes = []
    if not subuids or not subgids:
        flags = []
        if not subuids:
            flags.append("--add-subuids 100000-165535")
        if not subgids:
            flags.append("--add-subgids 100000-165535")
        fixes.append(f"add a range, e.g. `sudo usermod {' '.join(flags)} {user}`")
    if not helpers:
        fixes.append("install newuidmap/newgidmap (Debian/Ubuntu: `sudo apt install uidmap`, "
                     "Fedora: `sudo dnf install shadow-utils`)")
    return " and ".join(fixes)


def _owned_text(side: _Side) -> str:
    if not side.subids:
        return f"1 {side.kind} (your own {side.kind} {side.own})"
    n = side.owned - 1
    return (f"{side.owned} {side.kind}s (your own {side.kind} {side.own} and {n} subordinate "
            f"{side.kind}s from {side.subid_file})")


def _keep_id_pieces(side: _Side) -> list[_Piece]:
    # podman's keep-id: container 0..own-1 -> the first subordinate ids, container own -> the
    # user, container own+1.. -> the remaining subordinate ids.
    own = side.own
    if own == 0:
        return [_Piece(0, 0, side.owned)]
    if side.owned - 1 < own:
        raise IdMapError(
            f"--userns=keep-id needs at least {own} subordinate {side.kind}s to map container "
            f"{side.kind}s 0-{own - 1} below your {side.kind} {own}, but you own only "
            f"{_owned_text(side)}.",
            hint=f"give yourself a larger range in {side.subid_file}, e.g. "
                 f"`sudo usermod --add-sub{side.kind}s 100000-{100000 + max(own, 65536) - 1} "
                 f"{side.user}`, or drop --userns=keep-id.",
        )
    pieces = [_Piece(0, 1, own), _Piece(own, 0, 1)]
    rest = side.owned - own - 1
    if rest > 0:
        pieces.append(_Piece(own + 1, own + 1, rest))
    return pieces


def _explicit_pieces(side: _Side, specs: Sequence[str], flag: str) -> list[_Piece]:
    pieces = [_parse_spec(flag, s) for s in specs]
    for i, a in enumerate(pieces):
        for b in pieces[:i]:
            if a.container < b.container + b.size and b.container < a.container + a.size:
                raise IdMapError(
                    f"{flag} {_spec(a)} and {flag} {_spec(b)} map overlapping container "
                    f"{side.kind}s.",
                    hint=f"give each {flag} its own container range.",
                )
            if a.host < b.host + b.size and b.host < a.host + a.size:
                raise IdMapError(
                    f"{flag} {_spec(a)} and {flag} {_spec(b)} use overlapping host "
                    f"{side.kind}s.",
                    hint=f"give each {flag} its own host range (host {side.kind} 0 is your "
                         f"own {side.kind}, 1 and up are your subordinate {side.kind}s).",
                )
        if a.host + a.size > side.owned:
            hint = (f"keep HOST+SIZE within {side.owned}: host {side.kind} 0 is your own "
                    f"{side.kind}, 1 to {side.owned - 1} your subordinate {side.kind}s.")
            if side.single_hint:
                hint = side.single_hint
            raise IdMapError(
                f"{flag} {_spec(a)} needs host {side.kind}s {a.host}-{a.host + a.size - 1}, "
                f"but you own only {_owned_text(side)}.",
                hint=hint,
            )
    return pieces


def _spec(p: _Piece) -> str:
    return f"{p.container}:{p.host}:{p.size}"


def _parse_spec(flag: str, spec: str) -> _Piece:
    def bad(why: str) -> IdMapError:
        return IdMapError(
            f"invalid {flag} {spec!r}: {why}.",
            hint=f"write {flag} CONTAINER:HOST:SIZE with whole numbers, e.g. {flag} 0:1:65536.",
        )

    fields = spec.split(":")
    if len(fields) != 3:
        raise bad("expected CONTAINER:HOST:SIZE")
    values = []
    for name, text in zip(("CONTAINER", "HOST", "SIZE"), fields, strict=True):
        text = text.strip()
        if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
            raise bad(f"{name} must not be negative")
        if not (text.isascii() and text.isdigit()):
            raise bad(f"{name} {text!r} is not a whole number")
        values.append(int(text))
    piece = _Piece(*values)
    if piece.size == 0:
        raise bad("SIZE must be at least 1")
    if piece.container + piece.size > ID_LIMIT:
        raise bad(f"the container range ends beyond the largest id {ID_LIMIT - 1}")
    return piece


def _translate(side: _Side, pieces: Sequence[_Piece]) -> list[IdRange]:
    """Intermediate ids -> host ids; a piece that spans several subid ranges splits."""
    segments = [(0, side.own, 1)]
    at = 1
    for r in side.subids:
        segments.append((at, r.start, r.count))
        at += r.count
    lines = []
    for p in pieces:
        for first, outside, count in segments:
            lo, hi = max(p.host, first), min(p.host + p.size, first + count)
            if lo < hi:
                lines.append(IdRange(p.container + lo - p.host, outside + lo - first, hi - lo))
    return lines


def _validated(side: _Side, lines: list[IdRange]) -> tuple[IdRange, ...]:
    """Refuse what the kernel would refuse: map_write() in kernel/user_namespace.c wants
    1..340 lines with non-empty ranges that overlap on neither side."""
    if not lines:
        raise IdMapError(f"the {side.kind} map is empty.", hint="map at least one id.")
    if len(lines) > MAX_MAP_LINES:
        raise IdMapError(
            f"the {side.kind} map needs {len(lines)} lines, but the kernel accepts at most "
            f"{MAX_MAP_LINES} (user_namespaces(7)).",
            hint=f"use fewer map flags, or merge ranges in {side.subid_file}.",
        )
    for attr in ("inside", "outside"):
        ordered = sorted(lines, key=lambda r: getattr(r, attr))
        for a, b in pairwise(ordered):
            if getattr(a, attr) + a.count > getattr(b, attr):
                where = "container" if attr == "inside" else "host"
                hint = "give each range its own ids."
                if attr == "outside" and any(
                    r.start <= side.own < r.end for r in side.subids
                ):
                    hint = (f"your subordinate range in {side.subid_file} contains your own "
                            f"{side.kind} {side.own}; use a range that does not, e.g. "
                            "100000-165535.")
                raise IdMapError(
                    f"the {side.kind} map lines '{a.line()}' and '{b.line()}' overlap on the "
                    f"{where} side, which the kernel refuses.",
                    hint=hint,
                )
    return tuple(lines)
