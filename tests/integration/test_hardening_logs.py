"""Issue 13, point 1: one tenant must not hang the API by following logs.

The attack: ~45 concurrent ``GET /v1/containers/{id}/logs?follow=true`` on the tenant's own
quiet container. Each follower used to hold one of the 40 threads of the API's pool, polling
with sleep and never noticing a disconnect, so ``/healthz``, other tenants and the operator
timed out, and the hang outlived the clients and SIGTERM.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gpucaas.control import Followers

from ..live_plane import Live, live_plane, wait_state

QUIET = {"image": "busybox", "command": ["sleep", "600"], "gpus": 1}


@pytest.fixture
def wide(tmp_path: Path) -> Iterator[Live]:
    """A plane whose bound per tenant lets all 45 followers in: the pool is what is tested."""
    with live_plane(tmp_path, max_followers_per_tenant=64, max_followers=128) as live:
        yield live


@pytest.fixture
def narrow(tmp_path: Path) -> Iterator[Live]:
    """A plane with the default bounds."""
    with live_plane(tmp_path) as live:
        yield live


def followers(live: Live) -> Followers:
    found: Followers = live.plane.app.state.followers
    return found


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def quiet_container(live: Live, token: str) -> str:
    with live.client(token) as c:
        r = c.post("/v1/containers", json=QUIET)
        assert r.status_code == 201, r.text
        cid = str(r.json()["id"])
        wait_state(c, cid, {"running"}, timeout=30)
        return cid


async def _attach(
    url: str,
    token: str,
    cid: str,
    n: int,
    statuses: list[int],
    attached: asyncio.Event,
    release: asyncio.Event,
) -> None:
    """Open ``n`` follow streams, set ``attached`` once all have answered, hold them open
    until ``release`` is set, then drop them (a disconnect, not a clean end)."""
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=0)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as c:

        async def one() -> None:
            path = f"/v1/containers/{cid}/logs"
            async with c.stream("GET", path, params={"follow": "true"}) as r:
                statuses.append(r.status_code)
                if len(statuses) == n:
                    attached.set()
                await release.wait()

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        try:
            await asyncio.wait_for(attached.wait(), timeout=60)
        except BaseException:
            release.set()
            raise
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)


class Attached:
    """``n`` followers held open from a thread of their own, released on exit."""

    def __init__(self, live: Live, token: str, cid: str, n: int) -> None:
        import threading

        self.statuses: list[int] = []
        self._loop = asyncio.new_event_loop()
        self._attached = asyncio.Event()
        self._release = asyncio.Event()
        self.error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(
                    _attach(live.url, token, cid, n, self.statuses, self._attached, self._release)
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> Attached:
        self._thread.start()
        wait_for(
            "the followers to attach", lambda: self._attached.is_set() or self.error is not None, 60
        )
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *_exc: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._release.set)
        self._thread.join(timeout=30)


def test_45_followers_of_a_quiet_container_leave_the_api_responsive(wide: Live) -> None:
    tenant = wide.creds.tenant_token
    other = wide.new_tenant("other")
    cid = quiet_container(wide, tenant)
    with Attached(wide, tenant, cid, 45) as attached:
        assert attached.statuses == [200] * 45
        assert followers(wide).count(wide.creds.tenant) == 45
        # While they hang on: health, another tenant and the operator answer promptly.
        with httpx.Client(base_url=wide.url, timeout=5) as anyone:
            for _ in range(3):
                start = time.monotonic()
                assert anyone.get("/healthz").status_code == 200
                assert time.monotonic() - start < 3.0
        with wide.client(other) as o:
            o.timeout = httpx.Timeout(5)
            assert o.get("/v1/containers").status_code == 200
            r = o.post("/v1/containers", json={**QUIET, "command": ["true"]})
            assert r.status_code == 201, r.text
        with wide.admin() as a:
            a.timeout = httpx.Timeout(5)
            assert a.get("/v1/admin/fleet").status_code == 200
            assert a.get("/v1/admin/tenants").status_code == 200
    # The followers dropped their connections: every slot comes back.
    wait_for("the dropped followers to be released", lambda: followers(wide).count() == 0)


def test_followers_beyond_the_bound_per_tenant_get_429_in_the_envelope(narrow: Live) -> None:
    tenant = narrow.creds.tenant_token
    cid = quiet_container(narrow, tenant)
    bound = followers(narrow).per_tenant
    assert bound == 8
    with Attached(narrow, tenant, cid, bound):
        with narrow.client(tenant) as t:
            r = t.get(f"/v1/containers/{cid}/logs", params={"follow": "true"})
            assert r.status_code == 429, r.text
            error = r.json()["error"]
            assert error["type"] == "TooManyFollowers"
            assert "8" in error["message"] and "follow" in error["message"]
            # Reading without follow still works, and so does another tenant.
            assert t.get(f"/v1/containers/{cid}/logs").status_code == 200
        other = narrow.new_tenant("other")
        other_cid = quiet_container(narrow, other)
        with (
            narrow.client(other) as o,
            o.stream("GET", f"/v1/containers/{other_cid}/logs", params={"follow": "true"}) as r,
        ):
            assert r.status_code == 200
    wait_for("the followers to be released", lambda: followers(narrow).count() == 0)


def test_the_global_bound_answers_429_too(tmp_path: Path) -> None:
    with live_plane(tmp_path, max_followers_per_tenant=8, max_followers=3) as live:
        cid = quiet_container(live, live.creds.tenant_token)
        with Attached(live, live.creds.tenant_token, cid, 3), live.tenant() as t:
            r = t.get(f"/v1/containers/{cid}/logs", params={"follow": "true"})
            assert r.status_code == 429, r.text
            assert "server" in r.json()["error"]["message"]


def test_a_disconnected_follower_of_a_quiet_container_is_released(narrow: Live) -> None:
    cid = quiet_container(narrow, narrow.creds.tenant_token)
    with narrow.tenant() as t:
        with t.stream("GET", f"/v1/containers/{cid}/logs", params={"follow": "true"}) as r:
            assert r.status_code == 200
            wait_for("the follower to count", lambda: followers(narrow).count() == 1)
        # The client closed its connection without reading to the end.
    wait_for("the follower to be released", lambda: followers(narrow).count() == 0, 10)


def test_follow_still_streams_output_until_the_container_ends(narrow: Live) -> None:
    with narrow.tenant() as t:
        r = t.post(
            "/v1/containers",
            json={
                "image": "busybox",
                "gpus": 1,
                "command": ["sh", "-c", "sleep 1; for i in 1 2 3; do echo l$i; sleep 0.2; done"],
            },
        )
        cid = r.json()["id"]
        # Followed from the queue on: the stream waits for placement, then for output.
        with t.stream("GET", f"/v1/containers/{cid}/logs", params={"follow": "true"}) as s:
            text = b"".join(s.iter_bytes()).decode()
        assert "l1" in text and "l3" in text
        assert t.get(f"/v1/containers/{cid}/logs").text.count("l3") == 1
    assert followers(narrow).count() == 0


def test_followers_end_when_the_server_shuts_down(narrow: Live) -> None:
    cid = quiet_container(narrow, narrow.creds.tenant_token)
    with narrow.tenant() as t:
        with t.stream("GET", f"/v1/containers/{cid}/logs", params={"follow": "true"}) as r:
            wait_for("the follower to count", lambda: followers(narrow).count() == 1)
            followers(narrow).close()
            start = time.monotonic()
            text = b"".join(r.iter_bytes()).decode()  # ends: the stream saw the shutdown
            assert time.monotonic() - start < 5
            assert text.endswith(
                "gpucaas: the log stream broke off: the server is stopping; reconnect to "
                "follow the log once it is back\n"
            )
        r = t.get(f"/v1/containers/{cid}/logs", params={"follow": "true"})
        assert r.status_code == 503, r.text
