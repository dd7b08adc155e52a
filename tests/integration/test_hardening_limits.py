"""Issue 13, item 11, through a real server with ``gpucaas up``'s uvicorn options: a client
without a token cannot make the server read a 10 MB header or a 50 MB body."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from gpucaas.control import ControlPlane, ControlPlaneConfig
from gpucaas.control._limits import uvicorn_limits


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    config = ControlPlaneConfig(
        state_dir=Path(tmp_path_factory.mktemp("limits")), nodes=1, executor="process"
    )
    plane = ControlPlane(config)
    server = uvicorn.Server(
        uvicorn.Config(
            plane.app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            **uvicorn_limits(config.limits()),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        plane.stop()


def answer(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def test_a_50mb_body_without_a_token_is_refused_unread(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/containers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n" + b"{" * 1000
        )
        reply = answer(sock)  # the rest of the 50 MB is never sent: the answer comes anyway
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"error"' in reply


def test_a_10mb_authorization_header_is_not_read_whole(port: int) -> None:
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(30)
        head = b"GET /v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        try:
            sock.sendall(head)
            for _ in range(160):  # 10 MB in 64 KB pieces
                sock.sendall(b"x" * 65536)
                sent += 65536
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed: what we want
        reply = answer(sock)
    assert reply == b"" or reply.split(b" ")[1] in (b"400", b"431"), reply[:200]
    assert sent < 10 * 65536 * 16, "the server read the whole 10 MB header"


def test_headers_just_over_the_limit_get_a_431_in_the_envelope(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"GET /v1/containers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + b"x" * 20_000
            + b"\r\nConnection: close\r\n\r\n"
        )
        reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 431"), reply[:200]
    assert b'"HeadersTooLarge"' in reply
