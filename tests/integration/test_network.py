"""Networking end to end: none, host, slirp4netns, pasta, published ports, DNS, clean-up.

Traffic goes only to 127.0.0.1 and to namespaces the tests create. With pasta the container
copies the host's addresses and routes, so only loopback forwarding (-T) and ports published
on 127.0.0.1 are used; with slirp4netns, 10.0.2.2 is the host's loopback only after the test
checked that the container's default route is slirp's tap0.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import need, need_tool

pytestmark = pytest.mark.integration

HELPERS = ["pasta", "slirp4netns"]
GET = 'printf "GET /probe.txt HTTP/1.0\\r\\n\\r\\n" | nc -w 5 {host} {port}'


def need_tun() -> None:
    need(os.access("/dev/net/tun", os.R_OK | os.W_OK),
         "/dev/net/tun is not read-write for this user (udev makes it 0666; scripts/test.sh must too)")


def need_helper(name: str) -> None:
    need_tool(name)
    need_tun()


def serve_probe(root: Path, text: str, host: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server on the host's `host` (a loopback address) serving /probe.txt."""
    root.mkdir()
    (root / "probe.txt").write_text(text)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def host_server(tmp_path: Path):
    """An HTTP server on the host's 127.0.0.1 serving /probe.txt."""
    server = serve_probe(tmp_path / "www", "probe-from-the-host\n")
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_net(rl, rootfs, network: str, script: str, opts: tuple[str, ...] = (), **kw):
    return rl("run", "--rm", "--network", network, *opts, "--rootfs", str(rootfs), "sh", "-c", script, **kw)


def net_files_left(rl) -> list[str]:
    d = rl.runtime / "net"
    return sorted(os.listdir(d)) if d.exists() else []


# -- none and host ---------------------------------------------------------------------------

def test_none_has_lo_up_and_reaches_nothing(rl, busybox_rootfs, host_server):
    r = run_net(rl, busybox_rootfs, "none",
                f"ip -o link; echo routes:; ip route; echo; {GET.format(host='127.0.0.1', port=host_server)}"
                "; echo rc=$?")
    links = [ln for ln in r.stdout.splitlines() if ": <" in ln]
    assert len(links) == 1 and links[0].split(":")[1].strip() == "lo", r.stdout
    assert "UP" in links[0].split("<")[1].split(">")[0].split(","), r.stdout
    routes = r.stdout.split("routes:")[1].split("rc=")[0]
    assert "default" not in routes and "probe-from-the-host" not in r.stdout
    assert "rc=1" in r.stdout, r.stdout + r.stderr


def test_host_sees_the_hosts_interfaces(rl, busybox_rootfs):
    r = run_net(rl, busybox_rootfs, "host", "ls /sys/class/net; echo --; cat /etc/resolv.conf")
    assert r.returncode == 0, r.stderr
    inside = sorted(r.stdout.split("--")[0].split())
    assert inside == sorted(os.listdir("/sys/class/net"))
    assert r.stdout.split("--\n")[1] == Path("/etc/resolv.conf").read_text()


def test_publish_with_none_is_discarded_with_a_notice(rl, busybox_rootfs):
    r = run_net(rl, busybox_rootfs, "none", "true", opts=("-p", "8080:80"))
    assert r.returncode == 0, r.stderr
    assert "Port mappings have been discarded" in r.stderr


def test_unknown_network_is_a_usage_error(rl, busybox_rootfs):
    r = run_net(rl, busybox_rootfs, "no-such-net-xyz", "true")
    assert r.returncode == 125
    assert "not found" in r.stderr


# -- reaching the host's loopback ------------------------------------------------------------

