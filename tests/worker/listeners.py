"""Real sockets on loopback that misbehave on purpose, for the metering and token-confinement tests.

Each ``Listener`` accepts connections in a thread and hands each one to a behaviour; it records how many
connections it accepted and every byte of the requests it read, so a test can assert that a host received
nothing at all. TLS listeners present a certificate from their own throwaway CA (``ca_pem``), which a test
trusts or not.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Self

import trustme

__all__ = ["Behaviour", "Listener", "TlsAuthority", "closed_port", "unanswered_port"]

Behaviour = Callable[["Listener", socket.socket], None]


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A loopback port whose listen queue is full (one connection waiting, never accepted): the kernel drops
    further connection attempts, so a connect to it runs into its timeout."""
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server, \
            socket.create_connection(server.getsockname()):
        yield int(server.getsockname()[1])


class TlsAuthority:
    """A throwaway CA and a server context with a certificate for 127.0.0.1 and localhost."""

    def __init__(self) -> None:
        self.ca = trustme.CA(organization_name="crmsync test listener")
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(self.context)

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.ca.cert_pem.bytes()

    def bundle(self, path: Path, *others: str | Path) -> str:
        """Write a CA bundle trusting this CA and the bundles ``others``; returns its path."""
        path.write_bytes(self.ca_pem + b"".join(Path(other).read_bytes() for other in others))
        return str(path)


class Listener:
    """A loopback server whose connections get ``behaviour`` (TLS-wrapped first when ``tls`` is given)."""

    def __init__(self, behaviour: Behaviour, *, tls: TlsAuthority | None = None) -> None:
        self.behaviour = behaviour
        self.tls = tls
        self.accepted = 0
        self.received = bytearray()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT`` (the scheme a client uses whether or not it gets TLS)."""
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        thread = threading.Thread(target=self._accept, name=f"listener-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        self._server.settimeout(0.1)  # to notice the stop; a timeout here never decides a test
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.accepted += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            self.behaviour(self, conn)
        except OSError:
            pass  # the client went away, or the handshake failed: what the test looks at is the client's view
        finally:
            conn.close()

    # -- building blocks of behaviours ----------------------------------------------------------------------

    def handshake(self, conn: socket.socket) -> ssl.SSLSocket:
        """The server side of the TLS handshake on ``conn``."""
        assert self.tls is not None
        return self.tls.context.wrap_socket(conn, server_side=True)

    def read_request(self, conn: socket.socket) -> bytes:
        """Read up to the end of the request's headers (the requests in these tests have no body)."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        with self._lock:
            self.received += data
        return data

    def wait_for_close(self, conn: socket.socket) -> None:
        """Hold the connection until the client closes it (or the listener stops)."""
        conn.settimeout(0.1)  # to notice the stop; a timeout here never decides a test
        while not self._stop.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue


# -- behaviours ---------------------------------------------------------------------------------------------

def close_at_once(listener: Listener, conn: socket.socket) -> None:
    """Accept the TCP connection and close it: the client's TLS handshake fails, nothing of its request left."""


def stall_handshake(listener: Listener, conn: socket.socket) -> None:
    """Accept the TCP connection and never answer the client's TLS hello."""
    listener.wait_for_close(conn)


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> Behaviour:
    """Complete the handshake, read the request, answer ``status`` with ``headers`` and ``body``."""

    def behaviour(listener: Listener, conn: socket.socket) -> None:
        tls = listener.handshake(conn)
        listener.read_request(tls)
        lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json",
                 "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        tls.close()

    return behaviour


def garbage_after_request(listener: Listener, conn: socket.socket) -> None:
    """Complete the handshake, read the request, then write bytes that are no TLS record on the raw socket: the
    client's TLS layer fails while reading the answer, after its request arrived."""
    raw = os.dup(conn.fileno())
    try:
        tls = listener.handshake(conn)
        listener.read_request(tls)
        os.write(raw, b"HTTP/1.1 200 OK\r\nthis is not a TLS record\r\n\r\n" * 4)
        listener.wait_for_close(tls)
    finally:
        os.close(raw)


def reset_after_request(listener: Listener, conn: socket.socket) -> None:
    """Complete the handshake, read the request, and reset the connection without an answer."""
    tls = listener.handshake(conn)
    listener.read_request(tls)
    tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    tls.close()


def silent_after_request(listener: Listener, conn: socket.socket) -> None:
    """Complete the handshake, read the request, and never answer."""
    tls = listener.handshake(conn)
    listener.read_request(tls)
    listener.wait_for_close(tls)
