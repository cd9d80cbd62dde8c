"""Network definitions and addresses (rootless.network.ipam), and the members' DNS answers
(rootless.network.dnsd): pure functions and files in a temporary directory."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from rootless.errors import UsageError
from rootless.network import dnsd, ipam


class FakePaths:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.runtime = root / "runtime"


def test_parse_subnet():
    assert ipam.parse_subnet("10.89.0.0/24") == (0x0A590000, 24)
    for bad in ("10.89.0.1/24", "10.89.0.0", "10.89.0.0/30", "10.89.0.0/7", "10.300.0.0/24", "x/24"):
        with pytest.raises(UsageError):
            ipam.parse_subnet(bad)


def test_gateway_and_allocation_skip_used_and_broadcast():
    assert ipam.gateway("10.89.3.0/24") == "10.89.3.1"
    assert ipam.allocate("10.89.3.0/24", set()) == "10.89.3.2"
    assert ipam.allocate("10.89.3.0/24", {"10.89.3.2", "10.89.3.3"}) == "10.89.3.4"
    assert ipam.allocate("10.89.3.0/24", {"10.89.3.2"} | {"10.89.3.4"}) == "10.89.3.3"
    # /29: .0 network, .1 gateway, .2-.6 members, .7 broadcast
    used = {f"10.89.3.{n}" for n in range(2, 7)}
    with pytest.raises(UsageError, match="no free address"):
        ipam.allocate("10.89.3.0/29", used)


def test_overlaps_and_free_subnet():
    assert ipam.overlaps("10.89.0.0/24", "10.89.0.128/25")
    assert ipam.overlaps("10.0.0.0/8", "10.0.2.0/24")
    assert not ipam.overlaps("10.89.0.0/24", "10.89.1.0/24")
    assert ipam.free_subnet([]) == "10.89.0.0/24"
    assert ipam.free_subnet(["10.89.0.0/24", "10.89.1.0/24"]) == "10.89.2.0/24"
    assert ipam.free_subnet(["10.89.0.0/23"]) == "10.89.2.0/24"


@pytest.mark.parametrize("name", ["", "-x", ".x", "a/b", "a b", "x" * 65, "host", "none", "pasta"])
def test_bad_names(name):
    with pytest.raises(UsageError):
        ipam.check_name(name)


def test_create_list_load_and_conflicts(tmp_path):
    paths = FakePaths(tmp_path)
    a = ipam.create(paths, "a", None, {})
    assert (a["subnet"], a["gateway"]) == ("10.89.0.0/24", "10.89.0.1")
    b = ipam.create(paths, "b", None, {"allow_host_loopback": "true"})
    assert b["subnet"] == "10.89.1.0/24"
    with pytest.raises(UsageError, match="already exists"):
        ipam.create(paths, "a", None, {})
    with pytest.raises(UsageError, match="overlaps"):
        ipam.create(paths, "c", "10.89.1.0/25", {})
    with pytest.raises(UsageError, match="overlaps"):
        ipam.create(paths, "c", "10.0.0.0/16", {})  # slirp4netns's 10.0.2.0/24
    assert [n["name"] for n in ipam.listing(paths)] == ["a", "b"]
    assert ipam.load(paths, "b")["options"] == {"allow_host_loopback": "true"}
    on_disk = json.loads(Path(ipam.definition_path(paths, "a")).read_text())
    assert on_disk["id"] == a["id"] and len(a["id"]) == 64
    assert sorted(p.name for p in (paths.data / "networks").iterdir()) == ["a.json", "b.json"]


def test_lock_is_exclusive_and_none_for_a_missing_network(tmp_path):
    paths = FakePaths(tmp_path)
    assert ipam.lock(paths, "nope") is None
    ipam.create(paths, "a", None, {})
    fd = ipam.lock(paths, "a")
    assert fd is not None
    try:
        assert ipam.lock(paths, "a", blocking=False) is None
    finally:
        import os

        os.close(fd)
    fd2 = ipam.lock(paths, "a", blocking=False)
    assert fd2 is not None


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_dns_answers_members_and_forwards_the_rest():
    names = {"db": "10.89.0.2", "dbhost": "10.89.0.2"}
    reply = dnsd.answer(query("DB"), names)
    assert reply is not None
    qid, flags, qd, an = struct.unpack("!HHHH", reply[:8])
    assert (qid, qd, an) == (0x1234, 1, 1) and flags & 0x8000 and flags & 0x000F == 0
    assert reply.endswith(bytes([10, 89, 0, 2]))
    # AAAA of a member: NODATA (no answer, no error), so resolvers do not ask elsewhere
    reply = dnsd.answer(query("db", qtype=28), names)
    assert struct.unpack("!HH", reply[6:8] + b"\0\0")[0] == 0 and struct.unpack("!H", reply[2:4])[0] & 0xF == 0
    assert dnsd.answer(query("example.org"), names) is None
    assert dnsd.answer(b"\x00\x01", names) is None
    fail = dnsd.servfail(query("example.org"))
    assert struct.unpack("!H", fail[2:4])[0] & 0xF == 2