def test_slirp4netns_reaches_host_loopback_only_when_allowed(rl, busybox_rootfs, host_server):
    need_helper("slirp4netns")
    # Refuse to send anything unless the default route is slirp's tap0: 10.0.2.2 is then
    # slirp's alias of the host's loopback, not an address outside the machine.
    guard = 'ip route | grep -q "^default via 10.0.2.2 dev tap0" || { echo NOT-SLIRP; exit 99; }; '
    get = GET.format(host="10.0.2.2", port=host_server)
    r = run_net(rl, busybox_rootfs, "slirp4netns:allow_host_loopback=true", guard + get)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "probe-from-the-host" in r.stdout
    r = run_net(rl, busybox_rootfs, "slirp4netns", guard + get + "; echo rc=$?")
    assert "NOT-SLIRP" not in r.stdout
    assert "probe-from-the-host" not in r.stdout and "rc=1" in r.stdout, r.stdout + r.stderr
    r = run_net(rl, busybox_rootfs, "slirp4netns:allow_host_loopback=true", "grep host.containers /etc/hosts")
    assert r.stdout.split()[0] == "10.0.2.2"
    assert net_files_left(rl) == []


def test_pasta_reaches_host_loopback_through_explicit_forwarding(rl, busybox_rootfs, host_server):
    need_helper("pasta")
    get = GET.format(host="127.0.0.1", port=host_server)
    r = run_net(rl, busybox_rootfs, f"pasta:-T,{host_server}", get)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "probe-from-the-host" in r.stdout
    # Without -T the container's 127.0.0.1 is its own.
    r = run_net(rl, busybox_rootfs, "pasta", get + "; echo rc=$?")
    assert "probe-from-the-host" not in r.stdout and "rc=1" in r.stdout, r.stdout + r.stderr
    assert net_files_left(rl) == []


def test_slirp4netns_has_ipv6_from_the_first_instruction(rl, busybox_rootfs, tmp_path):
    """IPv6 as podman 4.3's slirp4netns network has it, but configured before the command
    starts (slirp4netns alone leaves it to SLAAC, 2-4 s later): fd00::2 is slirp's alias of
    the host's ::1 when host loopback is allowed."""
    need_helper("slirp4netns")
    try:
        server = serve_probe(tmp_path / "www6", "probe-over-ipv6\n", "::1")
    except OSError as exc:
        need(False, f"the host has no IPv6 loopback: {exc}")
    try:
        guard = ('ip -6 route | grep -q "^default via fd00::2 dev tap0" || { echo NOT-SLIRP; exit 99; }; ')
        get = GET.format(host="fd00::2", port=server.server_address[1])
        r = run_net(rl, busybox_rootfs, "slirp4netns:allow_host_loopback=true", guard + get)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "probe-over-ipv6" in r.stdout
        r = run_net(rl, busybox_rootfs, "slirp4netns", guard + get + "; echo rc=$?")
        assert "NOT-SLIRP" not in r.stdout and "probe-over-ipv6" not in r.stdout, r.stdout
        r = run_net(rl, busybox_rootfs, "slirp4netns:enable_ipv6=false",
                    "ip -6 -o addr show scope global | wc -l; ip -6 route | grep -c ^default")
        assert r.stdout.split() == ["0", "0"], r.stdout + r.stderr
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("helper", HELPERS)
def test_the_network_is_configured_when_the_command_starts(rl, busybox_rootfs, helper):
    """pasta's readiness is its default routes, not its pid file (rootless.network.pasta):
    whatever the signal, the command's first instruction sees addresses and routes."""
    from rootless.network.routes import AF_INET6, host_default_interfaces

    need_helper(helper)
    v6 = helper == "slirp4netns" or AF_INET6 in host_default_interfaces()
    script = ("ip -4 route | grep -c ^default; ip -6 route | grep -c ^default; "
              "ip -6 -o addr show scope global | grep -v tentative | wc -l")
    for i in range(5):
        r = run_net(rl, busybox_rootfs, helper, script)
        assert r.returncode in (0, 1), r.stderr
        assert r.stdout.split() == ["1", "1" if v6 else "0", "1" if v6 else "0"], (i, r.stdout)
    if helper == "pasta":
        r = run_net(rl, busybox_rootfs, helper, "true", opts=("--log-level", "debug"))
        # The launcher's debug line says which signal it took (the routes, not the pid file).
        assert "pasta configured (pid" in r.stderr, r.stderr


