"""Published ports: `-p [IP:][HOSTPORT:]CONTAINERPORT[/PROTO]`, ranges, `-P` — parsed as data.

The host side is probed here, before any namespace exists, so a port that cannot be had fails
with a clear message instead of a helper's log line: EADDRINUSE is exit 126 (podman's code for
"the container cannot be started as asked"), EACCES below net.ipv4.ip_unprivileged_port_start
names the sysctl (an unprivileged user may bind only ports at or above it, ip(7)).
"""

from __future__ import annotations

import errno

from rootless.errors import NetworkError, UsageError

PROTOCOLS = ("tcp", "udp")
SYSCTL_UNPRIVILEGED_PORT = "/proc/sys/net/ipv4/ip_unprivileged_port_start"


class PortMapping:
    """One published port: host_ip ("" = every address), host_port, container_port, protocol."""

    __slots__ = ("host_ip", "host_port", "container_port", "protocol")

    def __init__(self, host_ip: str, host_port: int, container_port: int, protocol: str) -> None:
        self.host_ip = host_ip
        self.host_port = host_port
        self.container_port = container_port
        self.protocol = protocol

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortMapping) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def key(self) -> tuple[str, int, int, str]:
        return (self.host_ip, self.host_port, self.container_port, self.protocol)

    def __repr__(self) -> str:
        return f"PortMapping{self.key()!r}"

    def describe(self) -> str:
        ip = self.host_ip or "0.0.0.0"
        return f"{ip}:{self.host_port} -> {self.container_port}/{self.protocol}"


def _port(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"invalid {what} {text!r} in --publish {spec!r}: expected 1-65535")
    return int(text)


def _range(text: str, what: str, spec: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    lo = _port(first, what, spec)
    hi = _port(last, what, spec) if sep else lo
    if hi < lo:
        raise UsageError(f"invalid {what} range {text!r} in --publish {spec!r}")
    return lo, hi


def parse_publish(spec: str) -> list[PortMapping]:
    """Parse one -p value. HOSTPORT omitted or 0 means "any free port" (host_port 0)."""
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in PROTOCOLS:
        raise UsageError(f"invalid protocol {proto!r} in --publish {spec!r}: expected tcp or udp")
    host_ip = ""
    if body.startswith("["):  # [IPv6]:HOSTPORT:PORT
        end = body.find("]")
        if end < 0:
            raise UsageError(f"invalid --publish {spec!r}: unterminated [IPv6 address]")
        host_ip, body = body[1:end], body[end + 1:].lstrip(":")
    parts = body.split(":")
    if len(parts) == 3:
        host_ip, host, ctr = host_ip or parts[0], parts[1], parts[2]
    elif len(parts) == 2:
        host, ctr = parts
    elif len(parts) == 1:
        host, ctr = "", parts[0]
    else:
        raise UsageError(f"invalid --publish {spec!r}: expected [IP:][HOSTPORT:]PORT[/PROTO]")
    c_lo, c_hi = _range(ctr, "container port", spec)
    if not host or host == "0":
        return [PortMapping(host_ip, 0, p, proto) for p in range(c_lo, c_hi + 1)]
    h_lo, h_hi = _range(host, "host port", spec)
    if h_hi - h_lo != c_hi - c_lo:
        raise UsageError(f"invalid --publish {spec!r}: host and container ranges differ in size")
    return [PortMapping(host_ip, h_lo + i, c_lo + i, proto) for i in range(c_hi - c_lo + 1)]


def parse_exposed(exposed: list[str]) -> list[PortMapping]:
    """The image's ExposedPorts ("80/tcp", "53/udp") for -P: each to a free host port."""
    out = []
    for item in exposed:
        out.extend(parse_publish(item if "/" in item else item + "/tcp"))
    return out


def plan_ports(publish: list[str], publish_all: bool, exposed: list[str]) -> list[PortMapping]:
    mappings: list[PortMapping] = []
    for spec in publish:
        mappings.extend(parse_publish(spec))
    if publish_all:
        taken = {(m.container_port, m.protocol) for m in mappings}
        mappings.extend(m for m in parse_exposed(exposed) if (m.container_port, m.protocol) not in taken)
    seen: set[tuple[str, int, str]] = set()
    for m in mappings:
        key = (m.host_ip, m.host_port, m.protocol)
        if m.host_port and key in seen:
            raise UsageError(f"host port {m.host_port}/{m.protocol} is published twice")
        seen.add(key)
    return mappings


def unprivileged_port_start(path: str = SYSCTL_UNPRIVILEGED_PORT) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:  # before Linux 4.11 the limit was fixed at 1024
        return 1024


def reserve_host_ports(mappings: list[PortMapping]) -> None:
    """Probe each host port by binding it, and pick free ones for host_port 0 (in place).

    The probe socket is closed again: the helper binds the port for real a few milliseconds
    later. A port taken in between still fails, with the helper's own message.
    """
    if not mappings:
        return  # socket.py costs ~1.5 ms of every `rl run` with a network
    import socket

    for m in mappings:
        family = socket.AF_INET6 if ":" in m.host_ip else socket.AF_INET
        kind = socket.SOCK_STREAM if m.protocol == "tcp" else socket.SOCK_DGRAM
        with socket.socket(family, kind) as s:
            if kind == socket.SOCK_STREAM:
                # As the helpers do: a connection in TIME_WAIT must not block the port, a
                # listener must.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((m.host_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0"), m.host_port))
            except OSError as exc:
                raise port_error(m, exc) from None
            if not m.host_port:
                m.host_port = s.getsockname()[1]


def port_error(m: PortMapping, exc: OSError) -> NetworkError:
    where = f"{m.host_ip or '0.0.0.0'}:{m.host_port}/{m.protocol}"
    if exc.errno == errno.EADDRINUSE:
        return NetworkError(f"cannot publish {where}: address already in use",
                            hint="choose another host port (-p HOSTPORT:PORT) or stop what uses it",
                            exit_code=126)
    if exc.errno == errno.EACCES and m.host_port < unprivileged_port_start():
        start = unprivileged_port_start()
        return NetworkError(
            f"cannot publish {where}: ports below {start} are privileged "
            f"(net.ipv4.ip_unprivileged_port_start = {start})",
            hint=f"use a host port >= {start}, or as root: sysctl net.ipv4.ip_unprivileged_port_start="
                 f"{m.host_port}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return NetworkError(f"cannot publish {where}: the host has no address {m.host_ip}")
    return NetworkError(f"cannot publish {where}: {exc.strerror} ({errno.errorcode.get(exc.errno or 0, '?')})")
