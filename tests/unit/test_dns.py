"""The DNS SRV client against tiny real servers that answer with dnspython-built messages.

The answers are shaped like Consul's: an SRV record whose target is compressed on the wire,
its A record in the additional section; plus the ways a server can fail the client: silence,
a closed port, stray datagrams, a truncated UDP answer (asked again over TCP), a broken one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from stackprobe.dns import DnsError, SrvAnswer, SrvRecord, query_srv

NAME = "web.service.consul"
TARGET = "c0000207.addr.dc1.consul."
Answer = Callable[[dns.message.Message], list[bytes]]


def consul_like(query: dns.message.Message, *, truncated: bool = False) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if truncated:  # what a server does when the records do not fit in its UDP answer
        response.flags |= dns.flags.TC
        return response
    qname = query.question[0].name
    response.answer.append(dns.rrset.from_text(qname, 0, "IN", "SRV", f"1 1 8080 {TARGET}"))
    response.additional.append(dns.rrset.from_text(TARGET, 0, "IN", "A", "192.0.2.7"))
    return response


@contextlib.asynccontextmanager
async def dns_server(
    udp: Answer, tcp: Callable[[dns.message.Message], bytes] | None = None
) -> AsyncIterator[tuple[int, list[str]]]:
    """A UDP (and optionally TCP) server on one port; yields the port and the transports asked."""
    loop = asyncio.get_running_loop()
    asked: list[str] = []
    stream: asyncio.Server | None = None
    if tcp is not None:
        answer_tcp = tcp

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            size = int.from_bytes(await reader.readexactly(2), "big")
            asked.append("tcp")
            wire = answer_tcp(dns.message.from_wire(await reader.readexactly(size)))
            writer.write(len(wire).to_bytes(2, "big") + wire)
            await writer.drain()
            writer.close()

        stream = await asyncio.start_server(handle, "127.0.0.1", 0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", stream.sockets[0].getsockname()[1] if stream else 0))
    sock.setblocking(False)

    async def serve() -> None:
        while True:
            data, peer = await loop.sock_recvfrom(sock, 512)
            asked.append("udp")
            for packet in udp(dns.message.from_wire(data)):
                await loop.sock_sendto(sock, packet, peer)

    task = asyncio.create_task(serve())
    try:
        yield sock.getsockname()[1], asked
    finally:
        task.cancel()
        sock.close()
        if stream is not None:
            stream.close()


def truncated(query: dns.message.Message) -> list[bytes]:
    return [consul_like(query, truncated=True).to_wire()]


def ask(udp: Answer, tcp: Callable[[dns.message.Message], bytes] | None = None) -> SrvAnswer:
    async def scenario() -> SrvAnswer:
        async with dns_server(udp, tcp) as (port, _):
            return await query_srv("127.0.0.1", port, NAME, timeout=2)

    return asyncio.run(scenario())


def test_an_answer_is_read_with_compressed_names_and_additional_addresses() -> None:
    answer = ask(lambda q: [consul_like(q).to_wire()])
    assert answer.rcode == "NOERROR" and not answer.truncated
    assert answer.records == [SrvRecord(1, 1, 8080, TARGET, 0)]
    assert answer.addresses == {TARGET: ["192.0.2.7"]}


def test_nxdomain_is_an_answer_with_no_records() -> None:
    def nxdomain(query: dns.message.Message) -> list[bytes]:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NXDOMAIN)
        return [response.to_wire()]

    answer = ask(nxdomain)
    assert (answer.rcode, answer.records, answer.addresses) == ("NXDOMAIN", [], {})


def test_stray_and_garbled_datagrams_are_not_taken_for_the_answer() -> None:
    def noisy(query: dns.message.Message) -> list[bytes]:
        stray = consul_like(query)
        stray.id ^= 1  # an answer to some other query
        stray.answer[0] = dns.rrset.from_text(query.question[0].name, 0, "IN", "SRV", "1 1 9 x.")
        return [stray.to_wire(), b"\x00\x01garbage", consul_like(query).to_wire()]

    assert [r.port for r in ask(noisy).records] == [8080]


def test_a_truncated_answer_is_asked_again_over_tcp() -> None:
    async def scenario() -> tuple[SrvAnswer, list[str]]:
        async with dns_server(truncated, lambda q: consul_like(q).to_wire()) as (port, asked):
            return await query_srv("127.0.0.1", port, NAME, timeout=2), asked

    answer, asked = asyncio.run(scenario())
    assert asked == ["udp", "tcp"]
    assert answer.records == [SrvRecord(1, 1, 8080, TARGET, 0)] and not answer.truncated
    assert answer.addresses == {TARGET: ["192.0.2.7"]}


def test_a_broken_answer_is_a_one_line_dns_error() -> None:
    async def scenario() -> tuple[int, DnsError]:
        async with dns_server(truncated, lambda q: b"\x00\x07short") as (port, _):
            with pytest.raises(DnsError) as exc:
                await query_srv("127.0.0.1", port, NAME, timeout=2)
            return port, exc.value

    port, error = asyncio.run(scenario())
    assert str(error).startswith(f"bad DNS answer from 127.0.0.1:{port}: ")
    assert "\n" not in str(error)


def test_a_bad_name_is_refused_before_anything_is_sent() -> None:
    for name in ("a..b", "x" * 64 + ".consul"):
        with pytest.raises(DnsError, match=r"^bad DNS name "):
            asyncio.run(query_srv("127.0.0.1", 9, name, timeout=0.2))


def test_silence_is_a_one_line_dns_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        with pytest.raises(DnsError) as exc:
            asyncio.run(query_srv("127.0.0.1", port, NAME, timeout=0.2))
    assert str(exc.value) == f"no DNS answer from 127.0.0.1:{port} within 0.2 s"


def test_a_closed_port_is_refused_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        port = gone.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(DnsError) as exc:
        asyncio.run(query_srv("127.0.0.1", port, NAME, timeout=2))
    assert str(exc.value) == f"DNS query to 127.0.0.1:{port} failed: Connection refused"
    assert time.monotonic() - started < 1
