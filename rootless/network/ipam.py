"""Network definitions (`rl network create`) and address management for them, as data.

A definition is one JSON file, $XDG_DATA_HOME/rootless/networks/NAME.json: it survives reboots,
as podman's do. It is also the network's lock: `rl run --network NAME` (joining, starting the
holder), the holder (deciding to exit) and `rl network rm` take flock(2) on it, so nothing else
has to be created or cleaned up for locking.

Addresses: the gateway is the subnet's first host address (the bridge in the network's
namespace, and its DNS responder); containers get the lowest free address after it. Leases are
kept by the network's holder process, the only allocator, and mirrored in its state file for
`rl network inspect` (rootless.network.netns_holder).
"""

from __future__ import annotations

import json
import os
import time

from rootless.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# podman's rootless networks start at 10.89.0.0/24; slirp4netns's own 10.0.2.0/24 (the link
# between the bridge namespace and the helper) must never be a container subnet.
DEFAULT_BASE = (10, 89)
RESERVED = ("10.0.2.0/24",)
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
RESERVED_NAMES = ("none", "host", "pasta", "slirp4netns", "private", "bridge", "default", "container", "ns")


def to_int(addr: str) -> int:
    parts = addr.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(addr)
    a, b, c, d = (int(p) for p in parts)
    return a << 24 | b << 16 | c << 8 | d


def to_addr(value: int) -> str:
    return ".".join(str(value >> s & 255) for s in (24, 16, 8, 0))


def parse_subnet(text: str) -> tuple[int, int]:
    """"10.89.3.0/24" → (network as int, prefix length); host bits must be zero."""
    addr, sep, bits = text.partition("/")
    try:
        base = to_int(addr)
    except ValueError:
        raise UsageError(f"invalid subnet {text!r}: expected an IPv4 network like 10.89.0.0/24") from None
    if not sep or not bits.isdigit() or not 8 <= int(bits) <= 29:
        raise UsageError(f"invalid subnet {text!r}: the prefix length must be 8-29")
    prefix = int(bits)
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    if base & ~mask & 0xFFFFFFFF:
        raise UsageError(f"invalid subnet {text!r}: host bits are set (did you mean "
                         f"{to_addr(base & mask)}/{prefix}?)")
    return base, prefix


def overlaps(a: str, b: str) -> bool:
    (na, pa), (nb, pb) = parse_subnet(a), parse_subnet(b)
    p = min(pa, pb)
    mask = (0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF
    return na & mask == nb & mask


def gateway(subnet: str) -> str:
    base, _ = parse_subnet(subnet)
    return to_addr(base + 1)


def allocate(subnet: str, used: set[str]) -> str:
    """The lowest free host address after the gateway (the broadcast address is never given)."""
    base, prefix = parse_subnet(subnet)
    last = base + (1 << (32 - prefix)) - 2
    for value in range(base + 2, last + 1):
        addr = to_addr(value)
        if addr not in used:
            return addr
    raise UsageError(f"network subnet {subnet} has no free address left",
                     hint="create the network with a larger --subnet")


def free_subnet(taken: list[str]) -> str:
    """The first 10.89.N.0/24 that overlaps no other rl network (podman's choice)."""
    for n in range(256):
        candidate = f"{DEFAULT_BASE[0]}.{DEFAULT_BASE[1]}.{n}.0/24"
        if not any(overlaps(candidate, t) for t in taken):
            return candidate
    raise UsageError("no free 10.89.N.0/24 subnet left", hint="give one with --subnet")


def check_name(name: str) -> None:
    if not name or not set(name) <= NAME_CHARS or name[0] in ".-" or len(name) > 64:
        raise UsageError(f"invalid network name {name!r}: use letters, digits, '_', '.' and '-' "
                         "(at most 64, not starting with '.' or '-')")
    if name in RESERVED_NAMES:
        raise UsageError(f"network name {name!r} is reserved (a --network mode)")


# -- definitions on disk ---------------------------------------------------------------------

def definitions_dir(paths: Any) -> str:
    return str(paths.data / "networks")


def definition_path(paths: Any, name: str) -> str:
    return os.path.join(definitions_dir(paths), name + ".json")


def load(paths: Any, name: str) -> dict[str, Any] | None:
    path = definition_path(paths, name)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        from rootless.errors import NetworkError

        raise NetworkError(f"network {name}: its definition {path} cannot be read: {exc}",
                           hint=f"remove it with 'rl network rm {name}' and create it again") from None
    return data if isinstance(data, dict) else None


def listing(paths: Any) -> list[dict[str, Any]]:
    try:
        names = sorted(os.listdir(definitions_dir(paths)))
    except FileNotFoundError:  # no network was ever created
        return []
    out = []
    for entry in names:
        if entry.endswith(".json"):
            data = load(paths, entry[:-5])
            if data is not None:
                out.append(data)
    return out


def create(paths: Any, name: str, subnet: str | None, options: dict[str, str]) -> dict[str, Any]:
    check_name(name)
    existing = listing(paths)
    if any(n.get("name") == name for n in existing):
        raise UsageError(f"network {name!r} already exists", exit_code=125)
    taken = [n["subnet"] for n in existing if n.get("subnet")]
    if subnet:
        parse_subnet(subnet)
        for other in [*RESERVED, *taken]:
            if overlaps(subnet, other):
                raise UsageError(f"subnet {subnet} overlaps {other} (used by another network "
                                 "or by the user-mode helper)")
    else:
        subnet = free_subnet([*RESERVED, *taken])
    data = {"name": name, "id": os.urandom(32).hex(), "driver": "bridge", "subnet": subnet,
            "gateway": gateway(subnet), "options": options, "created": time.time()}
    os.makedirs(definitions_dir(paths), mode=0o700, exist_ok=True)
    path = definition_path(paths, name)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    try:
        os.link(tmp, path)  # fails if a concurrent create won the name
    except FileExistsError:
        raise UsageError(f"network {name!r} already exists") from None
    finally:
        os.unlink(tmp)
    return data


def lock(paths: Any, name: str, blocking: bool = True) -> int | None:
    """flock the definition; the fd (close it to unlock), or None: no such network / busy."""
    import fcntl

    try:
        fd = os.open(definition_path(paths, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
