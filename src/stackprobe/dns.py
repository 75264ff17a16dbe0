"""One DNS SRV question to one server, through dnspython.

Service registries such as Consul answer DNS on their own port; this asks one SRV question
there over UDP (again over TCP when the answer is truncated) and reads the answer, with the
A records of the additional section, without the machine's resolver configuration getting in
the way. Failures are one-line `DnsError`s. (This module is `stackprobe.dns`; the absolute
`import dns.*` below is dnspython.)
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.SRV import SRV

from stackprobe.errors import ServiceError


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


def _answer(response: dns.message.Message) -> SrvAnswer:
    """SRV records of the answer section, A records of every section."""
    records = [
        SrvRecord(rd.priority, rd.weight, rd.port, rd.target.to_text(), rrset.ttl)
        for rrset in response.answer
        for rd in rrset
        if isinstance(rd, SRV)
    ]
    addresses: dict[str, list[str]] = {}
    for rrset in (*response.answer, *response.authority, *response.additional):
        for rd in rrset:
            if isinstance(rd, A):
                addresses.setdefault(rrset.name.to_text().lower(), []).append(rd.address)
    return SrvAnswer(
        dns.rcode.to_text(response.rcode()),
        records,
        addresses,
        truncated=bool(response.flags & dns.flags.TC),
    )


async def query_srv(host: str, port: int, name: str, timeout: float = 2.0) -> SrvAnswer:
    """Ask `host:port` for the SRV records of `name` (UDP, TCP if truncated); DnsError if not."""
    try:
        query = dns.message.make_query(name, "SRV")
    except dns.exception.DNSException as exc:
        raise DnsError(f"bad DNS name {name!r}: {exc}") from None
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DnsError(f"cannot resolve DNS server {host}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    where = str(address[0])
    backend = dns.asyncbackend.get_backend("asyncio")
    try:
        async with asyncio.timeout(timeout):  # UDP and the TCP retry together
            # connected, so that the ICMP refusal of a closed port is heard at once
            sock = await backend.make_socket(  # type: ignore[no-untyped-call]  # unannotated upstream
                family, socket.SOCK_DGRAM, 0, None, (where, port)
            )
            async with sock:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    query,
                    where,
                    timeout=timeout,
                    port=port,
                    ignore_unexpected=True,
                    udp_sock=sock,
                    backend=backend,
                    # a stray or garbled (even spoofed) datagram is not the answer: wait on
                    ignore_errors=True,
                )
    except (TimeoutError, dns.exception.Timeout):
        raise DnsError(f"no DNS answer from {host}:{port} within {timeout:g} s") from None
    except OSError as exc:
        raise DnsError(
            f"DNS query to {host}:{port} failed: {exc.strerror or type(exc).__name__}"
        ) from None
    except (dns.exception.DNSException, EOFError) as exc:
        raise DnsError(f"bad DNS answer from {host}:{port}: {exc or type(exc).__name__}") from None
    return _answer(response)
