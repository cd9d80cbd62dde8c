"""Kernel constants under their C names, grouped by the header that defines them."""

from __future__ import annotations

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

# <linux/mount.h> (MS_* for mount(2))
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags
MNT_FORCE = 1
MNT_DETACH = 2
MNT_EXPIRE = 4
UMOUNT_NOFOLLOW = 8

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/if_tun.h>: ioctls on /dev/net/tun, and the flags of TUNSETIFF
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000

# <linux/netlink.h>, <linux/rtnetlink.h>: route change notifications
NETLINK_ROUTE = 0
RTM_NEWROUTE = 24
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RT_TABLE_MAIN = 254

# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
LINUX_CAPABILITY_VERSION_3 = _LINUX_CAPABILITY_VERSION_3

# x86_64 syscall numbers (<asm/unistd_64.h>); other architectures in _SYSCALLS.
_SYSCALLS = {
    "x86_64": {
        "pivot_root": 155,
        "setns": 308,
        "mount_setattr": 442,
        "pidfd_open": 434,
        "pidfd_send_signal": 424,
        "capget": 125,
        "capset": 126,
    },
    "aarch64": {
        "pivot_root": 41,
        "setns": 268,
        "mount_setattr": 442,
        "pidfd_open": 434,
        "pidfd_send_signal": 424,
        "capget": 90,
        "capset": 91,
    },
}

# <linux/mount.h> mount_setattr(2)
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x00000001
MOUNT_ATTR_NOSUID = 0x00000002
MOUNT_ATTR_NODEV = 0x00000004
MOUNT_ATTR_NOEXEC = 0x00000008

# <asm-generic/ioctls.h>
TIOCSCTTY = 0x540E
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441

# <linux/sockios.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCADDRT = 0x890B
IFF_UP = 0x1

# <linux/route.h>, <linux/rtnetlink.h>: an IPv6 route by ioctl (struct in6_rtmsg)
RTF_UP = 0x0001
RTF_GATEWAY = 0x0002
RTN_UNICAST = 1
