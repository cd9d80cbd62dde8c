"""The container's network: mode planning, and the user-mode helpers that give it one.

`plan_network` is called by the launcher before any namespace exists; the plan it returns is
started once the helper has created the network namespace and stopped when the container ends.
"""

from __future__ import annotations

import sys

from rootless.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms of rl run's start-up
    from typing import Any


class NetworkPlan:
    """What the launcher needs to know about the network, and the hooks it calls.

    mode       "none", "host", "pasta", "slirp4netns" or a network name
    needs_go   PID 1 must wait for "go" (the network is ready) before exec
    host_ip    the address of the host as the container sees it (host.containers.internal)
    dns        nameservers for the container's /etc/resolv.conf (None: the host's)
    join_userns  a user namespace (a /proc/PID/ns/user path) the helper enters with setns
               instead of creating one; it has the default id maps already, so the launcher
               writes none (an `rl network`: rootless.network.bridge)
    """

    __slots__ = ("mode", "needs_go", "host_ip", "dns", "options", "join_userns")

    def __init__(self, mode: str, needs_go: bool = False, host_ip: str | None = None,
                 dns: list[str] | None = None, options: Any = None) -> None:
        self.mode = mode
        self.needs_go = needs_go
        self.host_ip = host_ip
        self.dns = dns
        self.options = options
        self.join_userns: str | None = None

    @property
    def new_netns(self) -> bool:
        return self.mode != "host"

    # True when the helper should be started as soon as the network namespace exists, before
    # the id maps (see PastaPlan); then the helper unshares CLONE_NEWNET right after
    # CLONE_NEWUSER and the launcher calls spawn() early and start() later.
    early_start = False
    # With early_start: spawn() only once the id maps are written (else right after the user
    # namespace exists, before them).
    spawn_after_maps = False

    def netns_setup(self) -> int | None:
        """Run by rl's helper inside the new network namespace, before the user-mode helper
        starts (early_start plans only): prepare what it attaches to. A descriptor returned
        goes to the launcher (and is closed here), which gives it to spawn()."""
        return None

    def spawn(self, netns_pid: int, log: Any, events_fd: int | None = None) -> None:
        """Start the user-mode helper without waiting for it (early_start plans only)."""

    def running_pid(self) -> int | None:
        """The user-mode helper's pid once spawn() started it (rl's helper kills it as soon as
        the container's PID 1 is gone; stop() reaps it)."""
        return None

    def start(self, netns_pid: int, log: Any) -> None:
        """Attach the user-mode helper to the namespace of netns_pid; return when it is ready."""

    def stop(self, log: Any = None) -> None:
        """Stop the helper and reap it (idempotent)."""

    def keep_fds(self) -> tuple[int, ...]:
        """Descriptors the plan holds that must survive a close-all (the -d monitor)."""
        return ()


DISCARDED_NOTICE = ("Port mappings have been discarded as one of the Host, Container, Pod, and None "
                    "network modes are in use\n")


def default_mode(path: str | None = None) -> str:
    """slirp4netns when installed, else pasta, else none.

    podman 4.3's rootless default is slirp4netns too (podman 5 prefers pasta). Measured here
    (scripts/bench.py network; docs/performance.md), both reaped before rl exits: slirp4netns
    adds ~3 ms to a run, pasta ~20 ms — its start costs ~10 ms of CPU (it zeroes large buffers)
    and its exit ~10-15 ms. Both give IPv4 and IPv6 (rl configures slirp4netns's IPv6 before the
    command starts), DNS, and no way to the host's loopback unless asked."""
    from rootless.network.spawn import find_program

    for program in ("slirp4netns", "pasta"):
        if find_program(program, path):
            return program
    return "none"


def plan_network(spec: Any, exposed_ports: list[str] | None = None,
                 hostname: str | None = None) -> NetworkPlan:
    """Parse --network and the port flags into a plan; probe host ports. Starts no helper
    (joining an `rl network` may start the network's holder: rootless.network.bridge)."""
    mode = spec.network or ""
    if not mode:
        mode = default_mode()
        if mode == "none" and not spec.quiet:
            sys.stderr.write("rl: neither pasta nor slirp4netns is installed: "
                             "the container has no network (--network none)\n")
    name, _, options = mode.partition(":")
    if name in ("none", "host"):
        if options:
            raise UsageError(f"--network {name} takes no options")
        if (spec.publish or spec.publish_all) and not spec.quiet:
            sys.stderr.write(DISCARDED_NOTICE)
        return NetworkPlan(name)
    from rootless.network.ports import plan_ports, reserve_host_ports

    ports = plan_ports(spec.publish or [], bool(spec.publish_all), exposed_ports or [])
    reserve_host_ports(ports)
    runtime_dir = _runtime_dir()
    if name in ("pasta", "private", "bridge") or (name == "slirp4netns"):
        if name in ("private", "bridge"):
            name = default_mode()
            if name == "none":
                raise UsageError(f"--network {mode}: neither pasta nor slirp4netns is installed")
        if name == "pasta":
            from rootless.network import pasta

            return pasta.plan(options, ports, runtime_dir)
        from rootless.network import slirp

        return slirp.plan(options, ports, runtime_dir)
    from rootless.network import bridge

    return bridge.plan(mode, spec, ports, runtime_dir, hostname)


def _runtime_dir() -> str:
    import os

    from rootless.paths import Paths

    # The string view: pathlib costs ~3 ms of every `rl run` with a network.
    return os.path.join(Paths.from_env().runtime_dir, "net")
