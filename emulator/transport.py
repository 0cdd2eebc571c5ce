"""A small HTTP/1.1 server over TLS on asyncio, with keep-alive, run in a background thread.

The stdlib ThreadingHTTPServer spends most of its time parsing headers with the email package and
switching threads; one event loop with a minimal parser is several times faster on two cores.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus

from emulator.app import HttpRequest, HttpResponse

__all__ = ["HttpServer"]

MAX_HEAD = 64 * 1024
MAX_BODY = 50 * 1024 * 1024
_REASONS = {s.value: s.phrase for s in HTTPStatus}


def _encode(response: HttpResponse, keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    lines.append(f"Content-Length: {len(response.body)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked request body (RFC 9112 7.1), trailers read and dropped; ValueError when malformed or too big."""
    chunks: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        # Chunk extensions (";name=value") carry nothing the emulator needs.
        length = int(line[:-2].split(b";", 1)[0].strip(), 16)
        if length < 0:
            raise ValueError("bad chunk size")
        if length == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(chunks)
        size += length
        if size > MAX_BODY:
            raise ValueError("chunked body too big")
        chunks.append(await reader.readexactly(length))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")


class HttpServer:
    """Serves ``app`` on ``host:port`` (0 picks a free port) until ``stop``."""

    def __init__(self, app: Callable[[HttpRequest], HttpResponse], context: ssl.SSLContext,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._context = context
        self._host = host
        self._port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulator-http", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    def start(self) -> int:
        """Bind, start serving in the background and return the port."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._bind(), self._loop)
        return future.result(timeout=30)

    async def _bind(self) -> int:
        self._server = await asyncio.start_server(self._serve, self._host, self._port, ssl=self._context,
                                                  limit=MAX_HEAD, backlog=256)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        """Stop accepting, close every connection and end the loop thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that goes away or speaks garbage just loses its connection
        except asyncio.CancelledError:
            pass  # shutting down: the connection is closed below
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        method, target, version, headers = _parse_head(head[:-4])
        # A chunked body wins over any Content-Length (RFC 9112 6.3); clients that stream their bodies send one.
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        else:
            length = int(headers.get("content-length") or 0)
            if not 0 <= length <= MAX_BODY:
                raise ValueError("bad Content-Length")
            body = await reader.readexactly(length) if length else b""
        response = self._app(HttpRequest(method, target, headers, body))
        if response.delay > 0:
            await asyncio.sleep(response.delay)
        if response.drop:
            return False
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        writer.write(_encode(response, keep_alive))
        await writer.drain()
        return keep_alive
