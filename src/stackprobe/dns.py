"""A tiny DNS SRV client over UDP (RFC 1035 / RFC 2782), stdlib only.

Service registries such as Consul answer DNS on their own port; this asks one SRV question
there and reads the answer, with the A records of the additional section, without any
resolver configuration of the machine getting in the way.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct
from dataclasses import dataclass, field

from stackprobe.errors import ServiceError

TYPE_A = 1
TYPE_SRV = 33
CLASS_IN = 1
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
MAX_PACKET = 65535


class DnsError(ServiceError):
    """The DNS server could not be asked, or its answer could not be read (one line)."""


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    port: int
    target: str
    ttl: int


@dataclass(frozen=True)
class SrvAnswer:
    """What the server said: its response code, the SRV records and the A records it added."""

    rcode: str
    records: list[SrvRecord]
    addresses: dict[str, list[str]] = field(default_factory=dict)  # target -> IPv4 addresses
    truncated: bool = False


def encode_query(name: str, qtype: int = TYPE_SRV, query_id: int | None = None) -> bytes:
    """A recursion-desired query for one name."""
    qid = secrets.randbits(16) if query_id is None else query_id
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad DNS label {label!r} in {name!r}")
        labels += bytes([len(raw)]) + raw
    return header + labels + b"\x00" + struct.pack("!HH", qtype, CLASS_IN)


def _read_name(packet: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed name at `offset`; returns it and the offset after it."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    while True:
        if offset >= len(packet):
            raise DnsError("truncated name in DNS answer")
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(packet):
                raise DnsError("truncated pointer in DNS answer")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 32:
                raise DnsError("DNS name compression loop")
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            continue
        if length == 0:
            return ".".join(labels) + ".", end if end is not None else offset + 1
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length


def decode_answer(packet: bytes, query_id: int | None = None) -> SrvAnswer:
    """Parse a DNS response: SRV records of the answer section, A records of all sections."""
    if len(packet) < 12:
        raise DnsError(f"DNS answer too short ({len(packet)} bytes)")
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", packet[:12])
    if query_id is not None and qid != query_id:
        raise DnsError(f"DNS answer id {qid} does not match query id {query_id}")
    if not flags & 0x8000:
        raise DnsError("DNS packet is not a response")
    offset = 12
    for _ in range(qd):
        _, offset = _read_name(packet, offset)
        offset += 4
    records: list[SrvRecord] = []
    addresses: dict[str, list[str]] = {}
    for index in range(an + ns + ar):
        name, offset = _read_name(packet, offset)
        if offset + 10 > len(packet):
            raise DnsError("truncated resource record in DNS answer")
        rtype, _rclass, ttl, rdlength = struct.unpack("!HHIH", packet[offset : offset + 10])
        offset += 10
        rdata_at = offset
        offset += rdlength
        if offset > len(packet):
            raise DnsError("truncated record data in DNS answer")
        if rtype == TYPE_SRV and index < an:
            priority, weight, port = struct.unpack("!HHH", packet[rdata_at : rdata_at + 6])
            target, _ = _read_name(packet, rdata_at + 6)
            records.append(SrvRecord(priority, weight, port, target, ttl))
        elif rtype == TYPE_A and rdlength == 4:
            addresses.setdefault(name.lower(), []).append(socket.inet_ntoa(packet[rdata_at:offset]))
    rcode = RCODES.get(flags & 0x000F, str(flags & 0x000F))
    return SrvAnswer(rcode, records, addresses, truncated=bool(flags & 0x0200))


async def query_srv(host: str, port: int, name: str, timeout: float = 2.0) -> SrvAnswer:
    """Ask `host:port` over UDP for the SRV records of `name`; DnsError on no answer."""
    qid = secrets.randbits(16)
    query = encode_query(name, TYPE_SRV, qid)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DnsError(f"cannot resolve DNS server {host}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, address)
                await loop.sock_sendall(sock, query)
                while True:  # ignore stray datagrams that are not the answer to our query
                    packet = await loop.sock_recv(sock, MAX_PACKET)
                    if len(packet) >= 2 and struct.unpack("!H", packet[:2])[0] == qid:
                        return decode_answer(packet, qid)
        except TimeoutError:
            raise DnsError(f"no DNS answer from {host}:{port} within {timeout:g} s") from None
        except OSError as exc:
            raise DnsError(
                f"DNS query to {host}:{port} failed: {exc.strerror or type(exc).__name__}"
            ) from None
