"""A fault injector for Redis: a TCP proxy that rewrites chosen commands on their way in.

It sits between a check and a real redis-server. Replies are passed back untouched and in
order (each rewritten command still gets exactly one reply), so the client sees a real server
that misbehaves in one precise way, e.g. ignores PEXPIRE or drops PUBLISH.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator

Command = list[bytes]
Rewrite = Callable[[Command], Command]


def ignore_expiry(cmd: Command) -> Command:
    """TTLs are silently not set: PEXPIRE/EXPIRE become PTTL/TTL, SET loses PX/EX."""
    name = cmd[0].upper()
    if name in (b"PEXPIRE", b"EXPIRE"):
        return [b"PTTL" if name == b"PEXPIRE" else b"TTL", cmd[1]]
    if name == b"SET":
        out, skip = [], False
        for arg in cmd:
            if skip:
                skip = False
                continue
            if arg.upper() in (b"PX", b"EX"):
                skip = True
                continue
            out.append(arg)
        return out
    return cmd


def drop_publish(cmd: Command) -> Command:
    """PUBLISH goes to a channel nobody listens on."""
    if cmd[0].upper() == b"PUBLISH":
        return [cmd[0], cmd[1] + b"-void", cmd[2]]
    return cmd


def stale_incr(cmd: Command) -> Command:
    """INCR/INCRBY do not increment (a cache version never moves)."""
    if cmd[0].upper() in (b"INCR", b"INCRBY"):
        return [b"INCRBY", cmd[1], b"0"]
    return cmd


def _encode(cmd: Command) -> bytes:
    return b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in cmd)


async def _read_command(reader: asyncio.StreamReader) -> Command | bytes | None:
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line  # inline command: forwarded as is
    args = []
    for _ in range(int(line[1:].strip())):
        size = int((await reader.readline())[1:].strip())
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


class RespProxy:
    """Runs in its own thread with its own loop, so sync and async tests can both use it."""

    def __init__(self, upstream_port: int, rewrite: Rewrite) -> None:
        self.upstream_port = upstream_port
        self.rewrite = rewrite
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def upstream() -> None:
            while (cmd := await _read_command(client_r)) is not None:
                up_w.write(cmd if isinstance(cmd, bytes) else _encode(self.rewrite(cmd)))
                await up_w.drain()
            up_w.close()  # the client left: let the server close its side too

        async def downstream() -> None:
            while data := await up_r.read(65536):
                client_w.write(data)
                await client_w.drain()

        try:
            with contextlib.suppress(
                ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError
            ):
                await asyncio.gather(upstream(), downstream())
        finally:
            for writer in (up_w, client_w):
                writer.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[RespProxy]:
        self._thread.start()
        self._ready.wait(5)
        try:
            yield self
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
