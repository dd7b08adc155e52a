"""The HTTP API through a real server (uvicorn on loopback, SQLite store, process executor)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpucaas.control import LocalBackend
from tests.live_plane import FINAL, Live, live_plane, wait_state

SLEEP = {"image": "busybox", "command": ["sleep", "30"]}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with live_plane(tmp_path_factory.mktemp("api"), nodes=4) as plane:
        yield plane


def submit(client: httpx.Client, gpus: int = 1, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/containers", json={**SLEEP, "gpus": gpus, **body})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


# --- the tenant's flow ------------------------------------------------------------------------


def test_a_container_runs_succeeds_and_its_logs_and_events_tell_the_story(live: Live) -> None:
    with live.tenant() as t:
        body = submit(t, 3, command=["sh", "-c", "echo gpus=$GPUCAAS_MODULE_IDS; exit 0"])
        assert body["gpus"] == 3 and body["gpus_granted"] == 4 and body["state"] == "queued"
        done = wait_state(t, body["id"], FINAL)
        assert done["state"] == "succeeded" and done["exit_code"] == 0
        part = done["partition"]
        assert len(part["module_ids"]) == 4 and part["partition_id"] is not None
        assert list(done["timestamps"]) == ["queued", "placing", "starting", "running", "succeeded"]
        assert done["timestamps"]["queued"] <= done["timestamps"]["running"]
        assert 0 <= done["boot_seconds"] < 30
        logs = t.get(f"/v1/containers/{body['id']}/logs").text
        assert "no isolation" in logs
        assert f"gpus={','.join(map(str, part['module_ids']))}" in logs
        events = t.get(f"/v1/containers/{body['id']}/events").json()["items"]
        assert [e["state"] for e in events][-1] == "succeeded"


def test_exit_codes_map_to_states(live: Live) -> None:
    with live.tenant() as t:
        failed = submit(t, 1, command=["sh", "-c", "exit 7"])
        missing = submit(t, 1, command=["/no/such/program"])
        assert wait_state(t, failed["id"], FINAL)["exit_code"] == 7
        assert wait_state(t, failed["id"], FINAL)["reason"] == "Error"
        gone = wait_state(t, missing["id"], FINAL)
        assert gone["state"] == "failed" and "/no/such/program" in gone["message"]


def test_max_runtime_is_enforced(live: Live) -> None:
    with live.tenant() as t:
        body = submit(t, 1, max_runtime_s=1)
        done = wait_state(t, body["id"], FINAL, timeout=20)
        assert done["state"] == "failed" and done["reason"] == "DeadlineExceeded"


def test_stop_is_idempotent_and_frees_the_partition(live: Live) -> None:
    with live.tenant() as t, live.admin() as a:
        body = submit(t, 8)
        running = wait_state(t, body["id"], {"running"})
        board = running["partition"]["board"]
        assert t.delete(f"/v1/containers/{body['id']}").status_code == 200
        assert t.delete(f"/v1/containers/{body['id']}").status_code == 200
        assert wait_state(t, body["id"], FINAL)["state"] == "stopped"
        fleet = a.get("/v1/admin/fleet").json()
        view = next(b for b in fleet["boards"] if b["name"] == board)
        assert all(g["container"] != body["id"] for g in view["gpus"])
        backend = live.plane.backend
        assert isinstance(backend, LocalBackend)
        fabric = backend.fabric(board).status().desired
        assert running["partition"]["partition_id"] not in fabric


def test_logs_follow_streams_until_the_container_ends(live: Live) -> None:
    with live.tenant() as t:
        body = submit(t, 1, command=["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"])
        with t.stream("GET", f"/v1/containers/{body['id']}/logs", params={"follow": "true"}) as r:
            text = b"".join(r.iter_bytes()).decode()
        assert "line1" in text and "line3" in text


def test_idempotency_key_never_creates_two(live: Live) -> None:
    with live.tenant() as t:
        key = {"Idempotency-Key": "retry-me-1"}
        first = t.post("/v1/containers", json={**SLEEP, "gpus": 1}, headers=key)
        again = t.post("/v1/containers", json={**SLEEP, "gpus": 1}, headers=key)
        assert first.status_code == again.status_code == 201
        assert first.json()["id"] == again.json()["id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        other = t.post("/v1/containers", json={**SLEEP, "gpus": 2}, headers=key)
        assert other.status_code == 409 and first.json()["id"] in other.json()["error"]["message"]
        t.delete(f"/v1/containers/{first.json()['id']}")


def test_concurrent_retries_with_one_key_create_one_container(live: Live) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def post() -> None:
        with live.tenant() as t:
            r = t.post(
                "/v1/containers", json={**SLEEP, "gpus": 1}, headers={"Idempotency-Key": "race"}
            )
            with lock:
                ids.append(r.json()["id"])

    threads = [threading.Thread(target=post) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(ids)) == 1
    with live.tenant() as t:
        t.delete(f"/v1/containers/{ids[0]}")


# --- tenancy ----------------------------------------------------------------------------------


def test_tenants_cannot_see_read_or_stop_each_others_containers(live: Live) -> None:
    other = live.new_tenant("tenant-b")
    with live.tenant() as a, live.client(other) as b:
        mine = submit(a, 1)
        path = f"/v1/containers/{mine['id']}"
        for r in (b.get(path), b.get(f"{path}/logs"), b.get(f"{path}/events"), b.delete(path)):
            assert r.status_code == 404, r.text
            assert "not found" in r.json()["error"]["message"]
        assert all(c["id"] != mine["id"] for c in b.get("/v1/containers").json()["items"])
        assert wait_state(a, mine["id"], {"running", "starting"})["state"] != "stopped"
        assert b.get("/v1/containers", params={"tenant": "demo"}).status_code == 403
        assert b.get("/v1/admin/fleet").status_code == 403
        a.delete(path)


def test_a_revoked_token_stops_working_at_once(live: Live) -> None:
    with live.admin() as adm:
        made = adm.post("/v1/admin/tenants/demo/tokens", json={"label": "ci"}).json()
        with live.client(made["token"]) as t:
            assert t.get("/v1/containers").status_code == 200
            assert adm.delete(f"/v1/admin/tokens/{made['id']}").status_code == 200
            r = t.get("/v1/containers")
            assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
        listed = adm.get("/v1/admin/tokens", params={"tenant": "demo"}).json()["items"]
        assert any(x["id"] == made["id"] and x["revoked_at"] for x in listed)
        assert all("token" not in x for x in listed)


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "no token"),
        ({"Authorization": "Bearer nope"}, "malformed"),
        ({"Authorization": "Bearer gpc_" + "x" * 43}, "unknown token"),
    ],
    ids=["missing", "malformed", "unknown"],
)
def test_bad_tokens_are_401_with_a_reason(live: Live, headers: dict[str, str], needle: str) -> None:
    r = httpx.get(f"{live.url}/v1/containers", headers=headers)
    assert r.status_code == 401 and needle in r.json()["error"]["message"]
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_quotas_answer_429_or_403_with_the_numbers(live: Live) -> None:
    token = live.new_tenant("small", max_gpus=4, max_containers=2)
    with live.client(token) as t:
        first = submit(t, 3)  # granted 4: the whole quota
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 1})
        assert r.status_code == 429
        assert "holds 4 of 4 GPUs" in r.json()["error"]["message"]
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 5})
        assert r.status_code == 403 and "at most 4 GPUs" in r.json()["error"]["message"]
        t.delete(f"/v1/containers/{first['id']}")
        wait_state(t, first["id"], FINAL)
        second = submit(t, 1)
        third = submit(t, 1)
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 1})
        assert (
            r.status_code == 429 and "2 of 2 unfinished containers" in r.json()["error"]["message"]
        )
        for c in (second, third):
            t.delete(f"/v1/containers/{c['id']}")


def test_nfs_exports_are_limited_per_tenant(live: Live) -> None:
    token = live.new_tenant("nfs-user", nfs_exports=["nas.example:/exports/team"])
    mount = {"server": "nas.example", "path": "/exports/other", "mount_path": "/data"}
    with live.client(token) as t:
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 1, "nfs": [mount]})
        assert r.status_code == 403 and "may not mount nas.example:/exports/other" in r.text
        # Allowed export, but the process executor cannot mount: refused, clearly.
        ok = {**mount, "path": "/exports/team/sub"}
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 1, "nfs": [ok]})
        assert r.status_code == 400 and "podman or docker" in r.json()["error"]["message"]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"image": "Ubuntu:latest"}, "image"),
        ({"image": ""}, "image"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": 9}, "gpus"),
        ({"gpus": "2"}, "gpus"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"env": {"GPUCAAS_BOARD": "x"}}, "env"),
        ({"command": ["x" * 70000]}, "command"),
        ({"command": ["a"] * 300}, "command"),
        ({"nfs": [{"server": "bad host", "path": "/x", "mount_path": "/d"}]}, "nfs[0].server"),
        ({"nfs": [{"server": "nas", "path": "rel", "mount_path": "/d"}]}, "nfs[0].path"),
        ({"nfs": [{"server": "nas", "path": "/x", "mount_path": "/"}]}, "nfs[0].mount_path"),
        ({"nfs": [{"server": "nas", "path": "/../etc", "mount_path": "/d"}]}, "nfs[0].path"),
        ({"name": "Not_A_Label"}, "name"),
        ({"labels": {"k": "bad value!"}}, "labels"),
        ({"max_runtime_s": 0}, "max_runtime_s"),
        ({"privileged": True}, "privileged"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_input_is_422_naming_the_field(live: Live, patch: dict[str, Any], field: str) -> None:
    with live.tenant() as t:
        before = t.get("/v1/containers", params={"limit": 500}).json()["items"]
        r = t.post("/v1/containers", json={**SLEEP, "gpus": 1, **patch})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["message"].startswith(f"{field}: ") or f"; {field}: " in err["message"]
        assert any(d["field"] == field for d in err["details"])
        after = t.get("/v1/containers", params={"limit": 500}).json()["items"]
        assert len(after) == len(before)


def test_malformed_json_and_bad_page_tokens_are_4xx(live: Live) -> None:
    with live.tenant() as t:
        r = t.post(
            "/v1/containers", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422
        r = t.get("/v1/containers", params={"page_token": "garbage!"})
        assert r.status_code == 400 and "page_token" in r.json()["error"]["message"]
        r = t.get("/v1/containers", params={"label": "novalue"})
        assert r.status_code == 400 and "key=value" in r.json()["error"]["message"]


# --- listing ----------------------------------------------------------------------------------


def test_pages_and_filters(live: Live) -> None:
    token = live.new_tenant("pager", max_gpus=100, max_containers=100)
    with live.client(token) as t:
        made = [
            submit(t, 1, command=["true"], labels={"batch": "a" if i % 2 else "b"})["id"]
            for i in range(7)
        ]
        for cid in made:
            wait_state(t, cid, FINAL)
        seen: list[str] = []
        token_: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 3}
            if token_:
                params["page_token"] = token_
            page = t.get("/v1/containers", params=params).json()
            seen += [c["id"] for c in page["items"]]
            token_ = page["next_page_token"]
            if token_ is None:
                break
        assert seen == list(reversed(made))
        only_a = t.get("/v1/containers", params={"label": "batch=a"}).json()["items"]
        assert {c["id"] for c in only_a} == {made[i] for i in range(7) if i % 2}
        done = t.get("/v1/containers", params={"state": ["succeeded", "failed"]}).json()["items"]
        assert len(done) == 7
        assert t.get("/v1/containers", params={"state": "running"}).json()["items"] == []


# --- admin ------------------------------------------------------------------------------------


def test_admin_fleet_cordon_and_drain(live: Live) -> None:
    with live.admin() as a, live.tenant() as t:
        fleet = a.get("/v1/admin/fleet").json()
        assert fleet["capacity"] == 32 and len(fleet["boards"]) == 4
        boards = [b["name"] for b in fleet["boards"]]
        for name in boards[1:]:
            assert (
                a.put(f"/v1/admin/boards/{name}/cordon", json={"cordoned": True}).status_code == 200
            )
        r = a.put(f"/v1/admin/boards/{boards[0]}/gpus/1/cordon", json={"cordoned": True})
        assert r.json()["gpus"][0]["state"] == "cordoned"
        body = submit(t, 4)
        running = wait_state(t, body["id"], {"running"})
        assert running["partition"]["board"] == boards[0]
        assert 1 not in running["partition"]["module_ids"]
        drained = a.post(f"/v1/admin/boards/{boards[0]}/drain").json()
        assert body["id"] in drained["stopping"]
        stopped = wait_state(t, body["id"], FINAL)
        assert stopped["state"] == "stopped" and stopped["reason"] == "Drained"
        queued = submit(t, 1)
        assert wait_state(t, queued["id"], {"queued"})["state"] == "queued"
        a.put(f"/v1/admin/boards/{boards[1]}/cordon", json={"cordoned": False})
        assert wait_state(t, queued["id"], {"running"})["partition"]["board"] == boards[1]
        t.delete(f"/v1/containers/{queued['id']}")
        for name in boards:
            a.put(f"/v1/admin/boards/{name}/cordon", json={"cordoned": False})
        a.put(f"/v1/admin/boards/{boards[0]}/gpus/1/cordon", json={"cordoned": False})
        assert a.put("/v1/admin/boards/nope/cordon", json={}).status_code == 404
        assert a.put(f"/v1/admin/boards/{boards[0]}/gpus/9/cordon", json={}).status_code == 400


def test_admin_tenants(live: Live) -> None:
    with live.admin() as a:
        r = a.post("/v1/admin/tenants", json={"name": "demo"})
        assert r.status_code == 409 and "already exists" in r.text
        r = a.post("/v1/admin/tenants", json={"name": "Bad_Name"})
        assert r.status_code == 422 and "name" in r.text
        token = live.new_tenant("short-lived")
        names = [x["name"] for x in a.get("/v1/admin/tenants").json()["items"]]
        assert "short-lived" in names and "demo" in names
        assert a.delete("/v1/admin/tenants/short-lived").status_code == 204
        assert a.get("/v1/admin/tenants/short-lived").status_code == 404
        r = httpx.get(f"{live.url}/v1/containers", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401


def test_openapi_health_metrics_and_dashboard(live: Live) -> None:
    spec = httpx.get(f"{live.url}/openapi.json").json()
    assert "/v1/containers" in spec["paths"] and "/v1/admin/fleet" in spec["paths"]
    assert httpx.get(f"{live.url}/healthz").json()["ok"] is True
    assert httpx.get(f"{live.url}/metrics").status_code == 401  # admin only (issue 13)
    with live.admin() as admin:
        metrics = admin.get("/metrics").text
    assert "gpucaas_http_requests_total" in metrics
    page = httpx.get(f"{live.url}/")
    assert page.status_code == 200 and "gpucaas" in page.text


def test_state_dir_credentials_are_private(live: Live, tmp_path: Path) -> None:
    path = live.plane.config.state_dir / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
