"""Default routes: the host's (which pasta copies into the container), and the container's as
rtnetlink announces them (pasta's --config-net adds them last, so they say the interface is
configured).

Plain parsing of /proc/net/{route,ipv6_route} and of raw rtnetlink messages: pyroute2 costs
tens of milliseconds to import, and this runs on every `rl run` with pasta.
"""

from __future__ import annotations

import os
import struct

from rootless.kernel import constants as k

AF_INET, AF_INET6 = 2, 10
_NLMSGHDR = struct.Struct("=IHHII")  # <linux/netlink.h> struct nlmsghdr
_RTMSG = struct.Struct("=BBBBBBBBI")  # <linux/rtnetlink.h> struct rtmsg


def host_default_interfaces(route: str = "/proc/net/route",
                            ipv6_route: str = "/proc/net/ipv6_route") -> dict[int, str]:
    """{family: interface} for the families with a default route on the host (route(8) reads
    the same files: IPv4 in hex, little endian; IPv6 as 32 hex digits and a hex prefix length)."""
    found: dict[int, str] = {}
    for line in _lines(route)[1:]:
        fields = line.split()
        # Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            found.setdefault(AF_INET, fields[0])
    for line in _lines(ipv6_route):
        fields = line.split()
        # dest dest_prefix src src_prefix next_hop metric refcnt use flags device
        if len(fields) == 10 and fields[1] == "00" and int(fields[0], 16) == 0 and fields[9] != "lo":
            found.setdefault(AF_INET6, fields[9])
    return found


def host_gateway(route: str = "/proc/net/route") -> str | None:
    """The IPv4 gateway of the host's default route."""
    for line in _lines(route)[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            return ".".join(str(b) for b in bytes.fromhex(fields[2])[::-1])
    return None


def _lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:  # no IPv6 in this kernel, or no procfs
        return []


def route_events_socket() -> int:
    """A NETLINK_ROUTE socket of the current network namespace, subscribed to IPv4 and IPv6
    route changes; call it before anything configures the namespace (no event is missed)."""
    import _socket  # socket.py's wrappers cost start-up time and add nothing here

    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                          k.NETLINK_ROUTE)
    try:
        sock.bind((0, k.RTMGRP_IPV4_ROUTE | k.RTMGRP_IPV6_ROUTE))
    except OSError:
        sock.close()
        raise
    return sock.detach()


def default_routes_in(data: bytes) -> set[int]:
    """The families of the default routes of the main table that `data` (one read of a route
    events socket) announces as added."""
    families: set[int] = set()
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind = _NLMSGHDR.unpack_from(data, off)[:2]
        if length < _NLMSGHDR.size:
            break
        if kind == k.RTM_NEWROUTE and off + _NLMSGHDR.size + _RTMSG.size <= len(data):
            family, dst_len, _, _, table = _RTMSG.unpack_from(data, off + _NLMSGHDR.size)[:5]
            if dst_len == 0 and table == k.RT_TABLE_MAIN:
                families.add(family)
        off += (length + 3) & ~3  # NLMSG_ALIGN
    return families


def read_events(fd: int) -> bytes:
    """One datagram (one or more messages) from a route events socket."""
    return os.read(fd, 65536)
