"""The container's resolv.conf when it copies the host's.

A resolver on the host's loopback (systemd-resolved's stub 127.0.0.53, a local dnsmasq on
127.0.0.1) cannot be reached from a container's own network namespace: its 127.0.0.0/8 is the
container's. systemd-resolved writes the servers it forwards to in /run/systemd/resolve/
resolv.conf; those replace the loopback ones (podman does the same). With --network host the
host's file is kept as it is: the loopback there is the host's.
"""

from __future__ import annotations

SYSTEMD_UPSTREAM = "/run/systemd/resolve/resolv.conf"


def is_loopback(server: str) -> bool:
    return server.startswith("127.") or server == "::1"


def nameservers(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append(fields[1])
    return out


def without_local_stub(text: str, upstream_path: str = SYSTEMD_UPSTREAM) -> str:
    """resolv.conf text with loopback nameservers replaced by systemd-resolved's upstreams."""
    servers = nameservers(text)
    if not any(is_loopback(s) for s in servers):
        return text
    try:
        with open(upstream_path) as f:
            upstream = [s for s in nameservers(f.read()) if not is_loopback(s)]
    except (FileNotFoundError, NotADirectoryError):  # no systemd-resolved: no upstream list
        upstream = []
    lines: list[str] = []
    inserted = False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver" and is_loopback(fields[1]):
            if not inserted:
                lines.extend(f"nameserver {s}" for s in upstream if s not in servers)
                inserted = True
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"
