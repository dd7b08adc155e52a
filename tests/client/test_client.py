"""The API client over a mock transport: config resolution, error mapping, pagination,
idempotency keys and retries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, Unpack

import httpx
import pytest

from gpucaas.client import (
    BoardView,
    Container,
    ContainerCreate,
    DrainResult,
    Event,
    NewToken,
    State,
    Tenant,
    TenantCreated,
    Token,
)
from gpucaas.client._client import (
    DEFAULT_URL,
    ApiConflict,
    ApiError,
    ApiInvalidRequest,
    ApiUnavailable,
    Client,
    ClientConfig,
    WaitTimeout,
)
from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, Unavailable

Handler = Callable[[httpx.Request], httpx.Response]


class ClientOptions(TypedDict, total=False):
    """Client's keyword options, as the tests pass them on."""

    timeout: float
    retries: int
    retry_delay_s: float


def client(handler: Handler, **kwargs: Unpack[ClientOptions]) -> Client:
    return Client("http://api.test", "gpc_secret", transport=httpx.MockTransport(handler), **kwargs)


def error(status: int, kind: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": kind, "message": message, "details": []}})


STAMP = "2026-01-01T00:00:00.000Z"


def container(id: str, state: str = "queued") -> dict[str, object]:
    """A whole container reply, as the server sends it."""
    return {
        "id": id, "tenant": "acme", "name": None, "image": "busybox", "command": [],
        "args": [], "env": {}, "gpus": 1, "gpus_granted": 1, "nfs": [], "labels": {},
        "max_runtime_s": None, "state": state, "reason": "", "message": "", "exit_code": None,
        "partition": None, "created_at": STAMP, "updated_at": STAMP,
    }  # fmt: skip


TOKEN = {"id": "t1", "tenant": "v", "label": "ci", "created_at": STAMP, "revoked_at": None}
TENANT = {"name": "v", "max_gpus": 4, "max_containers": 2, "nfs_exports": [], "created_at": STAMP}
BOARD = {"name": "b1", "model": "hgx-h100-8", "cordoned": True, "gpus": [], "partitions": []}


# -- configuration ---------------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text('url = "http://file:1"\ntoken = "gpc_file"\n')
    path.chmod(0o600)  # it holds a token: the client refuses it open to others
    return path


def test_flags_win_over_env_and_file(config_file: Path) -> None:
    env = {"GPUCAAS_URL": "http://env:1", "GPUCAAS_TOKEN": "gpc_env"}
    cfg = ClientConfig.resolve("http://flag:1/", "gpc_flag", env=env, config_path=config_file)
    assert cfg == ClientConfig("http://flag:1", "gpc_flag")


def test_env_wins_over_the_file(config_file: Path) -> None:
    env = {"GPUCAAS_URL": "http://env:1", "GPUCAAS_TOKEN": "gpc_env"}
    cfg = ClientConfig.resolve(None, None, env=env, config_path=config_file)
    assert cfg == ClientConfig("http://env:1", "gpc_env")


def test_the_file_is_used_without_flags_or_env(config_file: Path) -> None:
    cfg = ClientConfig.resolve(None, None, env={}, config_path=config_file)
    assert cfg == ClientConfig("http://file:1", "gpc_file")


def test_gpucaas_config_names_the_file(config_file: Path) -> None:
    cfg = ClientConfig.resolve(None, None, env={"GPUCAAS_CONFIG": str(config_file)})
    assert cfg.token == "gpc_file"


def test_the_url_defaults_to_localhost(tmp_path: Path) -> None:
    cfg = ClientConfig.resolve(None, "gpc_x", env={}, config_path=tmp_path / "missing.toml")
    assert cfg.url == DEFAULT_URL == "http://127.0.0.1:8080"


def test_a_missing_token_says_the_three_ways(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as info:
        ClientConfig.resolve(None, None, env={}, config_path=tmp_path / "missing.toml")
    message = str(info.value)
    assert "--token" in message and "GPUCAAS_TOKEN" in message and "missing.toml" in message


def test_a_broken_config_file_is_an_invalid_request(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("url = [")
    with pytest.raises(InvalidRequest, match="not valid TOML"):
        ClientConfig.resolve(None, "gpc_x", env={}, config_path=path)
    path.write_text("token = 3")
    with pytest.raises(InvalidRequest, match="token must be a string"):
        ClientConfig.resolve(None, None, env={}, config_path=path)


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "base"),
    [
        (400, ApiInvalidRequest, InvalidRequest),
        (401, ApiInvalidRequest, InvalidRequest),
        (404, ApiInvalidRequest, InvalidRequest),
        (422, ApiInvalidRequest, InvalidRequest),
        (429, ApiInvalidRequest, InvalidRequest),
        (409, ApiConflict, Conflict),
        (503, ApiUnavailable, Unavailable),
        (500, ApiUnavailable, Unavailable),
    ],
)
def test_http_errors_map_to_the_error_tree(
    status: int, cls: type[ApiError], base: type[GpucaasError]
) -> None:
    with client(lambda _r: error(status, "Kind", "the server says no")) as c:
        with pytest.raises(cls) as info:
            c.container("abc")
    exc = info.value
    assert isinstance(exc, base) and isinstance(exc, ApiError)
    assert (exc.status, exc.type, exc.message) == (status, "Kind", "the server says no")
    assert str(exc) == "the server says no"


def test_a_non_json_error_keeps_the_status_and_text() -> None:
    with client(lambda _r: httpx.Response(502, text="<html>bad gateway</html>")) as c:
        with pytest.raises(ApiUnavailable, match="HTTP 502 from http://api.test: <html>bad"):
            c.fleet()


def test_connection_refused_is_unavailable_naming_the_url() -> None:
    calls = 0

    def refuse(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with client(refuse, retry_delay_s=0) as c:
        with pytest.raises(ApiUnavailable) as info:
            c.containers()
    assert calls == 2  # one retry
    assert "http://api.test" in str(info.value)
    assert "is `gpucaas up` running?" in str(info.value)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_the_token_never_appears_in_an_error(tmp_path: Path) -> None:
    # httpx quotes an illegal header value in its error: the client must not pass it on.
    def echo(request: httpx.Request) -> httpx.Response:
        raise httpx.ProtocolError(f"bad header {request.headers['Authorization']!r}")

    with Client("http://api.test", "gpc_secret", transport=httpx.MockTransport(echo)) as c:
        with pytest.raises(ApiUnavailable) as info:
            c.tenants()
    assert "gpc_secret" not in str(info.value) and "<token>" in str(info.value)
    assert "gpc_secret" not in repr(ClientConfig("http://x", "gpc_secret"))


def test_an_error_body_that_is_not_json_is_one_line() -> None:
    html = "<html>\n<body>\n  <h1>Bad Gateway</h1>\n</body>\n</html>\n"
    with client(lambda request: httpx.Response(502, text=html)) as c:
        with pytest.raises(ApiUnavailable) as info:
            c.tenants()
    assert "\n" not in str(info.value) and "<h1>Bad Gateway</h1>" in str(info.value)


def test_a_real_refused_port_is_unavailable() -> None:
    with Client("http://127.0.0.1:1", "gpc_x", retries=0) as c:
        with pytest.raises(Unavailable, match=r"127\.0\.0\.1:1.*gpucaas up"):
            c.tenants()


def test_a_read_error_on_a_post_without_a_key_is_not_retried() -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadError("reset", request=request)

    with client(flaky, retry_delay_s=0) as c:
        with pytest.raises(ApiUnavailable):
            c.create_tenant("vision")
    assert calls == 1


# -- calls -----------------------------------------------------------------------------------


def test_the_token_is_sent_as_a_bearer() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": []})

    with client(handler) as c:
        assert c.tenants() == []
    assert seen[0].headers["authorization"] == "Bearer gpc_secret"
    assert seen[0].url.path == "/v1/admin/tenants"


def test_containers_follows_page_tokens_with_the_filters() -> None:
    pages = {None: (["a", "b"], "t1"), "t1": (["c"], "t2"), "t2": (["d"], None)}
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        ids, token = pages[request.url.params.get("page_token")]
        return httpx.Response(
            200, json={"items": [container(i) for i in ids], "next_page_token": token}
        )

    with client(handler) as c:
        got = c.containers(state=["running", "queued"], label={"team": "v"}, all_pages=True)
        assert [x.id for x in got] == ["a", "b", "c", "d"]
        assert [x.id for x in c.containers(limit=2)] == ["a", "b"]
    assert len(seen) == 4
    for url in seen[:3]:
        assert url.params.get_list("state") == ["running", "queued"]
        assert url.params.get_list("label") == ["team=v"]
    assert seen[3].params["limit"] == "2"


def test_run_sends_an_idempotency_key_and_reuses_it_on_retry() -> None:
    keys: list[str] = []
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        bodies.append(json.loads(request.content))
        if len(keys) == 1:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(201, json=container("abc"))

    with client(handler, retry_delay_s=0) as c:
        assert c.run({"image": "busybox", "gpus": 1}).id == "abc"
        assert len(keys) == 2 and keys[0] == keys[1]
        assert len(keys[0]) == 36  # a uuid4
        c.run({"image": "busybox", "gpus": 1})
        assert keys[2] != keys[0]  # a new run, a new key
        c.run({"image": "busybox", "gpus": 1}, idempotency_key="mine")
        assert keys[3] == "mine"
    assert bodies[0] == {"image": "busybox", "gpus": 1}


def test_logs_stream_and_map_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/nope/logs"):
            return error(404, "NotFound", "container 'nope' not found")
        assert request.url.params["follow"] == "true"
        return httpx.Response(200, content=b"hello\nworld\n")

    with client(handler) as c:
        assert b"".join(c.logs("abc", follow=True)) == b"hello\nworld\n"
        with pytest.raises(ApiInvalidRequest, match="not found"):
            list(c.logs("nope", follow=True))


def test_wait_polls_until_a_final_state_and_times_out() -> None:
    states = iter(["queued", "running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/slow"):
            return httpx.Response(200, json=container("slow", "running"))
        return httpx.Response(200, json=container("abc", next(states)))

    with client(handler) as c:
        assert c.wait("abc", poll_s=0).state == "succeeded"
        with pytest.raises(WaitTimeout, match="still running"):
            c.wait("slow", timeout=0.05, poll_s=0.01)


def test_admin_calls_hit_their_routes() -> None:
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            (request.method, request.url.raw_path.decode().partition("?")[0], request.content)
        )
        path = request.url.path
        if request.method == "DELETE" and "tenants" in path:
            return httpx.Response(204)
        if path == "/v1/admin/tenants":
            return httpx.Response(201, json={"tenant": TENANT, "token": {**TOKEN, "token": "s"}})
        if path.endswith("/tokens") and request.method == "POST":
            return httpx.Response(201, json={**TOKEN, "token": "s"})
        if path.endswith(("/tokens", "/events")):
            return httpx.Response(200, json={"items": []})
        if "/tokens/" in path:
            return httpx.Response(200, json=TOKEN)
        if path.endswith("/cordon"):
            return httpx.Response(200, json=BOARD)
        if path.endswith("/drain"):
            return httpx.Response(200, json={"board": "b1", "stopping": ["abc"]})
        return httpx.Response(200, json=container("a/b", "stopped"))

    with client(handler) as c:
        created = c.create_tenant("v", 4, 2, ["nfs1:/d"])
        assert isinstance(created, TenantCreated) and isinstance(created.tenant, Tenant)
        assert created.token.token == "s"
        c.delete_tenant("v")
        assert isinstance(c.create_token("v", "ci"), NewToken)
        c.create_token(None, "ops")
        assert c.tokens("v") == []
        assert isinstance(c.revoke_token("t1"), Token)
        assert isinstance(c.cordon("b1"), BoardView)
        c.cordon("b1", 3, cordoned=False)
        assert c.drain("b1") == DrainResult(board="b1", stopping=["abc"])
        assert c.stop("a/b").state is State.STOPPED
        assert c.events("abc") == []
    assert [(m, p) for m, p, _ in seen] == [
        ("POST", "/v1/admin/tenants"),
        ("DELETE", "/v1/admin/tenants/v"),
        ("POST", "/v1/admin/tenants/v/tokens"),
        ("POST", "/v1/admin/tokens"),
        ("GET", "/v1/admin/tokens"),
        ("DELETE", "/v1/admin/tokens/t1"),
        ("PUT", "/v1/admin/boards/b1/cordon"),
        ("PUT", "/v1/admin/boards/b1/gpus/3/cordon"),
        ("POST", "/v1/admin/boards/b1/drain"),
        ("DELETE", "/v1/containers/a%2Fb"),
        ("GET", "/v1/containers/abc/events"),
    ]
    assert json.loads(seen[0][2]) == {
        "name": "v",
        "nfs_exports": ["nfs1:/d"],
        "max_gpus": 4,
        "max_containers": 2,
    }
    assert json.loads(seen[7][2]) == {"cordoned": False}


def test_replies_are_the_wire_models() -> None:
    """The client returns the models the server answers with, not dicts."""
    events = [{"at": STAMP, "state": "queued", "reason": "Submitted", "message": ""}]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"items": events})
        return httpx.Response(200, json=container("abc", "running"))

    with client(handler) as c:
        got = c.container("abc")
        assert isinstance(got, Container) and got.state is State.RUNNING
        assert got.partition is None and got.timestamps == {}
        assert c.events("abc") == [
            Event(at=STAMP, state=State.QUEUED, reason="Submitted", message="")
        ]


def test_run_takes_the_request_model_and_sends_only_what_was_set() -> None:
    bodies: list[object] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(201, json=container("abc"))

    with client(handler) as c:
        # model_validate: mypy does not see the defaults given in Annotated[..., Field(default=...)]
        c.run(ContainerCreate.model_validate({"image": "busybox", "gpus": 2, "command": ["true"]}))
    assert bodies == [{"image": "busybox", "gpus": 2, "command": ["true"]}]


def test_a_reply_that_is_not_the_model_is_a_bad_reply() -> None:
    with client(lambda _r: httpx.Response(200, json={"id": "abc"})) as c:
        with pytest.raises(
            ApiUnavailable, match=r"not a Container \(tenant: Field required\)"
        ) as info:
            c.container("abc")
    assert info.value.type == "BadReply" and info.value.status == 200
