"""Following a container's log without holding a thread: bounded, and ended by a client
that goes away or a server that stops.

A follower waits on a quiet container for as long as it runs, so it must cost the API
nothing but a coroutine: the stream is an async generator on the server's event loop (the
backend's :meth:`~gpucaas.control.Backend.follow_logs`), never a thread of the pool that
serves every other request. Each one still holds a socket and a little memory, so
:class:`Followers` bounds them per tenant and in all (429 beyond), and its ``closing`` flag
ends them all when the server stops, so shutdown never waits on an open stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ._errors import FollowersClosed, TooManyFollowers

MAX_FOLLOWERS_PER_TENANT = 8
"""Default bound of a tenant's open ``logs?follow=true`` streams (``gpucaas up
--max-followers-per-tenant``, ``GPUCAAS_MAX_FOLLOWERS_PER_TENANT``)."""
MAX_FOLLOWERS = 256
"""Default bound of all open follow streams of one API process (``--max-followers``,
``GPUCAAS_MAX_FOLLOWERS``)."""
POLL_S = 0.25
"""How often an idle stream checks for a disconnected client or a closing server."""


class Followers:
    """The open follow streams of one API process, counted per tenant.

    Thread-safe: slots are taken on the event loop and may be counted from any thread.
    """

    def __init__(
        self, per_tenant: int = MAX_FOLLOWERS_PER_TENANT, total: int = MAX_FOLLOWERS
    ) -> None:
        if per_tenant < 1 or total < 1:
            raise ValueError(f"follower bounds must be at least 1, got {per_tenant}, {total}")
        self.per_tenant = per_tenant
        self.total = total
        self.closing = threading.Event()
        """Set when the server stops: every stream ends at its next poll, none starts."""
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def count(self, tenant: str | None = None) -> int:
        """Open streams of ``tenant`` (None: of everyone)."""
        with self._lock:
            return sum(self._open.values()) if tenant is None else self._open.get(tenant, 0)

    def acquire(self, tenant: str) -> None:
        """Take a slot for ``tenant``; :meth:`release` gives it back.

        Raises :class:`TooManyFollowers` (429) beyond a bound, :class:`FollowersClosed`
        (503) once the server is stopping.
        """
        if self.closing.is_set():
            raise FollowersClosed()
        with self._lock:
            mine = self._open.get(tenant, 0)
            if mine >= self.per_tenant:
                raise TooManyFollowers(tenant, self.per_tenant, "tenant")
            if sum(self._open.values()) >= self.total:
                raise TooManyFollowers(tenant, self.total, "server")
            self._open[tenant] = mine + 1

    def release(self, tenant: str) -> None:
        """Give back a slot of :meth:`acquire` (idempotent beyond zero)."""
        with self._lock:
            left = self._open.get(tenant, 0) - 1
            if left > 0:
                self._open[tenant] = left
            else:
                self._open.pop(tenant, None)

    def close(self) -> None:
        """End every stream at its next poll and refuse new ones (the server stops)."""
        self.closing.set()


async def guarded(
    source: AsyncIterator[bytes],
    *,
    disconnected: Callable[[], Awaitable[bool]],
    closing: threading.Event,
    release: Callable[[], None],
    poll_s: float = POLL_S,
    first: asyncio.Future[bytes] | None = None,
) -> AsyncIterator[bytes]:
    """``source``'s chunks until it ends, the client disconnects or the server is closing;
    then ``source`` is closed and ``release`` called, whichever way the stream ended
    (cancelled by the server included). ``first``: a read of ``source`` already under way.
    """
    pending: asyncio.Future[bytes] | None = first
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=poll_s)
            if not done:
                if closing.is_set() or await disconnected():
                    return
                continue
            read, pending = pending, None
            try:
                chunk = read.result()
            except StopAsyncIteration:
                return
            yield chunk
            if closing.is_set():
                return
    finally:
        try:
            await close(source, pending)
        finally:
            release()


async def close(source: AsyncIterator[bytes], pending: asyncio.Future[bytes] | None) -> None:
    """Stop a read of ``source`` under way, then close ``source`` (its connection, file)."""
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pending
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


class FollowResponse(StreamingResponse):
    """A streaming response that runs ``on_close`` however it ends, even when it is
    cancelled before its body was ever iterated (a client gone before the first byte)."""

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, media_type="text/plain; charset=utf-8")
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()
