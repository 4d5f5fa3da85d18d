"""A webhook receiver for benchmarks: a process of its own that answers every POST with 204 at
once and notes when each `webhook-id` first arrived.

The receiver must not be what a benchmark measures: `http.server`'s threads answered about
1,800 posts/s here, fewer than the senders can deliver. This one is a bare asyncio protocol
(HTTP/1.1 keep-alive, Content-Length bodies: what the senders send), in its own process so
that it competes with the service for the CPU as a real receiver on the same machine would,
and not with the load generator's event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from multiprocessing.connection import Connection


class _Protocol(asyncio.Protocol):
    def __init__(self, arrivals: dict[str, float]) -> None:
        self.arrivals = arrivals
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            message_id = None
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    message_id = value.strip().decode()
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            self.buffer = self.buffer[end + 4 + length :]
            if message_id is not None:
                self.arrivals.setdefault(message_id, time.time())
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")


def _serve(listener: socket.socket, control: Connection) -> None:
    arrivals: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Protocol(arrivals), sock=listener)
        done = loop.create_future()

        def answer() -> None:
            request = control.recv()
            if request == "count":
                control.send(len(arrivals))
            elif request == "arrivals":
                control.send(dict(arrivals))
            else:
                done.set_result(None)

        loop.add_reader(control.fileno(), answer)
        async with server:
            await done

    asyncio.run(main())


class Receiver:
    """Start with `Receiver()`; `url` to post to, `count()` arrivals so far, `arrivals()` every
    id with its first arrival (time.time()), `close()` at the end."""

    def __init__(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._control, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(listener, child), daemon=True
        )
        self._process.start()
        listener.close()

    def count(self) -> int:
        self._control.send("count")
        return int(self._control.recv())

    def arrivals(self) -> dict[str, float]:
        self._control.send("arrivals")
        found: dict[str, float] = self._control.recv()
        return found

    def close(self) -> None:
        self._control.send("stop")
        self._process.join(timeout=5)
