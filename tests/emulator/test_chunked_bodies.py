"""Request bodies sent chunked (no Content-Length), as clients that stream their bodies send them."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

from emulator import EmulatorServer
from tests.emulator.conftest import salesforce, session_for


def _pieces(data: bytes, size: int = 7) -> Iterator[bytes]:
    # A generator body makes requests send Transfer-Encoding: chunked, one chunk per piece.
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_token_refresh_with_a_chunked_body(emu: EmulatorServer) -> None:
    org = emu.orgs["acme"]
    form = urlencode({"grant_type": "refresh_token", "refresh_token": org.refresh_token,
                      "client_id": org.client_id, "client_secret": org.client_secret}).encode()
    response = session_for(emu).post(org.token_url, data=_pieces(form), timeout=30,
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert emu.control.request_log("acme")[-1]["status"] == 200
    session = session_for(emu)
    session.headers["Authorization"] = f"Bearer {token}"
    assert session.get(f"{emu.base_url}/services/data/v59.0/limits/", timeout=30).status_code == 200


def test_a_chunked_json_body_creates_a_record(emu: EmulatorServer) -> None:
    session = session_for(emu)
    session.headers["Authorization"] = f"Bearer {emu.orgs['acme'].access_token}"
    body = b'{"LastName": "Chunked", "Company": "Streams Inc"}'
    response = session.post(f"{emu.base_url}/services/data/v59.0/sobjects/Lead/", data=_pieces(body, 3),
                            headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 201, response.text
    record = salesforce(emu).Lead.get(response.json()["id"])
    assert (record["LastName"], record["Company"]) == ("Chunked", "Streams Inc")


def _raw(emu: EmulatorServer, request: bytes) -> bytes:
    """Send bytes over TLS and read until the server closes or answers."""
    address = urlsplit(emu.base_url)
    context = ssl.create_default_context(cafile=emu.ca_bundle)
    with socket.create_connection((address.hostname or "", address.port or 443), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname=address.hostname) as tls:
        tls.sendall(request)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
        return received


def test_chunk_extensions_and_trailers_are_read_and_the_answer_has_a_length(emu: EmulatorServer) -> None:
    org = emu.orgs["acme"]
    form = urlencode({"grant_type": "client_credentials", "client_id": org.client_id,
                      "client_secret": org.client_secret}).encode()
    half = len(form) // 2
    body = (f"{half:x};note=first\r\n".encode() + form[:half] + b"\r\n"
            + f"{len(form) - half:X}\r\n".encode() + form[half:] + b"\r\n"
            + b"0\r\nX-Trailer: yes\r\n\r\n")
    head = (b"POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
    answer = _raw(emu, head + body)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: " in answer
    assert b"access_token" in answer


def test_a_malformed_chunked_body_closes_the_connection_unanswered(emu: EmulatorServer) -> None:
    head = (b"POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    assert _raw(emu, head + b"zz\r\nabc\r\n0\r\n\r\n") == b""
    assert _raw(emu, head + b"3\r\nabcXY0\r\n\r\n") == b""
    assert emu.control.request_log("acme") == []
