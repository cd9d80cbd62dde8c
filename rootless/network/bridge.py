"""`rl run --network NAME`: the launcher's side of a container-to-container network.

Planning (before any namespace exists), under the network's lock: connect to the network's
holder, starting it first if none runs (rootless.network.netns_holder), and join: the holder
gives an address and the pid of the process that is root of the network's user namespace N.
The launcher's helper then enters N with setns instead of creating a user namespace (N has the
user's default id maps already, so the launcher writes none), and creates the container's
network namespace there. A container with other maps (--userns=keep-id, --uidmap) creates a
user namespace of its own inside N first (rootless.primitives.userns.unshare_user_nested): its
network namespace belongs to that one, which N's root may still enter. Starting: the launcher
sends that namespace to the holder as a file descriptor (SCM_RIGHTS); the holder's bridge
process adds a veth pair, routes and names, and slirp4netns's published ports. The connection
stays open for the container's lifetime (the launcher, its helper and PID 1 share it): its end
is the member's end, however rl ends.

Names: the bridge's DNS responder (rootless.network.dnsd) answers for every member's container
name and hostname, so containers that join later are found too. /etc/resolv.conf points at it.
"""

from __future__ import annotations

import os

from rootless.errors import NetworkError, UsageError
from rootless.network import NetworkPlan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rootless.primitives.channel import Channel

# slirp4netns's alias of the host's loopback, reachable through the bridge namespace's route
# when the network was created with --opt allow_host_loopback=true.
SLIRP_HOST = "10.0.2.2"


class BridgePlan(NetworkPlan):
    def __init__(self, name: str, conn: Channel, joined: dict[str, Any], ports: list[Any]) -> None:
        super().__init__(name, needs_go=True,
                         host_ip=SLIRP_HOST if joined.get("host_loopback") else None,
                         dns=[joined["gateway"]])
        self.conn: Channel | None = conn
        self.ip = joined["ip"]
        self.ports = ports
        # The helper enters the network's user namespace through the keeper's /proc entry; the
        # keeper lives as long as this member's connection is open.
        self.join_userns = f"/proc/{int(joined['keeper'])}/ns/user"

    def start(self, netns_pid: int, log: Any) -> None:
        from rootless.primitives.channel import raise_error

        assert self.conn is not None
        fd = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.conn.send_fd("attach", fd, helper_pid=netns_pid, ports=[
                {"host_ip": m.host_ip, "host_port": m.host_port, "container_port": m.container_port,
                 "protocol": m.protocol} for m in self.ports])
        finally:
            os.close(fd)
        reply = self.conn.recv()
        if reply is None:
            raise NetworkError(f"network {self.mode}: its holder process went away")
        if reply.get("op") == "error":
            self.stop()
            raise_error(reply)
        log(f"network {self.mode}: eth0 {self.ip}")
        for m in self.ports:
            log(f"published {m.describe()}")

    def keep_fds(self) -> tuple[int, ...]:
        # The membership connection: `rl run -d`'s monitor must keep it open.
        return (self.conn.fileno(),) if self.conn is not None else ()

    def stop(self, log: Any = None) -> None:
        if self.conn is not None:
            self.conn.close()  # the holder removes the veth, names and ports
            self.conn = None


def plan(mode: str, spec: Any, ports: list[Any], runtime_dir: str, hostname: str | None = None) -> BridgePlan:
    from rootless.network import ipam, netns_holder
    from rootless.paths import Paths
    from rootless.primitives.channel import raise_error

    del runtime_dir
    name, _, options = mode.partition(":")
    paths = Paths.from_env()
    if options:
        raise UsageError(f"--network {name}: a network name takes no options")
    lock_fd = ipam.lock(paths, name)
    if lock_fd is None:
        raise UsageError(f"network {name!r} not found",
                         hint="use none, host, pasta[:OPTS], slirp4netns[:OPTS] or create it with "
                              "'rl network create'")
    try:
        definition = ipam.load(paths, name)
        if definition is None:
            raise UsageError(f"network {name!r} not found")
        directory = netns_holder.state_dir(paths, name)
        conn = netns_holder.connect(directory)
        if conn is None:
            netns_holder.start(paths, definition, lock_fd)
            conn = netns_holder.connect(directory)
            if conn is None:
                raise NetworkError(f"network {name}: its holder started but does not answer")
        conn.send("join", name=spec.name or "", hostname=hostname or spec.hostname or "")
        reply = conn.recv()
    finally:
        os.close(lock_fd)
    if reply is None or reply.get("op") != "joined":
        conn.close()
        if reply and reply.get("op") == "error":
            raise_error(reply)
        raise NetworkError(f"network {name}: its holder refused the container")
    return BridgePlan(name, conn, reply, ports)
