"""API worker processes for ``gpucaas up --api-workers N``: one slow request or a burst of
submits no longer stalls every other request behind one Python process.

The process that runs :func:`gpucaas.control.serve` (the *leader*) keeps the scheduler (it
holds the lease) and the backend (only it starts and stops containers). It binds the
listening socket once, then forks N workers before any thread starts; each worker serves
that socket (the kernel hands each new connection to one of them) with an app of its own
over its own store connection. The leader itself serves only a loopback socket for what
workers forward to it, so its scheduler passes (and the GIL they hold) never delay a
tenant's request: with one process the two shared a GIL, and at 200 requests/s the API
fell behind by tens of seconds.

A worker answers the tenants' routes itself (submit, list, get, events, logs, stop): they
need only the store and, for logs, the files the leader's executor writes. Routes that read
or change the leader's memory (``/v1/admin/...``: the fleet, cordons, drains, tenants and
tokens; ``/healthz``, whose ``scheduler_passes`` is the scheduler's heartbeat; ``/metrics``)
are forwarded to the leader over a loopback socket that only it serves. A submit or stop in
a worker wakes the leader's scheduler through a pipe (one byte, no wait); without it the
scheduler would still find the container on its next idle pass (0.5 s later at most).

What this refuses to do: it does not share log-follow bounds between processes (each
process enforces ``--max-followers-per-tenant`` and ``--max-followers`` for the streams it
serves), and ``/metrics`` counts only the requests the leader served.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._limits import Limits, RequestLimits, error_body
from ._scheduler import Scheduler

WORKER_HEADER = "x-gpucaas-worker"
"""Response header, only with ``--api-workers`` above 1: the pid of the process that took
the request's connection (where requests go; tests and benchmarks read it)."""
LEADER_ROUTES = ("/v1/admin/", "/healthz", "/metrics")
"""Path prefixes a worker forwards to the leader (they read or change its memory)."""
FORWARD_TIMEOUT_S = 60.0
JOIN_S = 10.0
"""How long the leader waits for its workers to exit after asking them to stop."""
_WAKE = b"w"
_WAKE_STOPS = b"s"
_PR_SET_PDEATHSIG = 1
_HOP_BY_HOP = frozenset(
    [b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host"]
    + [b"content-length", b"proxy-connection", b"trailer"]
)


def listen_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound once so that every worker inherits it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class WakePipe:
    """Workers' submits and stops wake the leader's scheduler: one byte down a pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)

    def send(self, *, stops: bool) -> None:
        try:
            os.write(self.write_fd, _WAKE_STOPS if stops else _WAKE)
        except BlockingIOError:
            pass  # the pipe is full of wakes the scheduler has yet to read: it will pass soon
        except OSError as exc:  # the leader is gone; its successor finds the work anyway
            if exc.errno != errno.EPIPE:
                raise

    def relay(self, wake: Callable[[bool], None]) -> threading.Thread:
        """In the leader: a thread that calls ``wake(stops)`` for what workers send; it ends
        when every write end is closed (:meth:`close_writer` here, workers' exit)."""

        def run() -> None:
            while True:
                try:
                    data = os.read(self.read_fd, 4096)
                except OSError:
                    return
                if not data:
                    return
                wake(_WAKE_STOPS in data)

        thread = threading.Thread(target=run, name="worker-wakes", daemon=True)
        thread.start()
        return thread

    def close_writer(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.write_fd)

    def close_reader(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read_fd)


class WorkerScheduler(Scheduler):
    """A worker's scheduler: never leads (nobody calls :meth:`run` or :meth:`lead`); its
    :meth:`wake` wakes the leader's instead."""

    def __init__(self, *args: Any, wakes: WakePipe, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wakes = wakes

    def wake(self, *, stops: bool = False) -> None:
        self._wakes.send(stops=stops)


class ServedBy:
    """ASGI middleware: a :data:`WORKER_HEADER` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = (WORKER_HEADER.encode(), str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


class ToLeader:
    """ASGI middleware of a worker: :data:`LEADER_ROUTES` go to the leader, whole (they are
    small and bounded by the :class:`RequestLimits` outside this one)."""

    def __init__(self, app: ASGIApp, leader_url: str) -> None:
        self.app = app
        self.client = httpx.AsyncClient(
            base_url=leader_url, timeout=FORWARD_TIMEOUT_S, follow_redirects=False
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(LEADER_ROUTES):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _HOP_BY_HOP]
        try:
            reply = await self.client.request(
                scope["method"],
                scope.get("raw_path", path.encode()).decode("latin-1"),
                params=scope.get("query_string", b"").decode("latin-1") or None,
                headers=headers,
                content=bytes(body),
            )
        except httpx.HTTPError as exc:
            status, content = (
                503,
                error_body(
                    503,
                    "Unavailable",
                    "this API worker could not reach the scheduler's process "
                    f"({type(exc).__name__}); retry, or call the operator if it persists",
                ),
            )
            out = [(b"content-type", b"application/json")]
        else:
            status, content = reply.status_code, reply.content
            out = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in reply.headers.multi_items()
                # The worker's own WORKER_HEADER names the process the client talked to.
                if k.lower().encode() not in _HOP_BY_HOP and k.lower() != WORKER_HEADER
            ]
        out.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})


def worker_app(app: ASGIApp, leader_url: str, limits: Limits) -> ASGIApp:
    return ServedBy(RequestLimits(ToLeader(app, leader_url), limits))


def _die_with_parent() -> None:
    """A worker ends when the leader does, even by SIGKILL (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def fork_workers(count: int, serve_worker: Callable[[], None]) -> list[int]:
    """Fork ``count`` workers that each run ``serve_worker()`` and exit; returns their pids.
    Call before any thread starts (a forked child has only the forking thread)."""
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                _die_with_parent()
                serve_worker()
                status = 0
            finally:
                os._exit(status)  # never the parent's atexit handlers or its store's finalizers
        pids.append(pid)
    return pids


def stop_workers(pids: Sequence[int], *, timeout_s: float = JOIN_S) -> None:
    """SIGTERM each worker, wait ``timeout_s`` in all, SIGKILL what is left, reap all."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    left = set(pids)
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
