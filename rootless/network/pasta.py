"""pasta (from passt): user-mode networking that copies the host's addresses and routes.

pasta(1) joins the container's user and network namespaces, configures a tap device
(--config-net), and translates its traffic to ordinary sockets of the user. It runs in the
foreground (-f) so PR_SET_PDEATHSIG ties it to rl; it also quits by itself when the namespace
goes away. The tap device is rl's (rootless.network.tap: a persistent one makes pasta's exit
cheaper), named as pasta would name it (-I, the host's interface with the default route).

Readiness. pasta writes its --pid file (a FIFO here, waited on with select) when it is
completely ready, ~15-25 ms after it starts; but it configures the namespace (addresses, then
the default routes) within ~5 ms, and the rest is its own set-up (buffers, socket pools). The
tap device queues the container's first packets until pasta reads them, so once the default
routes of every family pasta copies are in place (rtnetlink announces them to a socket the rl
helper opened in the namespace), the container may start. Published ports (pasta binds them
after the configuration, and a port in use must fail the run) and options of the user's wait
for the pid file, as does anything unexpected.

Defaults follow podman: --config-net, no automatic port forwarding in either direction
(-t/-u/-T/-U none), and --no-map-gw (the gateway address is not the host's loopback) unless
the user passes the pseudo-option --map-gw. DNS: queries to 169.254.1.1 are forwarded to the
host's first resolver (--dns-forward), which also covers a resolver on the host's loopback.
"""

from __future__ import annotations

import os

from rootless.errors import NetworkError
from rootless.network import NetworkPlan
from rootless.network.routes import AF_INET, AF_INET6, host_default_interfaces, host_gateway
from rootless.network.spawn import exited, find_program, open_log, spawn, stop_helper, tail_log

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~4 ms of rl run's start-up
    from typing import Any

DNS_FORWARD = "169.254.1.1"
READY_TIMEOUT = 10.0
# Options whose presence replaces one of rl's defaults.
FORWARD_OPTIONS = {"-t": "-t", "--tcp-ports": "-t", "-u": "-u", "--udp-ports": "-u",
                   "-T": "-T", "--tcp-ns": "-T", "-U": "-U", "--udp-ns": "-U"}


def parse_options(text: str) -> list[str]:
    """`pasta:--opt,value,--opt2` → argv words (podman splits on commas)."""
    return [w for w in text.split(",") if w] if text else []


def port_args(ports: list[Any]) -> list[str]:
    """-t/-u specs for pasta: "[ADDR/]HOSTPORT:CONTAINERPORT", one per mapping."""
    out: list[str] = []
    for m in ports:
        flag = "-t" if m.protocol == "tcp" else "-u"
        addr = f"{m.host_ip}/" if m.host_ip else ""
        out += [flag, f"{addr}{m.host_port}:{m.container_port}"]
    return out


