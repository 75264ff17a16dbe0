"""The tiny DNS SRV client: queries as RFC 1035 lays them out, answers with name compression."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from stackprobe.dns import DnsError, SrvRecord, decode_answer, encode_query, query_srv


def test_a_query_is_one_srv_question_with_recursion_desired() -> None:
    packet = encode_query("web.service.consul", query_id=0x1234)
    assert packet[:12] == struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    assert packet[12:] == b"\x03web\x07service\x06consul\x00" + struct.pack("!HH", 33, 1)


def test_a_bad_label_is_refused() -> None:
    with pytest.raises(DnsError, match="bad DNS label"):
        encode_query("a..b")
    with pytest.raises(DnsError, match="bad DNS label"):
        encode_query("x" * 64 + ".consul")


def _answer(query_id: int, rcode: int = 0) -> bytes:
    """An answer shaped like Consul's: SRV with a compressed target, its A record additional."""
    question = encode_query("web.service.consul", query_id=query_id)[12:]
    header = struct.pack("!HHHHHH", query_id, 0x8500 | rcode, 1, 1, 0, 1)
    target = b"\x08c0000207\x04addr\x03dc1\xc0\x18"  # ...consul. via a pointer to offset 24
    srv_rdata = struct.pack("!HHH", 1, 1, 8080) + target
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 33, 1, 0, len(srv_rdata)) + srv_rdata
    target_at = 12 + len(question) + 2 + 10 + 6
    extra = struct.pack("!H", 0xC000 | target_at) + struct.pack("!HHIH", 1, 1, 0, 4)
    extra += socket.inet_aton("192.0.2.7")
    return header + question + answer + extra


def test_an_answer_is_read_with_compressed_names_and_additional_addresses() -> None:
    answer = decode_answer(_answer(7), query_id=7)
    assert answer.rcode == "NOERROR" and not answer.truncated
    assert answer.records == [SrvRecord(1, 1, 8080, "c0000207.addr.dc1.consul.", 0)]
    assert answer.addresses == {"c0000207.addr.dc1.consul.": ["192.0.2.7"]}


def test_malformed_answers_are_errors_not_crashes() -> None:
    good = _answer(7)
    with pytest.raises(DnsError, match="does not match"):
        decode_answer(good, query_id=8)
    with pytest.raises(DnsError, match="too short"):
        decode_answer(good[:5])
    with pytest.raises(DnsError, match="truncated"):
        decode_answer(good[:-3])
    loop = struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + b"\xc0\x0c"
    with pytest.raises(DnsError, match="loop"):
        decode_answer(loop)


def test_nxdomain_is_an_answer_with_no_records() -> None:
    header = struct.pack("!HHHHHH", 9, 0x8503, 1, 0, 0, 0)
    answer = decode_answer(header + encode_query("x.service.consul", query_id=9)[12:])
    assert (answer.rcode, answer.records) == ("NXDOMAIN", [])


def test_query_srv_talks_udp_and_ignores_stray_datagrams() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        port = server.getsockname()[1]

        async def serve() -> None:
            data, peer = await loop.sock_recvfrom(server, 512)
            qid = struct.unpack("!H", data[:2])[0]
            await loop.sock_sendto(server, _answer(qid ^ 1), peer)  # not ours: ignored
            await loop.sock_sendto(server, _answer(qid), peer)

        task = asyncio.create_task(serve())
        answer = await query_srv("127.0.0.1", port, "web.service.consul", timeout=2)
        await task
        server.close()
        assert [r.port for r in answer.records] == [8080]

    asyncio.run(scenario())


def test_silence_is_a_one_line_dns_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        with pytest.raises(DnsError) as exc:
            asyncio.run(query_srv("127.0.0.1", port, "web.service.consul", timeout=0.2))
    assert str(exc.value) == f"no DNS answer from 127.0.0.1:{port} within 0.2 s"
