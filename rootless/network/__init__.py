"""The container's network: mode planning, and the user-mode helpers that give it one.

`plan_network` is called by the launcher before any namespace exists; the plan it returns is
started once the helper has created the network namespace and stopped when the container ends.
"""

from __future__ import annotations

import sys
from typing import Any

from rootless.errors import UsageError


class NetworkPlan:
    """What the launcher needs to know about the network, and the hooks it calls.

    mode       "none", "host", "pasta", "slirp4netns" or a network name
    needs_go   PID 1 must wait for "go" (the network is ready) before exec
    host_ip    the address of the host as the container sees it (host.containers.internal)
    dns        nameservers for the container's /etc/resolv.conf (None: the host's)
    """

    __slots__ = ("mode", "needs_go", "host_ip", "dns", "options")

    def __init__(self, mode: str, needs_go: bool = False, host_ip: str | None = None,
                 dns: list[str] | None = None, options: Any = None) -> None:
        self.mode = mode
        self.needs_go = needs_go
        self.host_ip = host_ip
        self.dns = dns
        self.options = options

    @property
    def new_netns(self) -> bool:
        return self.mode != "host"

    def start(self, netns_pid: int, log: Any) -> None:
        """Attach the user-mode helper to the namespace of netns_pid; return when it is ready."""

    def stop(self) -> None:
        """Stop the helper (idempotent)."""


def plan_network(spec: Any, exposed_ports: list[str] | None = None) -> NetworkPlan:
    mode = spec.network or "none"
    if mode in ("none", "host"):
        if (spec.publish or spec.publish_all) and not spec.quiet:
            sys.stderr.write("Port mappings have been discarded as one of the Host, Container, "
                             "Pod, and None network modes are in use\n")
        return NetworkPlan(mode)
    raise UsageError(f"network mode {mode!r} is not supported yet",
                     hint="use --network none or --network host")
