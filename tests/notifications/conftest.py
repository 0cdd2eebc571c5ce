"""Real local endpoints for delivery tests: an HTTP server (webhooks) and an SMTP server (aiosmtpd), each of
which a test can take down (connections refused) and bring back on the same port, or make drop a connection
once the request or message has arrived (so the sender cannot tell whether it was taken)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from prometheus_client import REGISTRY

from worker.devstack.redis_server import free_loopback_port


def metric(kind: str, channel: str, outcome: str) -> float:
    """Current value of crmsync_notifications_total for one label set (0 if never incremented)."""
    value = REGISTRY.get_sample_value("crmsync_notifications_total",
                                      {"kind": kind, "channel": channel, "outcome": outcome})
    return value or 0.0


@dataclass
class HookServer:
    """Records each POST; answers with the next queued status (200 once the queue is empty), or, with ``drop``,
    closes the connection without answering once the POST is in. With ``tls``, serves HTTPS."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    drop: bool = False
    port: int = 0
    server: ThreadingHTTPServer | None = None
    tls: ssl.SSLContext | None = None

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)

    def up(self) -> None:
        """Serve on ``port`` (a free one the first time)."""
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                # Recorded before answering, so a client that got its answer always finds its request here.
                with state.arrived:
                    status = state.statuses.pop(0) if state.statuses else 200
                    state.paths.append(self.path)
                    state.headers.append(dict(self.headers))
                    state.requests.append({"status": status, "content_type": self.headers.get("Content-Type"),
                                           "body": json.loads(body)})
                    state.arrived.notify_all()
                if state.drop:
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop serving: connections to the port are refused until ``up``."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def hook_server() -> Iterator[HookServer]:
    state = HookServer()
    state.up()
    yield state
    state.down()


@dataclass
class MailServer:
    """Keeps each message it accepts (``reply`` 250); with ``drop``, takes the message in and closes the
    connection without answering it."""

    host: str
    port: int
    messages: list[tuple[Envelope, Message]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    reply: str = "250 OK"
    drop: bool = False
    controller: Controller | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.reply.startswith("250"):
            with self.arrived:
                self.messages.append((envelope, message_from_bytes(envelope.original_content or b"")))
                self.arrived.notify_all()
        if self.drop and server.transport is not None:
            server.transport.close()
        return self.reply

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=password == "smtp-pass-0123456789", handled=False)  # handled=False: reply 535

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.messages) >= count, timeout)

    def up(self) -> None:
        """Serve on ``port``."""
        self.controller = Controller(self, hostname=self.host, port=self.port, authenticator=self.authenticate,
                                     auth_require_tls=False)
        self.controller.start()

    def down(self) -> None:
        """Stop serving: connections to the port are refused until ``up``."""
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    state = MailServer("127.0.0.1", free_loopback_port())
    state.up()
    yield state
    state.down()
