"""read_subids: the /etc/subuid format (subuid(5)) and its faults."""

from __future__ import annotations

from pathlib import Path

import pytest

from idmap import IdMapError, SubidFileError, SubidRange, read_subids


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subuid"
    path.write_text(text)
    return path


def test_missing_file_grants_nothing(tmp_path: Path) -> None:
    assert read_subids(tmp_path / "absent", "alice", 1000) == []


def test_entries_by_name_and_by_uid_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# managed by usermod\n"
        "\n"
        "bob:100000:65536\n"
        "alice:165536:65536\n"
        "   \n"
        "1000:300000:1000\n"
        "  # indented comment\n"
        "alice:231072:10\n",
    )
    assert read_subids(path, "alice", 1000) == [
        SubidRange(165536, 65536),
        SubidRange(300000, 1000),
        SubidRange(231072, 10),
    ]
    assert read_subids(path, "bob", 1001) == [SubidRange(100000, 65536)]
    assert read_subids(path, "carol", 1002) == []


def test_str_path_and_surrounding_whitespace(tmp_path: Path) -> None:
    path = write(tmp_path, "  alice:100000:65536  \r\n")
    assert read_subids(str(path), "alice", 1000) == [SubidRange(100000, 65536)]


def test_name_is_not_a_prefix_match(tmp_path: Path) -> None:
    path = write(tmp_path, "alice2:100000:65536\n10000:200000:5\n")
    assert read_subids(path, "alice", 1000) == []


@pytest.mark.parametrize(
    "line, why",
    [
        ("alice:100000", "expected 3 fields"),
        ("alice:100000:65536:9", "expected 3 fields"),
        (":100000:65536", "owner is empty"),
        ("alice:abc:65536", "start 'abc'"),
        ("alice:100000:", "count ''"),
        ("alice:-5:10", "start '-5'"),
        ("alice:100000:0", "count is 0"),
        ("alice:4294967290:10", "beyond the largest id"),
        ("alice:1e5:10", "start '1e5'"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = write(tmp_path, f"# header\nbob:100000:65536\n{line}\n")
    with pytest.raises(SubidFileError) as info:
        read_subids(path, "alice", 1000)
    assert str(info.value).startswith(f"{path}:3: ")
    assert why in str(info.value)
    assert info.value.hint
    assert isinstance(info.value, IdMapError)


def test_malformed_line_of_another_user_is_still_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:65536\nbob:oops\n")
    with pytest.raises(SubidFileError, match=r":2: "):
        read_subids(path, "alice", 1000)


def test_overlapping_own_ranges_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:65536\nbob:0:1\n1000:165000:100\n")
    with pytest.raises(SubidFileError) as info:
        read_subids(path, "alice", 1000)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert "165000-165099" in message and "100000-165535" in message and "line 1" in message


def test_same_range_under_name_and_uid_with_other_count_overlaps(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:65536\n1000:100000:10\n")
    with pytest.raises(IdMapError, match="overlaps"):
        read_subids(path, "alice", 1000)


def test_word_for_word_repeat_is_read_once(tmp_path: Path) -> None:
    # A setup script run twice leaves this behind; newuidmap accepts it.
    path = write(tmp_path, "alice:100000:65536\nalice:100000:65536\n")
    assert read_subids(path, "alice", 1000) == [SubidRange(100000, 65536)]


def test_other_users_may_overlap_ours(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:65536\nbob:100000:65536\n")
    assert read_subids(path, "alice", 1000) == [SubidRange(100000, 65536)]


def test_unreadable_file_is_an_idmap_error(tmp_path: Path) -> None:
    with pytest.raises(IdMapError, match="could not read"):
        read_subids(tmp_path, "alice", 1000)  # a directory: IsADirectoryError
