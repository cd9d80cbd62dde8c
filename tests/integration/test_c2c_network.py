"""Container-to-container networks: `rl network` and `rl run --network NAME`, end to end.

Traffic goes only to the namespaces the network creates and to the host's 127.0.0.1: through
slirp4netns's loopback alias 10.0.2.2 only when the network allows it (checked first that the
container's default route is the network's bridge), and through ports published on 127.0.0.1.
A container that must NOT reach the network runs with --network none, so a miss cannot leave
the machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.integration.test_network import GET, free_port, host_server, http_get, need_tun  # noqa: F401

pytestmark = pytest.mark.integration

# Connect by name until the server inside answers (it may still be starting).
CONNECT = ('for i in $(seq 100); do out=$(nc -w 2 {host} {port} 2>/dev/null) && [ -n "$out" ] '
           '&& break; sleep 0.1; done; echo "got:$out"')
GUARD = 'ip route | grep -q "^default via {gw} dev eth0" || {{ echo NOT-BRIDGED; exit 99; }}; '


@pytest.fixture
def net(rl):
    need_tool("slirp4netns")
    need_tun()
    created: list[str] = []

    def create(name: str, *opts: str) -> dict:
        r = rl("network", "create", *opts, name)
        assert r.returncode == 0, r.stderr
        created.append(name)
        r = rl("network", "inspect", name)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)[0]

    yield create
    for name in created:
        rl("network", "rm", "-f", name)


def holder_state(rl, name: str) -> dict | None:
    try:
        return json.loads((rl.runtime / "networks" / name / "state.json").read_text())
    except (OSError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    if not pid or not os.path.exists(f"/proc/{pid}/stat"):
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def wait_state(rl, name: str, members: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = holder_state(rl, name)
        if state and len(state["members"]) >= members:
            return state
        assert time.monotonic() < deadline, f"network {name} never had {members} member(s): {state}"
        time.sleep(0.05)


def wait_all_gone(rl, pids: list[int], name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) or (rl.runtime / "networks" / name).exists():
        assert time.monotonic() < deadline, (
            [p for p in pids if alive(p)], list((rl.runtime / "networks").rglob("*")))
        time.sleep(0.05)


def serve(rl, rootfs, network: str, name: str, script: str, *opts: str):
    proc = rl.popen("run", "--rm", "--network", network, "--name", name, *opts,
                    "--rootfs", str(rootfs), "sh", "-c", script)
    return proc


def test_two_containers_talk_by_name_and_hostname(rl, busybox_rootfs, net):
    info = net("ci")
    assert info["subnet"] == "10.89.0.0/24" and info["gateway"] == "10.89.0.1"
    db = serve(rl, busybox_rootfs, "ci", "db",
               "nc -l -p 5432 -e echo by-name; "
               # a container that joined later is found too (the bridge's DNS is live); asked
               # while that container still waits for its second answer
               "nslookup tests | grep -A1 '^Name' | tail -1; nc -l -p 5432 -e echo by-hostname",
               "--hostname", "dbhost")
    try:
        state = wait_state(rl, "ci", 1)
        db_ip = state["members"][0]["ip"]
        r = rl("run", "--rm", "--network", "ci", "--name", "tests", "--rootfs", str(busybox_rootfs),
               "sh", "-c", CONNECT.format(host="db", port=5432) + "; " +
               CONNECT.format(host="dbhost", port=5432) + "; ip -4 -o addr show eth0")
        assert r.returncode == 0, r.stderr
        assert "got:by-name" in r.stdout and "got:by-hostname" in r.stdout, r.stdout + r.stderr
        out, err = db.communicate(timeout=30)
        assert db.returncode == 0, err
        tests_ip = r.stdout.split("inet ")[1].split("/")[0]
        assert tests_ip != db_ip and tests_ip.startswith("10.89.0.")
        assert f"Address: {tests_ip}" in out.decode() or tests_ip in out.decode(), out
    finally:
        if db.poll() is None:
            db.kill()
            db.communicate()


def test_a_container_off_the_network_reaches_nothing(rl, busybox_rootfs, net):
    net("ci")
    db = serve(rl, busybox_rootfs, "ci", "db", "nc -l -p 5432 -e echo served; sleep 30")
    try:
        db_ip = wait_state(rl, "ci", 1)["members"][0]["ip"]
        r = rl("run", "--rm", "--network", "none", "--rootfs", str(busybox_rootfs), "sh", "-c",
               f"nc -w 2 db 5432; echo rc1=$?; nc -w 2 {db_ip} 5432; echo rc2=$?")
        assert "served" not in r.stdout
        assert "rc1=1" in r.stdout and "rc2=1" in r.stdout, r.stdout + r.stderr
        # the server is still waiting for its first client: nobody reached it
        assert db.poll() is None
    finally:
        db.kill()
        db.communicate()


def test_members_share_one_slirp4netns_for_host_loopback(rl, busybox_rootfs, net, host_server):  # noqa: F811
    net("withhost", "--opt", "allow_host_loopback=true")
    net("nohost")
    guard = GUARD.format(gw="10.89.0.1")
    get = GET.format(host="10.0.2.2", port=host_server)
    first = serve(rl, busybox_rootfs, "withhost", "first", guard + get + "; sleep 30")
    try:
        state = wait_state(rl, "withhost", 1)
        r = rl("run", "--rm", "--network", "withhost", "--rootfs", str(busybox_rootfs), "sh", "-c",
               guard + get + "; grep host.containers /etc/hosts")
        assert "NOT-BRIDGED" not in r.stdout
        assert "probe-from-the-host" in r.stdout, r.stdout + r.stderr
        assert r.stdout.split("\n")[-2].split()[0] == "10.0.2.2"
        # One helper for the whole network, whatever the number of members.
        assert alive(state["slirp4netns"])
        helpers = [p for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == state["pid"]
                   and _comm(int(p)) == "slirp4netns"]
        assert helpers == [str(state["slirp4netns"])]
    finally:
        first.kill()
        first.communicate()
    # Without allow_host_loopback the helper refuses 10.0.2.2 (nothing leaves the machine).
    gw = json.loads(rl("network", "inspect", "nohost").stdout)[0]["gateway"]
    r = rl("run", "--rm", "--network", "nohost", "--rootfs", str(busybox_rootfs), "sh", "-c",
           GUARD.format(gw=gw) + get + "; echo rc=$?")
    assert "NOT-BRIDGED" not in r.stdout
    assert "probe-from-the-host" not in r.stdout and "rc=1" in r.stdout, r.stdout + r.stderr


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return -1


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_published_port_of_a_member(rl, busybox_rootfs, net):
    net("web")
    port = free_port()
    proc = serve(rl, busybox_rootfs, "web", "www",
                 "echo served-from-the-network > /tmp/index.html; httpd -f -p 8080 -h /tmp & "
                 "echo ready; sleep 30", "-p", f"127.0.0.1:{port}:8080")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        body = http_get(port, time.monotonic() + 20)
        assert "served-from-the-network" in body
    finally:
        proc.kill()
        proc.communicate()
    # The forward ends with the member.
    wait_all_gone(rl, [], "web")
    assert http_get(port, time.monotonic()) == ""


def test_rm_is_refused_while_in_use_and_force_kills_the_members(rl, busybox_rootfs, net):
    net("busy")
    proc = serve(rl, busybox_rootfs, "busy", "member", "echo ready; sleep 300")
    try:
        assert proc.stdout.readline().strip() == b"ready"
        r = rl("network", "rm", "busy")
        assert r.returncode == 2 and "in use" in r.stderr and "member" in r.stderr, r.stderr
        ls = json.loads(rl("network", "ls", "--format", "json").stdout)
        assert [n["name"] for n in ls] == ["busy"]
        state = holder_state(rl, "busy")
        r = rl("network", "rm", "-f", "busy")
        assert r.returncode == 0, r.stderr
        proc.wait(timeout=30)
        assert proc.returncode == 137
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert json.loads(rl("network", "ls", "--format", "json").stdout) == []
    wait_all_gone(rl, [state["pid"], state["keeper"], state["slirp4netns"]], "busy")
    r = rl("run", "--rm", "--network", "busy", "--rootfs", str(busybox_rootfs), "true")
    assert r.returncode == 125 and "not found" in r.stderr


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_nothing_remains_after_the_last_member(rl, busybox_rootfs, net, how):
    net("gone")
    procs = [serve(rl, busybox_rootfs, "gone", f"m{i}", "trap 'exit 0' TERM; echo ready; sleep 300 & wait")
             for i in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == b"ready"
        state = wait_state(rl, "gone", 2)
        pids = [state["pid"], state["keeper"], state["slirp4netns"]]
        assert all(alive(p) for p in pids), state
        procs[0].send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
        procs[0].wait(timeout=30)
        # The other member keeps the network alive.
        time.sleep(0.3)
        assert all(alive(p) for p in pids)
        assert len(holder_state(rl, "gone")["members"]) == 1
        procs[1].send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
        procs[1].wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    wait_all_gone(rl, pids, "gone")
    assert not (rl.runtime / "networks").exists()
    # The definition stays: the network starts again with its next container.
    r = rl("run", "--rm", "--network", "gone", "--rootfs", str(busybox_rootfs), "sh", "-c", "ip -4 -o addr show eth0")
    assert r.returncode == 0 and "10.89.0.2/24" in r.stdout, r.stdout + r.stderr


def test_create_validates_and_ls_lists(rl, net):
    net("a", "--subnet", "10.89.7.0/24")
    r = rl("network", "create", "b", "--subnet", "10.89.7.128/25")
    assert r.returncode == 125 and "overlaps" in r.stderr
    r = rl("network", "create", "a")
    assert r.returncode == 125 and "already exists" in r.stderr
    r = rl("network", "create", "host")
    assert r.returncode == 125 and "reserved" in r.stderr
    info = net("c")
    assert info["subnet"] == "10.89.0.0/24"
    r = rl("network", "ls", "--format", "json")
    assert sorted(n["name"] for n in json.loads(r.stdout)) == ["a", "c"]
    assert rl("network", "rm", "a").returncode == 0
    assert rl("network", "rm", "a").returncode == 125


def test_ci_case_a_detached_server_and_a_test_container(rl, busybox_rootfs, net):
    """`rl run -d` keeps the membership through its monitor (NetworkPlan.keep_fds)."""
    net("cinet")
    r = rl("run", "-d", "--name", "cidb", "--network", "cinet", "--rootfs", str(busybox_rootfs),
           "sh", "-c", "while true; do nc -l -p 5432 -e echo pong; done")
    assert r.returncode == 0, r.stderr
    try:
        r = rl("run", "--rm", "--network", "cinet", "--rootfs", str(busybox_rootfs), "sh", "-c",
               CONNECT.format(host="cidb", port=5432))
        assert "got:pong" in r.stdout, r.stdout + r.stderr
        # The test container's departure reaches the holder when its connection closes,
        # which may be a moment after `rl run` returned.
        deadline = time.monotonic() + 10
        while True:
            state = holder_state(rl, "cinet")
            members = [m["name"] for m in state["members"]]
            if members == ["cidb"] or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert members == ["cidb"]
    finally:
        rl("rm", "-f", "cidb")
    wait_all_gone(rl, [state["pid"], state["keeper"], state["slirp4netns"]], "cinet")