def test_the_default_network_offers_ipv4_ipv6_dns_and_no_host_loopback(rl, busybox_rootfs, host_server):
    """What `rl run IMAGE` gets without --network: slirp4netns when installed (the faster to
    start and reap of the two here, and podman 4.3's default), IPv4 and IPv6 routes from the
    first instruction, a resolver, and not the host's loopback."""
    need_helper("slirp4netns")
    need_helper("pasta")
    get = GET.format(host="10.0.2.2", port=host_server)
    r = rl("run", "--rm", "--rootfs", str(busybox_rootfs), "sh", "-c",
           "ip -4 route | grep -c '^default via 10.0.2.2 dev tap0'; ip -6 route | grep -c ^default; "
           f"grep -c ^nameserver /etc/resolv.conf; {get}; echo rc=$?")
    out = r.stdout.split()
    assert out[:3] == ["1", "1", "1"], r.stdout + r.stderr
    assert "probe-from-the-host" not in r.stdout and "rc=1" in r.stdout, r.stdout


def test_no_device_of_a_container_reaches_the_host(rl, busybox_rootfs):
    """The tap devices rl creates persist until their namespace goes: the kernel deletes them
    then, never moves them to the host's namespace."""
    before = sorted(os.listdir("/sys/class/net"))
    for helper in HELPERS:
        need_helper(helper)
        assert run_net(rl, busybox_rootfs, helper, "true").returncode == 0
    deadline = time.monotonic() + 10
    while sorted(os.listdir("/sys/class/net")) != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(os.listdir("/sys/class/net")) == before


# -- published ports -------------------------------------------------------------------------

def http_get(port: int, deadline: float) -> str:
    """GET / from 127.0.0.1:port, retrying until the server inside answers or the deadline."""
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            if b"200 OK" in data:
                return data.decode(errors="replace")
        except OSError:
            pass
        if time.monotonic() > deadline:
            return ""
        time.sleep(0.1)


@pytest.mark.parametrize("helper", HELPERS)
def test_published_port_reaches_a_server_in_the_container(rl, busybox_rootfs, helper):
    need_helper(helper)
    port = free_port()
    proc = rl.popen("run", "--rm", "--network", helper, "-p", f"127.0.0.1:{port}:8080",
                    "--rootfs", str(busybox_rootfs), "sh", "-c",
                    "echo served-from-the-container > /tmp/index.html; "
                    "httpd -f -p 8080 -h /tmp & echo ready; sleep 30")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        body = http_get(port, time.monotonic() + 20)
        assert "served-from-the-container" in body
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("helper", HELPERS)
def test_port_in_use_is_126(rl, busybox_rootfs, helper):
    need_helper(helper)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_net(rl, busybox_rootfs, helper, "echo ran", opts=("-p", f"127.0.0.1:{port}:80"))
    assert r.returncode == 126, r.stderr
    assert "address already in use" in r.stderr and "ran" not in r.stdout


def test_privileged_port_names_the_sysctl(rl, busybox_rootfs):
    start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    need(start > 80, "net.ipv4.ip_unprivileged_port_start allows port 80 here")
    r = run_net(rl, busybox_rootfs, "slirp4netns", "echo ran", opts=("-p", "80:80"))
    assert r.returncode == 125
    assert "ip_unprivileged_port_start" in r.stderr and "ran" not in r.stdout


# -- DNS through the helper ------------------------------------------------------------------

DNS_SCRIPT = r"""
set -e
ip link set lo up
# pasta needs a host interface with a default route: a veth pair that leads nowhere.
ip link add rltest0 type veth peer name rltest1
ip addr add 192.0.2.200/24 dev rltest0
ip link set rltest1 up; ip link set rltest0 up
ip route add default via 192.0.2.1
echo "nameserver 127.0.0.1" > "$WORK/resolv.conf"
mount --bind "$WORK/resolv.conf" /etc/resolv.conf
"$DNSMASQ" --keep-in-foreground --port=53 --listen-address=127.0.0.1 --bind-interfaces \
  --no-resolv --no-hosts --address=/probe.rl.test/192.0.2.123 --pid-file="$WORK/dnsmasq.pid" \
  --user=root --group=root &
DM=$!
trap 'kill $DM' EXIT
for i in $(seq 50); do [ -s "$WORK/dnsmasq.pid" ] && break; sleep 0.1; done
rl run --rm --network "$NETWORK" --rootfs "$ROOTFS" sh -c 'cat /etc/resolv.conf; nslookup probe.rl.test'
"""


