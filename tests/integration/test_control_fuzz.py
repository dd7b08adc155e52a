"""schemathesis against the published OpenAPI spec of a running server: no generated input,
valid or not, may get a 5xx.

Every board is cordoned first, so fuzzed containers are stored and queued but never run
(the process executor would run generated commands on this machine). Cordon and drain are
left out of the fuzzing for the same reason; test_control_api covers them. The admin API is
fuzzed with the admin token. Log following is fuzzed on a real (queued) container, each call
bounded by a client timeout: a follow stream never ends while the container waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from tests.live_plane import Live, live_plane


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_plane(tmp_path_factory.mktemp("fuzz"), nodes=2) as live:
        with live.admin() as admin:
            for board in admin.get("/v1/admin/fleet").json()["boards"]:
                r = admin.put(f"/v1/admin/boards/{board['name']}/cordon", json={"cordoned": True})
                assert r.status_code == 200
        yield live


def test_no_input_gets_a_server_error(fuzz_target: Live) -> None:
    # schemathesis' pytest plugin does not support this pytest; drive its strategies directly.
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")
    operations = []
    for result in schema.exclude(path_regex="cordon|drain").get_all_operations():
        if isinstance(result, Err):
            pytest.fail(f"schemathesis could not read an operation of the spec: {result.err()}")
        operations.append(result.ok())
    assert len(operations) >= 15
    for operation in operations:
        admin = operation.path.startswith("/v1/admin")
        token = fuzz_target.creds.admin_token if admin else fuzz_target.creds.tenant_token
        auth = {"Authorization": f"Bearer {token}"}
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=20,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(headers=auth, checks=[not_a_server_error])  # noqa: B023

            try:
                call()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): only positive cases exist.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label


def test_following_a_real_container_gets_no_server_error(fuzz_target: Live) -> None:
    """The logs endpoint with generated query strings (``follow``, ``tail`` and junk) on a
    container that exists and is queued: a follow answers at once and streams until the
    client leaves; the stream is read only up to a bounded timeout, then dropped."""
    with fuzz_target.tenant() as tenant:
        r = tenant.post("/v1/containers", json={"image": "busybox", "gpus": 1, "command": ["true"]})
        assert r.status_code == 201, r.text
        container_id = r.json()["id"]
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")
    found = schema.include(path_regex="/logs$").get_all_operations()
    operations = [result.ok() for result in found if not isinstance(result, Err)]
    assert len(operations) == 1, "the spec has no logs operation"
    auth = {"Authorization": f"Bearer {fuzz_target.creds.tenant_token}"}
    statuses: set[int] = set()
    for mode in schemathesis.GenerationMode:

        @given(case=operations[0].as_strategy(generation_mode=mode))
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def call(case: schemathesis.Case[Any]) -> None:
            case.path_parameters = {"container_id": container_id}
            sent = case.as_transport_kwargs(base_url=fuzz_target.url, headers=auth)
            # Headers only, then drop the connection: a follow stream never ends by itself.
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    sent["method"], sent["url"], params=sent.get("params"), headers=sent["headers"]
                ) as response,
            ):
                statuses.add(response.status_code)  # noqa: B023
                assert response.status_code < 500, (case.query, response.read())

        try:
            call()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE
    assert 200 in statuses, statuses  # some cases really followed
    # Every dropped follower gives its slot back (the server notices a gone client within a
    # fraction of a second): soon the whole per-tenant bound is free again.
    followers = fuzz_target.plane.followers
    deadline = time.monotonic() + 30
    while followers.count() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert followers.count() == 0, "a dropped follower kept its slot"


def test_fuzzing_reached_the_server_and_never_ran_a_container(fuzz_target: Live) -> None:
    with fuzz_target.admin() as admin:
        fleet = admin.get("/v1/admin/fleet").json()
        metrics = admin.get("/metrics").text
    assert fleet["allocated"] == 0
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("gpucaas_http_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels] = float(value)
    assert sum(counts.values()) > 300
    # Generated submissions got through validation into the store, too.
    assert any('route="/v1/containers"' in k and 'status="201"' in k for k in counts), counts
    assert not any('status="5' in k for k in counts), counts
