"""Network mode planning, helper argv and resolv.conf rules (no helper is started)."""

from __future__ import annotations

import os
import stat

import pytest

from rootless.errors import UsageError
from rootless.network import default_mode, plan_network
from rootless.network.dns import without_local_stub
from rootless.network.pasta import PastaPlan
from rootless.network.ports import PortMapping
from rootless.network.routes import host_gateway
from rootless.network.slirp import SlirpPlan, nth_address, parse_options
from rootless.spec import RunSpec


def spec(**kw):
    base = {"network": None, "publish": [], "publish_all": False, "quiet": True}
    base.update(kw)
    fields = {n: base.get(n) for n in ("network", "publish", "publish_all", "quiet")}
    return type("S", (), fields)()


def test_none_and_host_plans(capsys):
    assert plan_network(spec(network="none")).new_netns
    assert not plan_network(spec(network="host")).new_netns
    plan_network(spec(network="none", publish=["80"], quiet=False))
    assert "Port mappings have been discarded" in capsys.readouterr().err


def test_default_mode_prefers_slirp4netns_then_pasta(tmp_path):
    def tool(name):
        path = tmp_path / name
        path.write_text("#!/bin/sh\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    empty = str(tmp_path / "nothing")
    assert default_mode(empty) == "none"
    tool("pasta")
    assert default_mode(str(tmp_path)) == "pasta"
    tool("slirp4netns")
    assert default_mode(str(tmp_path)) == "slirp4netns"


def test_slirp_options_and_argv():
    opts = parse_options("allow_host_loopback=true,mtu=1500,cidr=10.5.0.0/24")
    plan = SlirpPlan(opts, [], "/usr/bin/slirp4netns", "/run/x")
    argv = plan.argv(42, 5, 6)
    assert "--disable-host-loopback" not in argv and "--mtu=1500" in argv
    assert "--cidr=10.5.0.0/24" in argv and argv[-2:] == ["42", "tap0"]
    assert plan.host_ip == "10.5.0.2" and plan.dns == ["10.5.0.3"]
    default = SlirpPlan(parse_options(""), [], "s", "/run/x")
    assert "--disable-host-loopback" in default.argv(1, 5, 6) and default.host_ip is None
    assert nth_address("10.0.2.0/24", 100) == "10.0.2.100"
    for bad in ("mtu=10", "allow_host_loopback=yes", "bogus=1", "cidr=10.0.2.0"):
        with pytest.raises(UsageError):
            parse_options(bad)


def test_pasta_argv_defaults_ports_and_user_options():
    ports = [PortMapping("127.0.0.1", 8080, 80, "tcp")]
    argv = PastaPlan([], ports, "/usr/bin/pasta", "/run/x").argv(7, "/run/x/p")
    assert ["-t", "127.0.0.1/8080:80"] == argv[argv.index("-t"):argv.index("-t") + 2]
    assert "--no-map-gw" in argv and ["-u", "none"] == argv[argv.index("-u"):argv.index("-u") + 2]
    assert argv[-4:] == ["--netns", "/proc/7/ns/net", "--userns", "/proc/7/ns/user"]
    user = PastaPlan(["-T", "5432", "--map-gw"], [], "p", "/run/x").argv(7, "f")
    assert "--no-map-gw" not in user and "--map-gw" not in user
    assert user.count("-T") == 1 and ["-T", "5432"] == user[user.index("-T"):user.index("-T") + 2]


def test_host_gateway_reads_proc_net_route(tmp_path):
    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway\n"
                     "eth0\t000200C0\t00000000\t0001\n"
                     "eth0\t00000000\t010200C0\t0003\n")
    assert host_gateway(str(route)) == "192.0.2.1"


def test_loopback_resolver_is_replaced_by_systemd_upstreams(tmp_path):
    upstream = tmp_path / "resolv.conf"
    upstream.write_text("nameserver 192.0.2.53\nnameserver 127.0.0.1\n")
    text = "# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.org\n"
    out = without_local_stub(text, str(upstream))
    assert out.splitlines() == ["# stub", "nameserver 192.0.2.53", "options edns0 trust-ad",
                                "search example.org"]
    assert without_local_stub("nameserver 192.0.2.1\n", str(upstream)) == "nameserver 192.0.2.1\n"


def test_runspec_fields_the_plan_reads_exist():
    assert {"network", "publish", "publish_all", "quiet"} <= set(RunSpec.__slots__)
    assert os.path.exists("/proc/self/ns/net")


def test_host_default_interfaces_reads_both_route_files(tmp_path):
    from rootless.network.routes import AF_INET, AF_INET6, host_default_interfaces

    route = tmp_path / "route"
    route.write_text("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
                     "ens3\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
                     "ens3\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n")
    v6 = tmp_path / "ipv6_route"
    v6.write_text("fd000000000000000000000000000000 40 " + "0" * 32 + " 00 " + "0" * 32
                  + " 00000100 00000001 00000000 00000001 ens4\n"
                  + "0" * 32 + " 00 " + "0" * 32 + " 00 fd000000000000000000000000000001"
                  + " 00000400 00000001 00000000 00000003 ens4\n"
                  + "0" * 32 + " 00 " + "0" * 32 + " 00 " + "0" * 32
                  + " ffffffff 00000001 00000000 00200200 lo\n")
    assert host_default_interfaces(str(route), str(v6)) == {AF_INET: "ens3", AF_INET6: "ens4"}
    assert host_default_interfaces(str(tmp_path / "none"), str(tmp_path / "none6")) == {}


def test_default_routes_in_rtnetlink_messages():
    import struct

    from rootless.network.routes import AF_INET, AF_INET6, default_routes_in

    def newroute(family, dst_len, table=254, kind=24):
        body = struct.pack("=BBBBBBBBI", family, dst_len, 0, 0, table, 3, 0, 1, 0)
        return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body

    data = newroute(AF_INET, 24) + newroute(AF_INET, 0) + newroute(AF_INET6, 0, table=255)
    assert default_routes_in(data) == {AF_INET}  # a /24 and the local table do not count
    assert default_routes_in(newroute(AF_INET6, 0)) == {AF_INET6}
    assert default_routes_in(newroute(AF_INET, 0, kind=25)) == set()  # RTM_DELROUTE
    assert default_routes_in(b"\x03\x00") == set()


def test_pasta_names_and_waits_on_what_it_copies():
    both = {2: "ens3", 10: "ens3"}
    plan = PastaPlan([], [], "pasta", "/run/x", both)
    argv = plan.argv(7, "f")
    assert ["-I", "ens3"] == argv[argv.index("-I"):argv.index("-I") + 2]
    assert plan.route_ready and plan.families == {2, 10}
    # A port to publish, or an option of the user's: the pid file says when it is ready.
    assert not PastaPlan([], [PortMapping("", 8080, 80, "tcp")], "p", "/r", both).route_ready
    user = PastaPlan(["-I", "net0"], [], "p", "/r", both)
    assert not user.route_ready and user.tap_name() is None
    assert user.argv(7, "f").count("-I") == 1
    nothing = PastaPlan([], [], "p", "/r", {})
    assert not nothing.route_ready and "-I" not in nothing.argv(7, "f")
