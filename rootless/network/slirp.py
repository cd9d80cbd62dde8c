"""slirp4netns: user-mode TCP/IP for the container's network namespace.

slirp4netns(1) enters the namespace only to create and configure tap0 (--configure), then works
from the host's namespaces: the container's packets become ordinary sockets of the user.
Readiness is its --ready-fd ("1" once tap0 is configured); its lifetime is bound to rl by
--exit-fd (it quits when the write end closes, i.e. when rl exits, even by SIGKILL) and to the
namespace by PR_SET_PDEATHSIG. Published ports go through its JSON API socket (add_hostfwd).
"""

from __future__ import annotations

import os

from rootless.errors import NetworkError, UsageError
from rootless.network import NetworkPlan
from rootless.network.spawn import exited, find_program, open_log, spawn, stop_helper, tail_log

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms of rl run's start-up
    from typing import Any

DEFAULT_CIDR = "10.0.2.0/24"
DEFAULT_MTU = 65520
READY_TIMEOUT = 10.0
TAP = "tap0"
# libslirp's IPv6 network (not configurable in slirp4netns): the gateway is fd00::2, its
# resolver fd00::3; the guest takes .100 as in IPv4.
GUEST_IPV6, GATEWAY_IPV6 = "fd00::100", "fd00::2"


class SlirpOptions:
    """podman's `slirp4netns:` options."""

    __slots__ = ("allow_host_loopback", "mtu", "cidr", "enable_ipv6", "outbound_addr",
                 "outbound_addr6", "port_handler")

    def __init__(self) -> None:
        self.allow_host_loopback = False
        self.mtu = DEFAULT_MTU
        self.cidr = DEFAULT_CIDR
        self.enable_ipv6 = True  # as podman 4.3's default slirp4netns network
        self.outbound_addr = ""
        self.outbound_addr6 = ""
        self.port_handler = "slirp4netns"


