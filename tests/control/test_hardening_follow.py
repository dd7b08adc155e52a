"""The parts of log following that hold no thread (issue 13, point 1): the bounds, the
guard that ends a stream on a disconnect or a stopping server, and the Kubernetes
backend's async pods/log stream, which must close its upstream connection when the
follower goes away."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from lightkube.config.kubeconfig import KubeConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from gpucaas.control import (
    Followers,
    FollowersClosed,
    KubernetesBackend,
    TooManyFollowers,
    Workload,
)
from gpucaas.control._follow import guarded
from gpucaas.errors import Refused, Unavailable, exit_code


def test_the_bound_per_tenant_refuses_with_429_and_names_the_limit() -> None:
    f = Followers(per_tenant=2, total=10)
    f.acquire("a")
    f.acquire("a")
    with pytest.raises(TooManyFollowers) as caught:
        f.acquire("a")
    assert caught.value.status == 429 and isinstance(caught.value, Refused)
    assert "'a' already follows 2 log streams" in str(caught.value)
    f.acquire("b")  # another tenant is not affected
    f.release("a")
    f.acquire("a")
    assert f.count("a") == 2 and f.count() == 3


def test_the_bound_of_the_server_counts_every_tenant() -> None:
    f = Followers(per_tenant=5, total=2)
    f.acquire("a")
    f.acquire("b")
    with pytest.raises(TooManyFollowers, match="this server already follows 2"):
        f.acquire("c")


def test_release_never_goes_below_zero() -> None:
    f = Followers()
    f.release("a")
    f.acquire("a")
    f.release("a")
    f.release("a")
    assert f.count() == 0


def test_a_closing_server_starts_no_stream() -> None:
    f = Followers()
    f.close()
    with pytest.raises(FollowersClosed) as caught:
        f.acquire("a")
    assert caught.value.status == 503 and isinstance(caught.value, Unavailable)
    assert exit_code(caught.value) == exit_code(Unavailable("x"))


@pytest.mark.parametrize("bounds", [(0, 1), (1, 0)], ids=["per-tenant", "total"])
def test_bounds_below_one_are_refused(bounds: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Followers(*bounds)


class Source:
    """A quiet backend stream that records being closed."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = False

    def __aiter__(self) -> Source:
        return self

    async def __anext__(self) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        await asyncio.sleep(3600)  # quiet
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


def _run(
    source: Source, disconnect_after: int | None, closing: threading.Event
) -> tuple[list[bytes], int, float]:
    released = 0
    polls = 0

    def release() -> None:
        nonlocal released
        released += 1

    async def disconnected() -> bool:
        nonlocal polls
        polls += 1
        return disconnect_after is not None and polls > disconnect_after

    async def main() -> list[bytes]:
        got = []
        async for chunk in guarded(
            source, disconnected=disconnected, closing=closing, release=release, poll_s=0.01
        ):
            got.append(chunk)
        return got

    start = time.monotonic()
    got = asyncio.run(asyncio.wait_for(main(), timeout=30))
    return got, released, time.monotonic() - start


def test_the_guard_ends_a_quiet_stream_when_its_client_disconnects() -> None:
    source = Source([b"hello\n"])
    got, released, _ = _run(source, disconnect_after=3, closing=threading.Event())
    assert got == [b"hello\n"]
    assert released == 1 and source.closed


def test_the_guard_ends_a_quiet_stream_when_the_server_closes() -> None:
    closing = threading.Event()
    timer = threading.Timer(0.2, closing.set)
    timer.start()
    source = Source([b"a", b"b"])
    got, released, took = _run(source, disconnect_after=None, closing=closing)
    timer.join()
    assert got == [b"a", b"b"] and released == 1 and source.closed
    assert took < 10


def test_the_guard_releases_when_its_stream_is_cancelled() -> None:
    source = Source([])
    released = []

    async def main() -> None:
        async def never() -> bool:
            return False

        async def consume() -> None:
            async for _ in guarded(
                source,
                disconnected=never,
                closing=threading.Event(),
                release=lambda: released.append(1),
                poll_s=0.01,
            ):
                pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert released == [1] and source.closed


# -- the Kubernetes backend's follow: an async pods/log stream ----------------------------


class FakeApiServer:
    """Serves ``pods/log?follow=true`` as a slow endless stream and records when its
    client goes away: the upstream connection a follower holds."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.gone = threading.Event()
        self.params: dict[str, str] = {}

        async def log(request: Request) -> StreamingResponse:
            self.params = dict(request.query_params)
            self.path = request.url.path

            async def lines() -> AsyncIterator[bytes]:
                self.opened.set()
                try:
                    for i in range(1_000_000):
                        yield f"line {i}\n".encode()
                        await asyncio.sleep(0.05)
                finally:
                    self.gone.set()

            return StreamingResponse(lines(), media_type="text/plain")

        app = Starlette(routes=[Route("/api/v1/namespaces/{ns}/pods/{name}/log", log)])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "no fake API"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def api() -> Iterator[tuple[FakeApiServer, str]]:
    fake = FakeApiServer()
    with fake as url:
        yield fake, url


def workload() -> Workload:
    return Workload(
        container_id="abc123",
        tenant="acme",
        image="busybox",
        command=(),
        args=(),
        env={},
        nfs=(),
        labels={},
        max_runtime_s=None,
        gpus=1,
        board="hgx-000",
        partition_id=7,
        module_ids=(1,),
    )


def test_kubernetes_follow_streams_lines_and_closes_the_upstream_connection(
    api: tuple[FakeApiServer, str],
) -> None:
    fake, url = api
    config = KubeConfig.from_dict(
        {
            "clusters": [{"name": "fake", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "fake", "user": "u"}}],
            "current-context": "c",
        }
    ).get()
    assert config is not None
    backend = KubernetesBackend(config)

    async def main() -> list[bytes]:
        stream = backend.follow_logs(workload())
        got = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # aiter_lines' connection goes with it
        return got

    got = asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert got == [b"line 0\n", b"line 1\n", b"line 2\n"]
    assert fake.path == "/api/v1/namespaces/gpucaas-acme/pods/c-abc123/log"
    assert fake.params.get("follow") == "true"
    assert fake.gone.wait(10), "the upstream pods/log stream outlived its follower"
    # No thread was spent on it: the stream ran on the event loop of asyncio.run.


def test_gpucaas_up_spells_out_the_default_bounds() -> None:
    """``gpucaas up``'s help must not import the control plane; its literals must be the
    control plane's defaults."""
    import inspect

    from gpucaas.cli.up import up
    from gpucaas.control._follow import MAX_FOLLOWERS, MAX_FOLLOWERS_PER_TENANT

    params = inspect.signature(up).parameters
    assert params["max_followers_per_tenant"].default == MAX_FOLLOWERS_PER_TENANT
    assert params["max_followers"].default == MAX_FOLLOWERS


def test_a_bound_below_one_is_a_one_line_usage_error(tmp_path: Any) -> None:
    from typer.testing import CliRunner

    from gpucaas.cli import app

    result = CliRunner().invoke(
        app,
        [
            "up",
            "--state-dir",
            str(tmp_path),
            "--executor",
            "process",
            "--unsafe-process",
            "--max-followers",
            "0",
        ],
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--max-followers" in result.output and "at least 1" in result.output
