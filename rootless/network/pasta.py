"""pasta (from passt): user-mode networking that copies the host's addresses and routes.

pasta(1) joins the container's user and network namespaces, creates and configures a tap device
(--config-net), and translates its traffic to ordinary sockets of the user. It runs in the
foreground (-f) so PR_SET_PDEATHSIG ties it to rl; it also quits by itself when the namespace
goes away. Readiness: pasta writes its --pid file once the interface is configured; the file is
a FIFO here, so the launcher waits on it with select instead of polling.

Defaults follow podman: --config-net, no automatic port forwarding in either direction
(-t/-u/-T/-U none), and --no-map-gw (the gateway address is not the host's loopback) unless
the user passes the pseudo-option --map-gw. DNS: queries to 169.254.1.1 are forwarded to the
host's first resolver (--dns-forward), which also covers a resolver on the host's loopback.
"""

from __future__ import annotations

import os

from rootless.errors import NetworkError
from rootless.network import NetworkPlan
from rootless.network.spawn import exited, find_program, open_log, reap, spawn, tail_log

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


def host_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 gateway of the host's default route (little-endian hex in /proc/net/route)."""
    try:
        with open(route_file) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                    raw = bytes.fromhex(fields[2])[::-1]
                    return ".".join(str(b) for b in raw)
    except OSError:
        pass
    return None


class PastaPlan(NetworkPlan):
    def __init__(self, user_args: list[str], ports: list[Any], program: str, runtime_dir: str) -> None:
        map_gw = "--map-gw" in user_args
        self.user_args = [a for a in user_args if a != "--map-gw"]
        super().__init__("pasta", needs_go=True, host_ip=host_gateway() if map_gw else None,
                         dns=[DNS_FORWARD], options=user_args)
        self.map_gw = map_gw
        self.ports = ports
        self.program = program
        self.runtime_dir = runtime_dir
        self.pid: int | None = None
        self.log_path: str | None = None
        self.fifo: str | None = None
        self.fifo_fd: int | None = None
        self.pidfd: int | None = None

    def argv(self, netns_pid: int, pid_file: str) -> list[str]:
        given = {FORWARD_OPTIONS[a] for a in self.user_args if a in FORWARD_OPTIONS}
        argv = [self.program, "--config-net", "-f", "-q", "--pid", pid_file,
                "--dns-forward", DNS_FORWARD]
        if not self.map_gw:
            argv.append("--no-map-gw")
        published = port_args(self.ports)
        argv += published
        for flag in ("-t", "-u", "-T", "-U"):
            if flag not in given and flag not in published:
                argv += [flag, "none"]
        argv += self.user_args
        argv += ["--netns", f"/proc/{netns_pid}/ns/net", "--userns", f"/proc/{netns_pid}/ns/user"]
        return argv

    # pasta needs ~20-30 ms to become ready. The launcher starts it as soon as the network
    # namespace exists, right after the user namespace and before the id maps are written
    # (pasta works in a namespace without maps: it only needs the capabilities that setns
    # into a user namespace its owner created gives it), so that time overlaps the maps,
    # PID 1's fork and its mounts.
    early_start = True

    def spawn(self, netns_pid: int, log: Any) -> None:
        from rootless.kernel import libc

        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        self.fifo = os.path.join(self.runtime_dir, f"pasta-{netns_pid}.pid")
        try:
            os.unlink(self.fifo)
        except FileNotFoundError:
            pass
        os.mkfifo(self.fifo, 0o600)
        # Opening the read end first (non-blocking) lets pasta's open() of the pid file succeed.
        self.fifo_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.log_path, log_fd = open_log(self.runtime_dir, f"pasta-{netns_pid}")
        argv = self.argv(netns_pid, self.fifo)
        log("pasta: " + " ".join(argv[1:]))
        try:
            self.pid = spawn(argv, stdout=log_fd, stderr=log_fd)
        finally:
            os.close(log_fd)
        self.pidfd = libc().pidfd_open(self.pid)

    def start(self, netns_pid: int, log: Any) -> None:
        import select

        if self.pid is None:
            self.spawn(netns_pid, log)
        fifo_fd, pidfd = self.fifo_fd, self.pidfd
        try:
            ready, _, _ = select.select([fifo_fd, pidfd], [], [], READY_TIMEOUT)
            ok = fifo_fd in ready and _read_nonblocking(fifo_fd).strip().isdigit()
            if not ok:
                status = exited(self.pid)
                output = tail_log(self.log_path)
                self.stop()
                raise pasta_error(output, status is None)
        finally:
            self._close_fds()
        log(f"pasta ready (pid {self.pid})")

    def _close_fds(self) -> None:
        for fd in (self.fifo_fd, self.pidfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fifo_fd = self.pidfd = None

    def stop(self) -> None:
        self._close_fds()
        if self.pid is not None:
            reap(self.pid)
            self.pid = None
        for path in (self.fifo, self.log_path):
            if path:
                try:
                    os.unlink(path)
                except OSError:
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
