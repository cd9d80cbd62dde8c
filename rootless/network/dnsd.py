"""A tiny DNS responder for an rl network: container names → addresses, the rest forwarded.

It answers A queries for the names of the network's members (container name and hostname) and
NODATA for their other record types; any other question is relayed unchanged to the user-mode
helper's resolver. Names are looked up live, so a container that joins later is found by those
already running: no /etc/hosts to rewrite. Wire format: RFC 1035 section 4.1.
"""

from __future__ import annotations

import struct

TYPE_A = 1
CLASS_IN = 1
TTL = 5  # short: a name may move to a new address when a container is re-created


def parse_question(packet: bytes) -> tuple[int, str, int, int, int] | None:
    """(id, qname, qtype, qclass, end of the question) of a standard query, or None."""
    if len(packet) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if flags & 0x8000 or (flags >> 11) & 0xF != 0 or qdcount != 1:
        return None  # a response, not QUERY, or not one question
    labels = []
    pos = 12
    while True:
        if pos >= len(packet):
            return None
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0 or pos + length > len(packet):
            return None  # no compression in a question
        labels.append(packet[pos:pos + length].decode("ascii", errors="replace"))
        pos += length
    if pos + 4 > len(packet):
        return None
    qtype, qclass = struct.unpack("!HH", packet[pos:pos + 4])
    return qid, ".".join(labels).lower(), qtype, qclass, pos + 4


def answer(packet: bytes, names: dict[str, str]) -> bytes | None:
    """The reply for a query about a member, or None (forward it)."""
    q = parse_question(packet)
    if q is None:
        return None
    qid, qname, qtype, qclass, end = q
    addr = names.get(qname.rstrip("."))
    if addr is None or qclass != CLASS_IN:
        return None
    rd = struct.unpack("!H", packet[2:4])[0] & 0x0100
    records = b""
    count = 0
    if qtype == TYPE_A:
        # The name as a pointer to the question (offset 12), then type, class, TTL, address.
        records = struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, TTL, 4)
        records += bytes(int(x) for x in addr.split("."))
        count = 1
    flags = 0x8000 | 0x0400 | rd | 0x0080  # response, authoritative, RD echoed, RA
    return struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0) + packet[12:end] + records


def servfail(packet: bytes) -> bytes | None:
    """SERVFAIL for a query whose upstream did not answer."""
    q = parse_question(packet)
    if q is None:
        return None
    qid, _, _, _, end = q
    return struct.pack("!HHHHHH", qid, 0x8182, 1, 0, 0, 0) + packet[12:end]