class PastaPlan(NetworkPlan):
    def __init__(self, user_args: list[str], ports: list[Any], program: str, runtime_dir: str,
                 host_interfaces: dict[int, str] | None = None) -> None:
        map_gw = "--map-gw" in user_args
        self.user_args = [a for a in user_args if a != "--map-gw"]
        super().__init__("pasta", needs_go=True, host_ip=host_gateway() if map_gw else None,
                         dns=[DNS_FORWARD], options=user_args)
        self.map_gw = map_gw
        self.ports = ports
        self.program = program
        self.runtime_dir = runtime_dir
        if host_interfaces is None:
            host_interfaces = host_default_interfaces()
        # pasta copies the families that have a default route on the host, from the interface
        # of the IPv4 one (else the IPv6 one), and names the container's interface after it.
        self.families = set(host_interfaces)
        self.ifname = host_interfaces.get(AF_INET) or host_interfaces.get(AF_INET6)
        # Only rl's own argument set: a user's option may change interface, families or names.
        self.route_ready = bool(self.families) and not ports and not self.user_args
        self.pid: int | None = None
        self.log_path: str | None = None
        self.fifo: str | None = None
        self.fifo_fd: int | None = None
        self.pidfd: int | None = None
        self.events_fd: int | None = None

    def argv(self, netns_pid: int, pid_file: str) -> list[str]:
        given = {FORWARD_OPTIONS[a] for a in self.user_args if a in FORWARD_OPTIONS}
        argv = [self.program, "--config-net", "-f", "-q", "--pid", pid_file,
                "--dns-forward", DNS_FORWARD]
        if not self.map_gw:
            argv.append("--no-map-gw")
        tap = self.tap_name()
        if tap:
            argv += ["-I", tap]
        published = port_args(self.ports)
        argv += published
        for flag in ("-t", "-u", "-T", "-U"):
            if flag not in given and flag not in published:
                argv += [flag, "none"]
        argv += self.user_args
        argv += ["--netns", f"/proc/{netns_pid}/ns/net", "--userns", f"/proc/{netns_pid}/ns/user"]
        return argv

    def tap_name(self) -> str | None:
        """The device rl creates for pasta; None when the user names it (-I) or pasta has no
        host interface to copy (it then fails with its own message)."""
        if any(a in ("-I", "--ns-ifname") or a.startswith("--ns-ifname=") for a in self.user_args):
            return None
        return self.ifname

    # pasta needs ~20-30 ms to become ready. The launcher starts it as soon as the network
    # namespace exists, right after the user namespace and before the id maps are written
    # (pasta works in a namespace without maps: it only needs the capabilities that setns
    # into a user namespace its owner created gives it), so that time overlaps the maps,
    # PID 1's fork and its mounts.
    early_start = True

    def netns_setup(self) -> int | None:
        from rootless.network.routes import route_events_socket
        from rootless.network.tap import create_persistent_tap

        name = self.tap_name()
        if name:
            create_persistent_tap(name)
        return route_events_socket() if self.route_ready else None

    def spawn(self, netns_pid: int, log: Any, events_fd: int | None = None) -> None:
        from rootless.kernel import libc

        self.events_fd = events_fd
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        self.fifo = os.path.join(self.runtime_dir, f"pasta-{netns_pid}.pid")
        try:
            os.unlink(self.fifo)
        except FileNotFoundError:
            pass
        os.mkfifo(self.fifo, 0o600)
        # Opening the read end first (non-blocking) lets pasta's open() of the pid file succeed;
        # it stays open until pasta is stopped, or a late open() would block pasta for good.
        self.fifo_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.log_path, log_fd = open_log(self.runtime_dir, f"pasta-{netns_pid}")
        argv = self.argv(netns_pid, self.fifo)
        log("pasta: " + " ".join(argv[1:]))
        try:
            self.pid = spawn(argv, stdout=log_fd, stderr=log_fd)
        finally:
            os.close(log_fd)
        self.pidfd = libc().pidfd_open(self.pid)

    def running_pid(self) -> int | None:
        return self.pid

    def start(self, netns_pid: int, log: Any) -> None:
        if self.pid is None:
            self.spawn(netns_pid, log)
        how = self._wait_ready()
        if how is None:
            status = exited(self.pid) if self.pid is not None else 0
            if status is not None:
                self.pid = None  # reaped: its pid may be reused
            output = tail_log(self.log_path)
            self.stop()
            raise pasta_error(output, status is None)
        log(f"pasta {how} (pid {self.pid})")

    def _wait_ready(self) -> str | None:
        """"ready" (its pid file), "configured" (the default routes), or None (it exited, or
        did neither within READY_TIMEOUT)."""
        import select
        import time

        from rootless.network.routes import default_routes_in, read_events

        assert self.fifo_fd is not None and self.pidfd is not None
        watched = [self.fifo_fd, self.pidfd]
        if self.events_fd is not None:
            watched.append(self.events_fd)
        seen: set[int] = set()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            ready = select.select(watched, [], [], max(0.0, left))[0] if left > 0 else []
            if not ready:
                return None
            if self.fifo_fd in ready:
                return "ready" if _read_nonblocking(self.fifo_fd).strip().isdigit() else None
            if self.events_fd is not None and self.events_fd in ready:
                seen |= default_routes_in(read_events(self.events_fd))
                if self.families <= seen:
                    return "configured"
            if self.pidfd in ready:
                return None

    def _close_fds(self) -> None:
        for fd in (self.fifo_fd, self.pidfd, self.events_fd):
            if fd is not None:
                os.close(fd)
        self.fifo_fd = self.pidfd = self.events_fd = None

    def stop(self, log: Any = None) -> None:
        if self.pid is not None:
            stop_helper(self.pid, self.pidfd, log)
            self.pid = None
        self._close_fds()
        for path in (self.fifo, self.log_path):
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        self.fifo = self.log_path = None


def _read_nonblocking(fd: int) -> str:
    # pasta writes "PID\n" with one write(); select said it arrived (or that pasta closed it).
    try:
        return os.read(fd, 64).decode(errors="replace")
    except BlockingIOError:
        return ""


def pasta_error(output: str, timed_out: bool) -> NetworkError:
    lower = output.lower()
    if "in use" in lower:
        return NetworkError(f"pasta could not publish a port: address already in use ({output})",
                            exit_code=126)
    if "permission denied" in lower and "tun" in lower:
        return NetworkError(f"pasta cannot open /dev/net/tun: {output}",
                            hint="/dev/net/tun must be mode 0666 (udev's default); rl doctor checks it")
    what = "did not become ready" if timed_out else "exited"
    return NetworkError(f"pasta {what}: {output or 'no output'}",
                        hint="try --network slirp4netns, or rl doctor")


def plan(options_text: str, ports: list[Any], runtime_dir: str) -> PastaPlan:
    program = find_program("pasta")
    if program is None:
        raise NetworkError("pasta is not installed",
                           hint="install it (Debian: apt install passt) or use --network slirp4netns|none")
    return PastaPlan(parse_options(options_text), ports, program, runtime_dir)
