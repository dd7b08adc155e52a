"""Size limits the API enforces before anything else runs, authentication included.

Without them a client with no token could make the server hold a 10 MB ``Authorization``
header or a 50 MB body in memory before it answered 401. :class:`RequestLimits` is a plain
ASGI middleware, outermost, so it runs before routing, authentication and body parsing:

- request headers larger than ``max_header_bytes`` in all: 431, nothing else read;
- a ``Content-Length`` above ``max_body_bytes``: 413 at once, the body is never read;
- a body sent without a length (chunked) is counted as it arrives and cut off at the limit
  with the same 413, so at most ``max_body_bytes`` are ever held.

The HTTP parser in front of the app (uvicorn's h11, ``h11_max_incomplete_event_size``) bounds
what it buffers before the app sees a request at all; see :func:`uvicorn_limits`.
Every refusal is in the API's error envelope, ``{"error": {"type", "message", "details"}}``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1 << 20
"""Default of ``gpucaas up --max-body-bytes``: a request body (a container's spec is far less)."""
MAX_HEADER_BYTES = 16 << 10
"""Default of ``gpucaas up --max-header-bytes``: all request headers together."""
MAX_ENV_BYTES = 64 << 10
"""Default of ``gpucaas up --max-env-bytes``: a container's env, names and values together."""
MAX_COMMAND_BYTES = 64 << 10
"""Default of ``gpucaas up --max-command-bytes``: a container's command and args together."""
MAX_LOG_BYTES = 16 << 20
"""Default of ``gpucaas up --max-log-bytes``: the tail of a container's log that is kept."""


@dataclass(frozen=True)
class Limits:
    """What the API accepts; one field per ``gpucaas up`` option (``--max-…``)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_header_bytes: int = MAX_HEADER_BYTES
    max_env_bytes: int = MAX_ENV_BYTES
    max_command_bytes: int = MAX_COMMAND_BYTES


def uvicorn_limits(limits: Limits) -> dict[str, Any]:
    """uvicorn options that bound what its HTTP parser buffers before the app runs.

    httptools (uvicorn's default parser when installed) buffers headers of any size; h11
    stops at ``h11_max_incomplete_event_size`` and closes the connection, so a 10 MB
    header is never read whole. The bound is above the app's own limit so that a request
    just over it still gets the 431 in the envelope."""
    return {"http": "h11", "h11_max_incomplete_event_size": 4 * limits.max_header_bytes + 8192}


def error_body(status: int, kind: str, message: str) -> bytes:
    return json.dumps({"error": {"type": kind, "message": message, "details": []}}).encode()


class RequestLimits:
    """The ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, limits: Limits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = self.limits
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        size = sum(len(k) + len(v) + 4 for k, v in headers)
        if size > limits.max_header_bytes:
            await _refuse(
                send,
                431,
                "HeadersTooLarge",
                f"the request headers are {size} bytes, more than the limit of "
                f"{limits.max_header_bytes}; send a shorter Authorization header (a gpucaas "
                "token is under 100 characters)",
            )
            return
        length = None
        for key, value in headers:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _refuse(send, 400, "BadRequest", "Content-Length is not a number")
                    return
        if length is not None and length > limits.max_body_bytes:
            await _refuse(send, 413, "BodyTooLarge", _body_message(length, limits))
            return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and length is None:
            await self.app(scope, receive, send)
            return
        # Read the body here, up to the limit, then hand it to the app in one piece.
        chunks: list[bytes] = []
        got = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            got += len(chunk)
            if got > limits.max_body_bytes:
                await _refuse(send, 413, "BodyTooLarge", _body_message(got, limits, more=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(chunks, None, receive), send)


def _replay(chunks: list[bytes], first: Message | None, receive: Receive) -> Receive:
    pending: list[Message] = [first] if first is not None else []
    if first is None:
        pending.append({"type": "http.request", "body": b"".join(chunks), "more_body": False})

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()  # after the body: the disconnect, when it comes

    return replay


def _body_message(size: int, limits: Limits, *, more: bool = False) -> str:
    at_least = "at least " if more else ""
    return (
        f"the request body is {at_least}{size} bytes, more than the limit of "
        f"{limits.max_body_bytes}; a container's env and command have limits of their own "
        "(see the README's configuration reference)"
    )


async def _refuse(send: Send, status: int, kind: str, message: str) -> None:
    body = error_body(status, kind, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