@pytest.mark.parametrize("helper", HELPERS)
def test_dns_resolves_through_the_helper(rl, busybox_rootfs, tmp_path, helper):
    """A local dnsmasq is the "host's" resolver, in a user+net+mount namespace of the test.

    The helper's DNS forwarder reads the host's /etc/resolv.conf; a bind mount in the test's
    own mount namespace points it at 127.0.0.1 without touching the real file.
    """
    need_helper(helper)
    dnsmasq = need_tool("dnsmasq")
    need_tool("newuidmap")
    work = tmp_path / "dns"
    work.mkdir()
    env = dict(rl.env, WORK=str(work), DNSMASQ=dnsmasq, NETWORK=helper, ROOTFS=str(busybox_rootfs),
               PATH=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    r = subprocess.run(["unshare", "--map-auto", "--map-root-user", "--mount", "--net",
                        "sh", "-c", DNS_SCRIPT], env=env, capture_output=True, text=True, timeout=60)
    assert "192.0.2.123" in r.stdout, r.stdout + r.stderr
    nameserver = r.stdout.split()[1]
    assert nameserver == ("10.0.2.3" if helper == "slirp4netns" else "169.254.1.1")


# -- nothing left behind ---------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def netns_holders(inode: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == inode:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def wait_gone(pids: list[int], inode: str) -> tuple[list[int], list[int]]:
    deadline = time.monotonic() + 15
    while True:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and
                 not Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"]
        holders = netns_holders(inode)
        if (not alive and not holders) or time.monotonic() > deadline:
            return alive, holders
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["exit", "sigkill"])
@pytest.mark.parametrize("helper", HELPERS)
def test_no_helper_and_no_netns_remain(rl, busybox_rootfs, helper, how):
    need_helper(helper)
    proc = rl.popen("run", "--rm", "--network", helper, "--rootfs", str(busybox_rootfs),
                    "sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 300 & wait")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        family = descendants(proc.pid)
        names = {p: Path(f"/proc/{p}/comm").read_text().strip() for p in family
                 if os.path.exists(f"/proc/{p}/comm")}
        assert any(n.startswith(("passt", "pasta", "slirp4netns")) for n in names.values()), names
        pid1 = min(p for p, n in names.items() if n == "sh")
        inode = os.readlink(f"/proc/{pid1}/ns/net")
        assert inode != os.readlink("/proc/self/ns/net")
        if how == "sigkill":
            proc.send_signal(signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)  # forwarded to PID 1; rl cleans up as usual
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    alive, holders = wait_gone(family, inode)
    assert alive == [] and holders == [], (names, alive, holders)
    if how == "exit":
        assert net_files_left(rl) == []


@pytest.mark.parametrize("helper", HELPERS)
def test_the_helper_is_reaped_before_rl_exits(rl, busybox_rootfs, helper):
    """Not even a zombie: a helper rl does not reap is left to PID 1 of the host, which may
    take seconds (and a CI runner's reaper may never come)."""
    need_helper(helper)
    for i in range(5):
        proc = rl.popen("run", "--rm", "--network", helper, "--rootfs", str(busybox_rootfs),
                        "sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 300 & wait")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        helpers = [p for p in descendants(proc.pid) if os.path.exists(f"/proc/{p}/comm") and
                   Path(f"/proc/{p}/comm").read_text().startswith(("passt", "pasta", "slirp4netns"))]
        assert helpers, i
        proc.terminate()  # forwarded to PID 1: sh exits, rl cleans up as usual
        proc.wait(timeout=30)
        proc.communicate()
        left = [p for p in helpers if os.path.exists(f"/proc/{p}")]
        states = {p: Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[:2]
                  for p in left if os.path.exists(f"/proc/{p}/stat")}
        assert not left, (i, states)
