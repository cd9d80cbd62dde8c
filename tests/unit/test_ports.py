"""-p/-P parsing and host-port probing (no privileges)."""

from __future__ import annotations

import socket

import pytest

from rootless.errors import NetworkError, UsageError
from rootless.network.ports import PortMapping, parse_publish, plan_ports, reserve_host_ports


@pytest.mark.parametrize("spec, expected", [
    ("80", [("", 0, 80, "tcp")]),
    ("8080:80", [("", 8080, 80, "tcp")]),
    ("127.0.0.1:8080:80/udp", [("127.0.0.1", 8080, 80, "udp")]),
    ("127.0.0.1::80", [("127.0.0.1", 0, 80, "tcp")]),
    ("[::1]:8080:80", [("::1", 8080, 80, "tcp")]),
    ("8000-8001:80-81", [("", 8000, 80, "tcp"), ("", 8001, 81, "tcp")]),
])
def test_parse_publish(spec, expected):
    assert [m.key() for m in parse_publish(spec)] == expected


@pytest.mark.parametrize("spec", ["", "abc", "0", "70000", "80/sctp", "1:2:3:4", "8000-8002:80-81", "90-80"])
def test_parse_publish_rejects(spec):
    with pytest.raises(UsageError):
        parse_publish(spec)


def test_publish_all_adds_exposed_ports_not_already_published():
    ports = plan_ports(["9000:80"], True, ["80/tcp", "53/udp", "443"])
    assert [m.key() for m in ports] == [("", 9000, 80, "tcp"), ("", 0, 53, "udp"), ("", 0, 443, "tcp")]


def test_same_host_port_twice_is_refused():
    with pytest.raises(UsageError, match="twice"):
        plan_ports(["8080:80", "8080:81"], False, [])


def test_reserve_picks_free_ports_and_reports_busy_ones_as_126():
    m = PortMapping("127.0.0.1", 0, 80, "tcp")
    reserve_host_ports([m])
    assert m.host_port > 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = PortMapping("127.0.0.1", busy.getsockname()[1], 80, "tcp")
        with pytest.raises(NetworkError, match="address already in use") as info:
            reserve_host_ports([taken])
    assert info.value.exit_code == 126
