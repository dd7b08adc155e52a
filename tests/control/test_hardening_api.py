"""Issue 13 through the API, in-process (ASGI): every 4xx in the envelope, body parse errors
included (9); size limits before authentication (11); /metrics behind the admin token (12);
a forged page token (8); per-container limits and list pages without env (6)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gpucaas.control import ControlPlane, ControlPlaneConfig, Credentials
from gpucaas.control._store import _encode_page


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Credentials]]:
    p = ControlPlane(
        ControlPlaneConfig(
            state_dir=tmp_path_factory.mktemp("api"),
            nodes=1,
            executor="process",
            max_env_bytes=1000,
            max_command_bytes=500,
        )
    )
    try:
        creds = p.bootstrap("http://testserver")
        assert creds is not None
        # The fleet is cordoned: nothing submitted here runs.
        p.store.set_cordon("hgx-0000", 0, True)
        yield p, creds
    finally:
        p.stop()


@pytest.fixture
def api(plane: tuple[ControlPlane, Credentials]) -> Iterator[TestClient]:
    with TestClient(plane[0].app, raise_server_exceptions=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tenant(plane: tuple[ControlPlane, Credentials]) -> dict[str, str]:
    return bearer(plane[1].tenant_token)


@pytest.fixture
def admin(plane: tuple[ControlPlane, Credentials]) -> dict[str, str]:
    return bearer(plane[1].admin_token)


def envelope(r: Any, status: int) -> dict[str, Any]:
    """The error of a reply in the API's envelope (``r``: the test client's response)."""
    assert r.status_code == status, r.text[:500]
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"type", "message", "details"}, body
    assert body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error


# -- 9: the envelope everywhere ------------------------------------------------------------


def test_unknown_routes_and_wrong_methods_answer_in_the_envelope(
    api: TestClient, tenant: dict[str, str]
) -> None:
    err = envelope(api.get("/v1/nope", headers=tenant), 404)
    assert "/v1/nope" in err["message"]
    envelope(api.get("/nope"), 404)
    err = envelope(api.put("/v1/containers", headers=tenant, json={}), 405)
    assert "PUT" in err["message"] and "use" in err["message"]


BAD_BODIES = {
    "non-utf8": b'{"image": "busybox\xff\xfe", "gpus": 1}',
    "not-json": b"image=busybox",
    "truncated": b'{"image": "busy',
    "deep-nesting": b'{"image": "busybox", "gpus": 1, "env": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}",
    "5000-digit-number": b'{"image": "busybox", "gpus": ' + b"9" * 5000 + b"}",
    "5000-digit-float": b'{"image": "busybox", "gpus": 1.' + b"9" * 5000 + b"}",
    "nan": b'{"image": "busybox", "gpus": NaN}',
    "empty": b"",
    "array": b"[1, 2]",
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_body_parse_errors_answer_in_the_envelope(
    api: TestClient, tenant: dict[str, str], body: bytes
) -> None:
    r = api.post(
        "/v1/containers",
        content=body,
        headers={**tenant, "Content-Type": "application/json"},
    )
    assert r.status_code in (400, 422), r.text[:300]
    err = envelope(r, r.status_code)
    for d in err["details"]:
        assert not d["field"].startswith("["), err  # never "[0]" for the body itself
    assert len(r.content) < 5000  # the body is not echoed back


def test_a_body_that_is_not_json_names_the_body(api: TestClient, tenant: dict[str, str]) -> None:
    r = api.post(
        "/v1/containers", content=b"nope", headers={**tenant, "Content-Type": "application/json"}
    )
    err = envelope(r, 422)
    assert err["details"][0]["field"] == "body"
    assert "JSON" in err["message"]


# -- 8: page tokens ----------------------------------------------------------------------


@pytest.mark.parametrize("seq", [10**30, 2**63, -1], ids=["huge", "2^63", "negative"])
def test_a_forged_page_token_is_a_400(api: TestClient, tenant: dict[str, str], seq: int) -> None:
    r = api.get("/v1/containers", params={"page_token": _encode_page(seq)}, headers=tenant)
    assert "page_token" in envelope(r, 400)["message"]


# -- 11: limits before authentication ---------------------------------------------------------


def test_a_huge_authorization_header_is_refused_before_authentication(api: TestClient) -> None:
    r = api.get("/v1/containers", headers={"Authorization": "Bearer " + "x" * 100_000})
    assert "headers" in envelope(r, 431)["message"]


def test_a_large_body_without_a_token_is_refused_by_its_length(api: TestClient) -> None:
    big = b"x" * (2 << 20)
    err = envelope(api.post("/v1/containers", content=big), 413)
    assert str(1 << 20) in err["message"]


def test_a_large_chunked_body_is_cut_off_at_the_limit(api: TestClient) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(50):  # 50 MB if it were all read
            sent += 1
            yield b"x" * (1 << 20)

    envelope(api.post("/v1/containers", content=body()), 413)


# -- 12: /metrics ----------------------------------------------------------------------------


def test_metrics_need_the_admin_token(
    api: TestClient, tenant: dict[str, str], admin: dict[str, str]
) -> None:
    envelope(api.get("/metrics"), 401)
    envelope(api.get("/metrics", headers=tenant), 403)
    r = api.get("/metrics", headers=admin)
    assert r.status_code == 200 and "gpucaas_http_requests_total" in r.text
    assert api.get("/healthz").status_code == 200  # liveness stays open


# -- 6: container sizes and list pages ---------------------------------------------------------


def test_env_and_command_sizes_are_limited(api: TestClient, tenant: dict[str, str]) -> None:
    env = {f"K{i}": "v" * 100 for i in range(20)}
    err = envelope(
        api.post("/v1/containers", json={"image": "b", "gpus": 1, "env": env}, headers=tenant), 422
    )
    assert err["details"][0]["field"] == "env" and "1000" in err["message"]
    cmd = ["sh", "-c", "x" * 600]
    err = envelope(
        api.post("/v1/containers", json={"image": "b", "gpus": 1, "command": cmd}, headers=tenant),
        422,
    )
    assert err["details"][0]["field"] == "command" and "500" in err["message"]
    ok = api.post(
        "/v1/containers",
        json={"image": "b", "gpus": 1, "env": {"SECRET": "s3cr3t"}, "command": ["true"]},
        headers=tenant,
    )
    assert ok.status_code == 201, ok.text


def test_list_pages_do_not_carry_env(api: TestClient, tenant: dict[str, str]) -> None:
    r = api.post(
        "/v1/containers",
        json={"image": "b", "gpus": 1, "command": ["true"], "env": {"SECRET": "s3cr3t"}},
        headers=tenant,
    )
    assert r.status_code == 201, r.text
    made = r.json()
    page = api.get("/v1/containers", headers=tenant).json()
    assert "s3cr3t" not in str(page)
    one = api.get(f"/v1/containers/{made['id']}", headers=tenant).json()
    assert one["env"] == {"SECRET": "s3cr3t"}  # the container itself still says


def test_no_input_gives_a_500(api: TestClient, tenant: dict[str, str], tmp_path: Path) -> None:
    for method, path in [
        ("GET", "/v1/containers?limit=99999999999999999999999"),
        ("GET", "/v1/containers?state=nope"),
        ("GET", "/v1/containers/" + "x" * 5000),
        ("DELETE", "/v1/containers/%00"),
        ("GET", "/v1/containers?page_token=%FF%FE"),
    ]:
        r = api.request(method, path, headers=tenant)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
        envelope(r, r.status_code)
