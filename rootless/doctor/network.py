"""Network helpers (pasta, slirp4netns) and the devices they and fuse-overlayfs open, plus the
sysctls that decide which ports and pings an unprivileged user may use."""

from __future__ import annotations

import os

from rootless.doctor import OK, WARNING, Check, Host

_UDEV_RULE = "/etc/udev/rules.d/60-rl-{name}.rules"


def tool_version(path: str) -> str:
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5,
                             stdin=subprocess.DEVNULL)
    except OSError as exc:  # any exec failure (EACCES, ENOEXEC...) is what the report shows
        from rootless.errors import describe_oserror

        return describe_oserror("version unknown", exc)
    except subprocess.TimeoutExpired:
        return "version unknown: no answer to --version within 5 s"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].strip() if first else "version unknown"


def check_network_helpers(host: Host) -> list[Check]:
    found = {name: host.which(name) for name in ("pasta", "slirp4netns")}
    have = {n: p for n, p in found.items() if p}
    if not have:
        return [Check("network", "pasta / slirp4netns", WARNING,
                      "neither pasta nor slirp4netns on PATH: only --network none and "
                      "--network host work",
                      "sudo apt install passt   (pasta; or: sudo apt install slirp4netns)")]
    shown = "; ".join(f"{p} ({tool_version(p)})" for p in have.values())
    missing = [n for n in found if n not in have]
    return [Check("network", "pasta / slirp4netns", OK,
                  shown + (f"; {missing[0]} not found" if missing else ""))]


def _device(host: Host, path: str, name: str, needed_by: str) -> Check:
    import stat

    del host
    try:
        st = os.stat(path)
    except OSError as exc:
        node = "c 10 200" if name == "tun" else "c 10 229"
        return Check(name, path, WARNING, f"{path}: {exc.strerror}: {needed_by} cannot work",
                     f"sudo modprobe {name}   (or: sudo mknod -m 0666 {path} {node})")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        os.close(fd)
        return Check(name, path, OK, f"{path} opens read-write "
                     f"(mode {stat.S_IMODE(st.st_mode):04o})")
    except OSError as exc:
        mode = stat.S_IMODE(st.st_mode)
        kernel = "tun" if name == "tun" else "fuse"
        why = (" — without udev (containers, minimal VMs) the kernel creates it 0600 root"
               if mode == 0o600 else "")
        return Check(name, path, WARNING,
                     f"{path} is mode {mode:04o} (owner uid {st.st_uid}): cannot open it: "
                     f"{exc.strerror}{why}; {needed_by} cannot work",
                     f"sudo chmod 0666 {path}   (until reboot)\n"
                     f"echo 'KERNEL==\"{kernel}\", MODE=\"0666\"' | "
                     f"sudo tee {_UDEV_RULE.format(name=name)}   (lasting, where udev runs)")


def check_tun(host: Host) -> list[Check]:
    return [_device(host, "/dev/net/tun", "tun", "pasta and slirp4netns")]


def check_fuse(host: Host) -> list[Check]:
    tool = host.which("fuse-overlayfs")
    dev = _device(host, "/dev/fuse", "fuse", "fuse-overlayfs")
    if tool is None:
        dev.found = "fuse-overlayfs not found (rl's fallback when kernel overlayfs fails); " \
            + dev.found
        dev.status = WARNING
        dev.fix = "sudo apt install fuse-overlayfs" + (f"\n{dev.fix}" if dev.fix else "")
    else:
        dev.found = f"{tool}; {dev.found}"
    dev.title = "fuse-overlayfs and /dev/fuse"
    return [dev]


def check_port_sysctls(host: Host) -> list[Check]:
    checks = []
    start = host.sysctl("net.ipv4.ip_unprivileged_port_start")
    if start is None:
        checks.append(Check("ports", "unprivileged ports", OK,
                            "net.ipv4.ip_unprivileged_port_start not present (kernel < 4.11): "
                            "ports below 1024 cannot be published"))
    else:
        found = f"net.ipv4.ip_unprivileged_port_start={start}"
        if int(start) > 0:
            found += f": -p with a host port below {start} is refused"
        checks.append(Check("ports", "unprivileged ports", OK, found,
                            "to publish port 80: sudo sysctl -w "
                            "net.ipv4.ip_unprivileged_port_start=80" if int(start) > 80 else ""))
    ping = host.sysctl("net.ipv4.ping_group_range")
    if ping is None:
        checks.append(Check("ping", "ping_group_range", WARNING,
                            "net.ipv4.ping_group_range not present: ping inside containers "
                            "will not work", ""))
        return checks
    lo, _, hi = ping.replace("\t", " ").partition(" ")
    try:
        allowed = int(lo) <= host.gid <= int(hi.strip())
    except ValueError:
        allowed = False
    fix = ("sudo sysctl -w net.ipv4.ping_group_range='0 2147483647'\n"
           "echo 'net.ipv4.ping_group_range=0 2147483647' | "
           "sudo tee /etc/sysctl.d/60-rl-ping.conf")
    if allowed:
        checks.append(Check("ping", "ping_group_range", OK,
                            f"net.ipv4.ping_group_range={ping.split()[0]} {ping.split()[-1]} "
                            f"includes gid {host.gid}"))
    else:
        checks.append(Check("ping", "ping_group_range", WARNING,
                            f"net.ipv4.ping_group_range='{' '.join(ping.split())}' excludes gid "
                            f"{host.gid}: ping (ICMP echo) from containers will not work", fix))
    return checks
