"""plan_mapping: podman rootless map arithmetic, every mode and every refusal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from idmap import IdMapError, IdMapping, IdRange, SubidRange, plan_mapping

SUB = [SubidRange(100000, 65536)]
TWO = [SubidRange(100000, 1000), SubidRange(300000, 64536)]


def plan(
    *,
    uid: int = 1500,
    gid: int = 1500,
    subuids: Sequence[SubidRange] = SUB,
    subgids: Sequence[SubidRange] = SUB,
    helpers: bool = True,
    **kw: Any,
) -> IdMapping:
    return plan_mapping(
        uid=uid, gid=gid, user="alice", subuids=list(subuids), subgids=list(subgids),
        helpers_available=helpers, **kw,
    )


def lines(ranges: Sequence[IdRange]) -> list[str]:
    return [r.line() for r in ranges]


def test_idrange_line() -> None:
    assert IdRange(0, 1500, 1).line() == "0 1500 1"


# -- default --------------------------------------------------------------------------------

def test_default_with_subids() -> None:
    m = plan(gid=1600)
    assert m.mode == "subid" and m.notice is None
    assert lines(m.uid_map) == ["0 1500 1", "1 100000 65536"]
    assert lines(m.gid_map) == ["0 1600 1", "1 100000 65536"]
    assert m.size() == 65537
    assert m.container_uid_to_host(0) == 1500
    assert m.container_uid_to_host(1) == 100000
    assert m.container_uid_to_host(65536) == 165535
    assert m.container_uid_to_host(65537) is None
    assert m.container_gid_to_host(0) == 1600
    assert m.container_gid_to_host(2) == 100001


def test_default_with_several_ranges_one_line_each() -> None:
    m = plan(subuids=TWO, subgids=[SubidRange(200000, 10)])
    assert lines(m.uid_map) == ["0 1500 1", "1 100000 1000", "1001 300000 64536"]
    assert lines(m.gid_map) == ["0 1500 1", "1 200000 10"]
    assert m.container_uid_to_host(1000) == 100999
    assert m.container_uid_to_host(1001) == 300000
    assert m.size() == 65537


@pytest.mark.parametrize(
    "subuids, subgids, helpers, cause",
    [
        ([], SUB, True, "no subordinate ids for alice in /etc/subuid:"),
        (SUB, [], True, "no subordinate ids for alice in /etc/subgid:"),
        ([], [], True, "in /etc/subuid and /etc/subgid:"),
        (SUB, SUB, False, "rl: newuidmap/newgidmap not found: running with a single id"),
    ],
)
def test_single_id_fallback(
    subuids: list[SubidRange], subgids: list[SubidRange], helpers: bool, cause: str
) -> None:
    m = plan(uid=1500, gid=1600, subuids=subuids, subgids=subgids, helpers=helpers)
    assert m.mode == "single"
    assert lines(m.uid_map) == ["0 1500 1"]
    assert lines(m.gid_map) == ["0 1600 1"]
    assert m.size() == 1
    assert m.notice is not None and "\n" not in m.notice
    assert cause in m.notice
    assert "running with a single id" in m.notice
    if subuids and subgids:
        assert "apt install uidmap" in m.notice
    else:
        assert "sudo usermod" in m.notice and m.notice.endswith(" alice`")


def test_single_notice_names_only_the_missing_flag() -> None:
    m = plan(subuids=SUB, subgids=[])
    assert m.notice is not None
    assert "--add-subgids 100000-165535 alice" in m.notice
    assert "--add-subuids" not in m.notice


def test_root_without_subids() -> None:
    m = plan(uid=0, gid=0, subuids=[], subgids=[])
    assert lines(m.uid_map) == ["0 0 1"] and m.mode == "single"


def test_subids_containing_own_uid_are_refused() -> None:
    with pytest.raises(IdMapError, match="overlap on the host side") as info:
        plan(uid=100005)
    assert info.value.hint is not None and "contains your own uid 100005" in info.value.hint


def test_more_than_340_lines_is_refused() -> None:
    many = [SubidRange(100000 + 10 * i, 5) for i in range(340)]
    with pytest.raises(IdMapError, match="341 lines.*at most 340"):
        plan(subuids=many)
    assert len(plan(subuids=many[:339]).uid_map) == 340


def test_describe() -> None:
    text = plan(subuids=TWO).describe()
    assert "mode subid" in text and "newuidmap" in text
    assert "0-0 -> 1500-1500 (1)" in text
    assert "1001-65536 -> 300000-364535 (64536)" in text
    assert "gid_map" in text
    single = plan(helpers=False).describe()
    assert "setgroups deny" in single and "notice: rl: newuidmap" in single


# -- userns -----------------------------------------------------------------------------------

def test_userns_host_is_refused() -> None:
    with pytest.raises(IdMapError, match="--userns=host is not possible rootless") as info:
        plan(userns="host")
    assert info.value.hint


def test_unknown_userns_is_refused() -> None:
    with pytest.raises(IdMapError, match="--userns=auto is not supported"):
        plan(userns="auto")


def test_keep_id() -> None:
    m = plan(uid=1500, gid=1600, userns="keep-id")
    assert m.mode == "subid"
    assert lines(m.uid_map) == ["0 100000 1500", "1500 1500 1", "1501 101500 64036"]
    assert lines(m.gid_map) == ["0 100000 1600", "1600 1600 1", "1601 101600 63936"]
    assert m.container_uid_to_host(1500) == 1500
    assert m.container_uid_to_host(0) == 100000
    assert m.container_uid_to_host(1501) == 101500
    assert m.size() == 65537


def test_keep_id_across_two_ranges() -> None:
    m = plan(uid=1500, gid=1500, subuids=TWO, userns="keep-id")
    # container 0..1499 -> intermediate 1..1500: 1000 ids of range one, 500 of range two
    assert lines(m.uid_map) == [
        "0 100000 1000", "1000 300000 500", "1500 1500 1", "1501 300500 64036",
    ]


def test_nested_maps_are_the_plan_in_intermediate_ids() -> None:
    # Inside a namespace with the default maps (intermediate id N is its id N), keep-id is
    # written before translation: one line per piece, however many subid ranges it spans.
    m = plan(uid=1500, gid=1500, subuids=TWO, userns="keep-id").nested()
    assert m.mode == "nested"
    assert lines(m.uid_map) == ["0 1 1500", "1500 0 1", "1501 1501 64036"]
    d = plan(uid=1500, gid=1600).nested()
    assert lines(d.uid_map) == ["0 0 65537"] and lines(d.gid_map) == ["0 0 65537"]
    e = plan(uidmaps=["0:1:100", "100:0:1"]).nested()
    assert lines(e.uid_map) == ["0 1 100", "100 0 1"]


def test_keep_id_uses_all_subids_exactly() -> None:
    m = plan(uid=10, gid=10, subuids=[SubidRange(100000, 10)], subgids=[SubidRange(100000, 10)],
             userns="keep-id")
    assert lines(m.uid_map) == ["0 100000 10", "10 10 1"]


def test_keep_id_needs_enough_subids() -> None:
    with pytest.raises(IdMapError) as info:
        plan(uid=70000, gid=1500, userns="keep-id")
    msg = str(info.value)
    assert "needs at least 70000 subordinate uids" in msg
    assert "you own only 65537 uids" in msg and "65536 subordinate uids" in msg
    assert info.value.hint is not None and "usermod --add-subuids 100000-169999 alice" in (
        info.value.hint
    )


def test_keep_id_in_single_mode_is_refused() -> None:
    with pytest.raises(IdMapError, match="keep-id needs subordinate ids") as info:
        plan(subuids=[], userns="keep-id")
    assert info.value.hint is not None and "usermod" in info.value.hint


def test_keep_id_as_root_in_single_mode_is_the_default() -> None:
    m = plan(uid=0, gid=0, subuids=[], subgids=[], userns="keep-id")
    assert lines(m.uid_map) == ["0 0 1"] and m.mode == "single"


def test_keep_id_excludes_explicit_maps() -> None:
    with pytest.raises(IdMapError, match="cannot be combined"):
        plan(userns="keep-id", uidmaps=["0:0:1"])


# -- explicit --uidmap / --gidmap ---------------------------------------------------------------

def test_explicit_host_side_is_intermediate() -> None:
    m = plan(uidmaps=["0:1:65536"], gidmaps=["0:0:1", "1:1:100"])
    assert lines(m.uid_map) == ["0 100000 65536"]
    assert lines(m.gid_map) == ["0 1500 1", "1 100000 100"]
    assert m.mode == "subid" and m.notice is None


def test_explicit_split_across_own_id_and_two_ranges() -> None:
    m = plan(subuids=TWO, uidmaps=["10:0:2000"])
    assert lines(m.uid_map) == ["10 1500 1", "11 100000 1000", "1011 300000 999"]


def test_explicit_several_flags() -> None:
    m = plan(uidmaps=["1000:0:1", "0:1:1000", "1001:1001:100"])
    assert lines(m.uid_map) == ["1000 1500 1", "0 100000 1000", "1001 101000 100"]
    assert m.container_uid_to_host(1000) == 1500


def test_uidmap_alone_applies_to_gids() -> None:
    m = plan(gid=1600, uidmaps=["0:0:1", "1:1:10"])
    assert lines(m.gid_map) == ["0 1600 1", "1 100000 10"]


def test_gidmap_alone_applies_to_uids() -> None:
    m = plan(gidmaps=["5:0:1"])
    assert lines(m.uid_map) == ["5 1500 1"]


def test_explicit_own_id_fits_single_mode() -> None:
    m = plan(subuids=[], uidmaps=["0:0:1"])
    assert m.mode == "single" and lines(m.uid_map) == ["0 1500 1"]
    assert m.notice is None


def test_explicit_beyond_single_mode() -> None:
    with pytest.raises(IdMapError) as info:
        plan(subuids=[], uidmaps=["0:0:2"])
    assert "you own only 1 uid (your own uid 1500)" in str(info.value)
    assert info.value.hint is not None and "single id because no subordinate ids" in (
        info.value.hint
    )


@pytest.mark.parametrize(
    "spec, why",
    [
        ("0:1", "expected CONTAINER:HOST:SIZE"),
        ("0:1:2:3", "expected CONTAINER:HOST:SIZE"),
        ("a:1:2", "CONTAINER 'a' is not a whole number"),
        ("0::2", "HOST '' is not a whole number"),
        ("0:1:-5", "SIZE must not be negative"),
        ("-1:1:5", "CONTAINER must not be negative"),
        ("0:1:0", "SIZE must be at least 1"),
        ("4294967290:1:10", "the container range ends beyond the largest id 4294967294"),
        ("+0:1:10", "CONTAINER '+0' is not a whole number"),
    ],
)
def test_malformed_spec(spec: str, why: str) -> None:
    with pytest.raises(IdMapError) as info:
        plan(uidmaps=[spec])
    assert str(info.value) == f"invalid --uidmap {spec!r}: {why}."
    assert info.value.hint is not None and "CONTAINER:HOST:SIZE" in info.value.hint


def test_malformed_gidmap_names_its_flag() -> None:
    with pytest.raises(IdMapError, match="invalid --gidmap 'x'"):
        plan(uidmaps=["0:0:1"], gidmaps=["x"])


def test_overlapping_container_ranges() -> None:
    with pytest.raises(IdMapError, match="overlapping container uids"):
        plan(uidmaps=["0:0:10", "5:100:10"])


def test_overlapping_host_ranges() -> None:
    with pytest.raises(IdMapError, match="overlapping host uids") as info:
        plan(uidmaps=["0:0:10", "100:5:10"])
    assert info.value.hint is not None and "host uid 0 is your own uid" in info.value.hint


def test_overlap_in_copied_gidmap_is_named_as_uidmap() -> None:
    with pytest.raises(IdMapError, match="--uidmap 0:0:10 and --uidmap 0:20:1"):
        plan(uidmaps=["0:20:1", "0:0:10"])


def test_size_beyond_owned() -> None:
    with pytest.raises(IdMapError) as info:
        plan(uidmaps=["0:1:65537"])
    msg = str(info.value)
    assert "needs host uids 1-65537" in msg
    assert "you own only 65537 uids (your own uid 1500 and 65536 subordinate uids" in msg
    assert info.value.hint is not None and "within 65537" in info.value.hint


def test_explicit_more_than_340_lines() -> None:
    many = [SubidRange(100000 + 10 * i, 5) for i in range(400)]
    with pytest.raises(IdMapError, match="at most 340"):
        plan(subuids=many, uidmaps=["0:0:2000"])


def test_errors_have_hints_and_sentences() -> None:
    for kw in ({"userns": "host"}, {"uidmaps": ["bad"]}, {"uidmaps": ["0:0:999999"]}):
        with pytest.raises(IdMapError) as info:
            plan(**kw)
        assert str(info.value).endswith(".") and info.value.hint