def _bool(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise UsageError(f"slirp4netns option {name}: expected true or false, got {value!r}")


def parse_options(text: str) -> SlirpOptions:
    opts = SlirpOptions()
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name in ("allow_host_loopback", "enable_ipv6"):
            setattr(opts, name, _bool(name, value))
        elif name == "mtu":
            if not value.isdigit() or not 68 <= int(value) <= 65521:
                raise UsageError(f"slirp4netns option mtu: expected 68-65521, got {value!r}")
            opts.mtu = int(value)
        elif name == "cidr":
            addr, _, bits = value.partition("/")
            if addr.count(".") != 3 or not bits.isdigit() or not 8 <= int(bits) <= 25:
                raise UsageError(f"slirp4netns option cidr: expected an IPv4 network like 10.0.2.0/24, got {value!r}")
            opts.cidr = value
        elif name in ("outbound_addr", "outbound_addr6"):
            setattr(opts, name, value)
        elif name == "port_handler":
            if value not in ("slirp4netns", "rootlesskit"):
                raise UsageError(f"slirp4netns option port_handler: expected slirp4netns, got {value!r}")
            # rootlesskit's port driver is not part of rl; slirp4netns's own forwarder serves.
            opts.port_handler = "slirp4netns"
        else:
            raise UsageError(f"unknown slirp4netns option {name!r}",
                             hint="known: allow_host_loopback, mtu, cidr, enable_ipv6, outbound_addr, "
                                  "outbound_addr6, port_handler")
    return opts


def nth_address(cidr: str, n: int) -> str:
    """The n-th address of an IPv4 network (slirp's gateway is .2, DNS .3, the guest .100)."""
    addr = cidr.partition("/")[0]
    a, b, c, d = (int(x) for x in addr.split("."))
    value = (a << 24 | b << 16 | c << 8 | d) + n
    return ".".join(str(value >> s & 255) for s in (24, 16, 8, 0))


class SlirpPlan(NetworkPlan):
    def __init__(self, options: SlirpOptions, ports: list[Any], program: str, runtime_dir: str) -> None:
        gateway = nth_address(options.cidr, 2)
        super().__init__("slirp4netns", needs_go=True,
                         host_ip=gateway if options.allow_host_loopback else None,
                         dns=[nth_address(options.cidr, 3)], options=options)
        self.ports = ports
        self.program = program
        self.runtime_dir = runtime_dir
        self.pid: int | None = None
        self.exit_w: int | None = None
        self.ready_r: int | None = None
        self.api_socket: str | None = None
        self.log_path: str | None = None

    def argv(self, netns_pid: int, ready_fd: int, exit_fd: int) -> list[str]:
        o = self.options
        argv = [self.program, "--configure", f"--mtu={o.mtu}", f"--ready-fd={ready_fd}",
                f"--exit-fd={exit_fd}", "--enable-sandbox", "--enable-seccomp"]
        if o.cidr != DEFAULT_CIDR:
            argv.append(f"--cidr={o.cidr}")
        if not o.allow_host_loopback:
            argv.append("--disable-host-loopback")
        if o.enable_ipv6:
            argv.append("--enable-ipv6")
        if o.outbound_addr:
            argv.append(f"--outbound-addr={o.outbound_addr}")
        if o.outbound_addr6:
            argv.append(f"--outbound-addr6={o.outbound_addr6}")
        if self.api_socket:
            argv.append(f"--api-socket={self.api_socket}")
        # PID form: slirp4netns joins the user namespace and then the network namespace of
        # the helper (the path form with --userns-path fails its setegid(0) here).
        argv += [str(netns_pid), TAP]
        return argv

    # The network namespace exists from the start (rootless.network.NetworkPlan), and
    # slirp4netns starts right after the id maps (its configuring child takes gid 0 in the user
    # namespace, which needs them): its start overlaps PID 1's set-up.
    early_start = True
    spawn_after_maps = True

    def netns_setup(self) -> int | None:
        from rootless.network.tap import configure_ipv6, create_persistent_tap

        # slirp4netns attaches to an existing tap0 as it would create one; a persistent one
        # makes its exit cheaper (rootless.network.tap).
        if create_persistent_tap(TAP) and self.options.enable_ipv6:
            configure_ipv6(TAP, GUEST_IPV6, 64, GATEWAY_IPV6)
        return None

    def running_pid(self) -> int | None:
        return self.pid

    def spawn(self, netns_pid: int, log: Any, events_fd: int | None = None) -> None:
        if self.ports:
            # Relative to slirp4netns's working directory: sun_path holds 108 bytes, and a
            # long XDG_RUNTIME_DIR would not fit (unix(7)).
            self.api_socket = f"slirp4netns-{netns_pid}.sock"
        self.ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exit_r, self.exit_w = os.pipe2(os.O_CLOEXEC)
        self.log_path, log_fd = open_log(self.runtime_dir, f"slirp4netns-{netns_pid}")
        try:
            self.pid = spawn(self.argv(netns_pid, ready_w, exit_r), keep_fds=(ready_w, exit_r),
                             stdout=log_fd, stderr=log_fd, cwd=self.runtime_dir)
        finally:
            for fd in (ready_w, exit_r, log_fd):
                os.close(fd)
        log(f"slirp4netns pid {self.pid}")

    def start(self, netns_pid: int, log: Any) -> None:
        import select

        if self.pid is None:
            self.spawn(netns_pid, log)
        ready_r, self.ready_r = self.ready_r, None
        assert ready_r is not None
        try:
            ready, _, _ = select.select([ready_r], [], [], READY_TIMEOUT)
            data = os.read(ready_r, 1) if ready else b""
            if data != b"1":
                status = exited(self.pid) if self.pid is not None else 0
                if status is not None:
                    self.pid = None  # reaped: its pid may be reused
                output = tail_log(self.log_path)
                self.stop()
                what = "did not become ready" if status is None else "exited"
                raise NetworkError(f"slirp4netns {what}: {output or 'no output'}",
                                   hint="rl doctor checks /dev/net/tun and the user namespace set-up")
            log("slirp4netns ready")
            for m in self.ports:
                self.add_hostfwd(m)
                log(f"published {m.describe()}")
        finally:
            os.close(ready_r)

    def add_hostfwd(self, m: Any) -> None:
        import json
        import socket

        request = {"execute": "add_hostfwd", "arguments": {
            "proto": m.protocol, "host_addr": m.host_ip or "0.0.0.0", "host_port": m.host_port,
            "guest_port": m.container_port}}
        assert self.api_socket is not None
        dir_fd = os.open(self.runtime_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(READY_TIMEOUT)
                # A short name for a long path: the directory through its /proc fd link.
                s.connect(f"/proc/self/fd/{dir_fd}/{self.api_socket}")
                s.sendall(json.dumps(request).encode())
                s.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := s.recv(4096):
                    reply += chunk
        finally:
            os.close(dir_fd)
        answer = json.loads(reply or b"{}")
        if "error" in answer or "return" not in answer:
            desc = str(answer.get("error", {}).get("desc", reply.decode(errors="replace")))
            self.stop()
            from rootless.network.ports import port_error

            if "in use" in desc.lower():
                import errno

                raise port_error(m, OSError(errno.EADDRINUSE, desc))
            raise NetworkError(f"slirp4netns could not publish {m.describe()}: {desc}")

    def stop(self, log: Any = None) -> None:
        for fd in (self.exit_w, self.ready_r):  # --exit-fd: slirp4netns quits on its EOF
            if fd is not None:
                os.close(fd)
        self.exit_w = self.ready_r = None
        if self.pid is not None:
            stop_helper(self.pid, None, log)
            self.pid = None
        api = os.path.join(self.runtime_dir, self.api_socket) if self.api_socket else None
        for path in (api, self.log_path):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.api_socket = self.log_path = None


def plan(options_text: str, ports: list[Any], runtime_dir: str) -> SlirpPlan:
    program = find_program("slirp4netns")
    if program is None:
        raise NetworkError("slirp4netns is not installed",
                           hint="install it (Debian: apt install slirp4netns) or use --network pasta|none")
    return SlirpPlan(parse_options(options_text), ports, program, runtime_dir)
