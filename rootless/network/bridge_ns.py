"""The bridge namespace of an rl network: `rl:[bridge NAME]`, root of the network's user namespace.

Why one user namespace per network: moving a veth end into another network namespace needs
CAP_NET_ADMIN over the user namespaces owning both namespaces (rtnetlink's IFLA_NET_NS_FD
checks the target's owner), and an unprivileged user holds capabilities only inside namespaces
it created. So this process creates the network's user namespace N (the holder writes the
user's default id maps), a network namespace owned by N with the bridge, and every container of
the network joins N (setns) before it creates its own network namespace, which N then owns too.

In this namespace: br0 with the subnet's gateway address, slirp4netns's tap0 (the default route,
added by the holder's slirp4netns), IPv4 forwarding, and proxy ARP on tap0. Container addresses
are routed, not translated: slirp4netns answers whatever source address reaches it, but it
resolves the reply's destination with ARP on tap0, and proxy ARP (ip-sysctl.rst, proxy_arp)
makes this namespace answer for the container addresses it routes to br0. No iptables needed.

Requests arrive from the holder on a SEQPACKET channel ("tap", "attach" with the container's
network namespace as an fd, "detach"); the DNS responder (rootless.network.dnsd) listens on the
gateway's port 53.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import time

from rootless.kernel import constants as k
from rootless.kernel import libc
from rootless.network.holderlog import note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from rootless.primitives.channel import Channel

BRIDGE = "br0"
TAP = "tap0"
UPSTREAM_DNS = ("10.0.2.3", 53)  # slirp4netns's resolver (its default 10.0.2.0/24)
DNS_TIMEOUT = 5.0
# slirp4netns's resolver unreachable or refusing: answered SERVFAIL without a log line each.
UPSTREAM_DOWN = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH)


def write_sysctl(name: str, value: str) -> None:
    # /proc/sys/net shows the opener's network namespace; root of its owning user namespace
    # may write it.
    with open("/proc/sys/" + name.replace(".", "/"), "w") as f:
        f.write(value)


def keeper_main(chan: Channel, name: str, subnet: str, gateway: str, mapping: Any,
                parent: int) -> NoReturn:
    from rootless.primitives.channel import error_message
    from rootless.primitives.userns import become_root, unshare_user

    step = "create the network's user namespace"
    try:
        lib = libc()
        lib.set_pdeathsig(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        lib.set_name(f"rl:[bridge {name}]"[:15])
        unshare_user(lib)
        chan.send("userns")
        go = chan.recv()
        if not go or go.get("op") != "go":
            os._exit(1)
        become_root(mapping)
        step = "create the network's bridge namespace"
        lib.unshare(k.CLONE_NEWNET)
        keeper = Keeper(lib, subnet, gateway)
        chan.send("ready")
        keeper.serve(chan)
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the holder
        try:
            chan.send("error", **error_message(step, exc))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the holder is gone: nobody to tell
        except OSError as send_exc:
            note("bridge", f"report '{step}' to the holder", send_exc)
        os._exit(1)
    os._exit(0)


class Keeper:
    def __init__(self, lib: Any, subnet: str, gateway: str) -> None:
        from pyroute2 import IPRoute

        self.lib = lib
        self.prefix = int(subnet.partition("/")[2])
        self.gateway = gateway
        self.own_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.ipr = IPRoute()
        ipr = self.ipr
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        ipr.link("add", ifname=BRIDGE, kind="bridge")
        self.bridge = ipr.link_lookup(ifname=BRIDGE)[0]
        ipr.addr("add", index=self.bridge, address=gateway, prefixlen=self.prefix)
        ipr.link("set", index=self.bridge, state="up")
        write_sysctl("net.ipv4.ip_forward", "1")
        self.names: dict[str, str] = {}
        self.owners: dict[str, list[str]] = {}  # ifname → the names it answers for
        self.dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.dns.bind((gateway, 53))
        self.pending: dict[socket.socket, tuple[Any, bytes, float]] = {}

    def serve(self, chan: Channel) -> None:
        from rootless.primitives.channel import error_message

        while True:
            rlist: list[Any] = [chan.fileno(), self.dns, *self.pending]
            ready, _, _ = select.select(rlist, [], [], 1.0 if self.pending else None)
            if chan.fileno() in ready:
                msg, fds = chan.recv_with_fds()
                if msg is None:
                    return  # the holder is gone
                try:
                    reply = self.handle(msg, fds)
                    chan.send("ok", **reply)
                except Exception as exc:  # noqa: BLE001 - reported to the joining container
                    chan.send("error", **error_message(f"network: {msg.get('op')}", exc))
                finally:
                    for fd in fds:
                        os.close(fd)
            if self.dns in ready:
                self.on_query()
            for sock in [s for s in ready if s in self.pending]:
                self.on_upstream(sock)
            self.expire()

    def handle(self, msg: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = msg.get("op")
        if op == "tap":
            # slirp4netns made tap0 and its default route; answer ARP there for the
            # container addresses routed to br0.
            write_sysctl(f"net.ipv4.conf.{TAP}.proxy_arp", "1")
            return {}
        if op == "attach":
            self.attach(msg["ifname"], fds[0], msg["ip"], msg.get("mtu") or 0)
            names = [n.lower() for n in msg.get("names") or [] if n]
            for n in names:
                self.names[n] = msg["ip"]
            self.owners[msg["ifname"]] = names
            return {}
        if op == "detach":
            for n in self.owners.pop(msg["ifname"], []):
                if self.names.get(n) == msg.get("ip"):
                    del self.names[n]
            from pyroute2.netlink.exceptions import NetlinkError

            for index in self.ipr.link_lookup(ifname=msg["ifname"]):
                # Deleting one end deletes the pair; gone already when the container's
                # namespace died first.
                try:
                    self.ipr.link("del", index=index)
                except NetlinkError as exc:
                    if exc.code != errno.ENODEV:
                        raise
            return {}
        raise ValueError(f"unknown request {op!r}")

    def attach(self, ifname: str, netns_fd: int, ip: str, mtu: int) -> None:
        from pyroute2 import IPRoute

        ipr = self.ipr
        peer: dict[str, Any] = {"ifname": "eth0", "net_ns_fd": netns_fd}
        extra: dict[str, Any] = {}
        if mtu:
            peer["mtu"] = extra["mtu"] = mtu
        ipr.link("add", ifname=ifname, kind="veth", peer=peer, **extra)
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, master=self.bridge, state="up")
        # Configure the container's end from inside its namespace: a netlink socket belongs to
        # the namespace its creator was in. setns(CLONE_NEWNET) needs CAP_SYS_ADMIN over the
        # namespace's owner, N, which this process is root of.
        self.lib.setns(netns_fd, k.CLONE_NEWNET)
        try:
            with IPRoute() as inner:
                eth0 = inner.link_lookup(ifname="eth0")[0]
                inner.addr("add", index=eth0, address=ip, prefixlen=self.prefix)
                inner.link("set", index=eth0, state="up")
                inner.route("add", dst="0.0.0.0/0", gateway=self.gateway, oif=eth0)
        finally:
            self.lib.setns(self.own_netns, k.CLONE_NEWNET)

    # -- DNS ------------------------------------------------------------------------------
    def on_query(self) -> None:
        from rootless.network.dnsd import answer

        try:
            packet, client = self.dns.recvfrom(4096)
        except OSError as exc:
            # A UDP socket reports an earlier reply's ICMP "port unreachable" on its next call
            # (ECONNREFUSED); EAGAIN when another wake-up took the datagram.
            if exc.errno not in (errno.ECONNREFUSED, errno.EAGAIN):
                note("bridge", "receive a DNS query", exc)
            return
        reply = answer(packet, self.names)
        if reply is not None:
            self.reply(reply, client)
            return
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            upstream.connect(UPSTREAM_DNS)
            upstream.send(packet)
        except OSError as exc:
            upstream.close()
            if exc.errno not in UPSTREAM_DOWN:
                note("bridge", f"forward a DNS query to {UPSTREAM_DNS[0]}", exc)
            self.fail(packet, client)  # the client hears SERVFAIL, not silence
            return
        self.pending[upstream] = (client, packet, time.monotonic() + DNS_TIMEOUT)

    def on_upstream(self, sock: socket.socket) -> None:
        client, packet, _ = self.pending.pop(sock)
        try:
            reply = sock.recv(65535)
        except OSError as exc:
            sock.close()
            if exc.errno not in UPSTREAM_DOWN:
                note("bridge", f"read the answer of {UPSTREAM_DNS[0]}", exc)
            self.fail(packet, client)
            return
        sock.close()
        self.reply(reply, client)

    def reply(self, data: bytes, client: Any) -> None:
        try:
            self.dns.sendto(data, client)
        except OSError as exc:
            # The client's port closed meanwhile (it gave up): its loss.
            if exc.errno not in (errno.ECONNREFUSED, errno.EAGAIN):
                note("bridge", f"answer the DNS client {client}", exc)

    def expire(self) -> None:
        now = time.monotonic()
        for sock, (client, packet, deadline) in list(self.pending.items()):
            if now >= deadline:
                del self.pending[sock]
                sock.close()
                self.fail(packet, client)

    def fail(self, packet: bytes, client: Any) -> None:
        from rootless.network.dnsd import servfail

        reply = servfail(packet)
        if reply is not None:
            self.reply(reply, client)
