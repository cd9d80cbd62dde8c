"""A persistent tap device in the container's network namespace, for pasta to attach to.

Why: a tap device created by pasta is unregistered when pasta's descriptor closes, in the
closing process and synchronously (tun_chr_close → unregister_netdevice waits for an RCU grace
period): pasta's exit took ~35 ms here, all of it asleep, and rl must wait for it to reap
pasta. A persistent device (TUNSETPERSIST, <linux/if_tun.h>) outlives the descriptor; it goes
with its namespace, which the kernel dismantles in its own worker once the last process and
descriptor are gone (default_device_exit_batch deletes tun devices; they are never moved to the
host's namespace). pasta's exit then takes ~15 ms.
"""

from __future__ import annotations

import errno
import os
import struct

from rootless.kernel import constants as k

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, padding to 40 bytes
_IN6_IFREQ = struct.Struct("=16sIi")  # <linux/ipv6.h> struct in6_ifreq: address, prefix, ifindex
# <linux/ipv6_route.h> struct in6_rtmsg: dst, src, gateway, type, dst_len, src_len, metric,
# info (an unsigned long, 8-aligned), flags, ifindex
_IN6_RTMSG = struct.Struct("=16s16s16sIHHI4xQIi")


def create_persistent_tap(name: str) -> bool:
    """Create tap device `name` (IFF_TAP|IFF_NO_PI, what pasta asks for) in the current network
    namespace and let it persist. Needs CAP_NET_ADMIN over the namespace (its creator has it).
    False when /dev/net/tun cannot be used here: pasta then makes its own device, or reports
    the same problem in its own words."""
    import fcntl

    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        # 0600 without udev (EACCES), no tun module (ENOENT, ENODEV, ENXIO).
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return False
        raise
    try:
        fcntl.ioctl(fd, k.TUNSETIFF, _IFREQ.pack(name.encode(), k.IFF_TAP | k.IFF_NO_PI))
        fcntl.ioctl(fd, k.TUNSETPERSIST, 1)
    finally:
        os.close(fd)
    return True


def configure_ipv6(name: str, address: str, prefixlen: int, gateway: str) -> None:
    """Give `name` a static IPv6 address and default route, usable as soon as the device has a
    carrier: no duplicate address detection, no router advertisements. (slirp4netns leaves
    IPv6 to SLAAC: the address came 2-4 s after the start, too late for a short job; pasta
    configures its interface this way.) Run in the namespace before the helper attaches: the
    kernel takes both on a device without carrier. ioctl, not rtnetlink: no library needed."""
    import _socket  # socket.py's wrappers cost start-up time and add nothing here
    import fcntl

    for key in ("accept_dad", "accept_ra"):
        # /proc/sys/net shows the writer's network namespace; its root may write it.
        with open(f"/proc/sys/net/ipv6/conf/{name}/{key}", "w") as f:
            f.write("0")
    sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_DGRAM)
    try:
        fd = sock.fileno()
        flags = _IFREQ.unpack(fcntl.ioctl(fd, k.SIOCGIFFLAGS, _IFREQ.pack(name.encode(), 0)))[1]
        fcntl.ioctl(fd, k.SIOCSIFFLAGS, _IFREQ.pack(name.encode(), flags | k.IFF_UP))
        index = _socket.if_nametoindex(name)
        fcntl.ioctl(fd, k.SIOCSIFADDR, _IN6_IFREQ.pack(
            _socket.inet_pton(_socket.AF_INET6, address), prefixlen, index))
        fcntl.ioctl(fd, k.SIOCADDRT, _IN6_RTMSG.pack(
            bytes(16), bytes(16), _socket.inet_pton(_socket.AF_INET6, gateway), k.RTN_UNICAST,
            0, 0, 1024, 0, k.RTF_UP | k.RTF_GATEWAY, index))
    finally:
        sock.close()
