"""The HTTP API (FastAPI): tenants' containers under ``/v1``, the operator's views under
``/v1/admin``, the dashboard at ``/``, ``/healthz`` and ``/metrics``.

Every request carries ``Authorization: Bearer <token>``. A tenant token sees only its
tenant's containers (others' are 404, exactly like missing ones); an admin token sees all
and may use ``/v1/admin``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import RowMapping
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpucaas._wire import (
    BoardPartition,
    BoardView,
    Container,
    ContainerCreate,
    ContainerPage,
    CordonRequest,
    DrainResult,
    ErrorReply,
    Event,
    EventList,
    FleetView,
    GpuView,
    Health,
    NewToken,
    PartitionView,
    State,
    Tenant,
    TenantCreate,
    TenantCreated,
    TenantList,
    Token,
    TokenCreate,
    TokenList,
)
from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, Unavailable
from gpucaas.topology import get_model

from ._backend import Backend, TenantSpec
from ._errors import FollowersClosed, Forbidden, NotFound, SpecTooLarge, Unauthenticated
from ._follow import Followers, FollowResponse, guarded
from ._follow import close as close_stream
from ._limits import Limits, RequestLimits
from ._scheduler import Scheduler, new_workload, workload_of
from ._store import DEFAULT_PAGE, MAX_PAGE, Principal, Store

FIRST_CHUNK_WAIT_S = 0.5
"""How long a follow request waits for its first chunk before answering 200 anyway: long
enough that a backend's refusal becomes an error status, short enough for a quiet log."""
QUEUED_POLL_S = 0.5
"""How often a follower of a queued container asks the store whether it was placed."""

_bearer = HTTPBearer(auto_error=False, description="a gpucaas token: gpc_…")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorReply} for code in (400, 401, 403, 404, 409, 422, 429, 503)
}


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def container_view(
    row: RowMapping, events: list[RowMapping] | None = None, *, env: bool = True
) -> Container:
    """The wire view of a stored container; ``env=False`` leaves the env out (list pages:
    env often holds secrets and can be large; one container's GET still has it)."""
    spec = row["spec"]
    partition = None
    if row["board"] is not None:
        partition = PartitionView(
            board=row["board"],
            partition_id=row["partition_id"],
            module_ids=list(row["module_ids"] or []),
        )
    timestamps: dict[str, str] = {}
    boot = None
    for e in events or ():
        timestamps.setdefault(e["state"], iso(e["at"]))
        if e["state"] == State.RUNNING.value and boot is None:
            boot = round(e["at"] - row["created_at"], 3)
    return Container(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        image=row["image"],
        command=spec.get("command", []),
        args=spec.get("args", []),
        env=spec.get("env", {}) if env else {},
        gpus=row["gpus"],
        gpus_granted=row["gpus_granted"],
        nfs=spec.get("nfs", []),
        labels=spec.get("labels", {}),
        max_runtime_s=row["max_runtime_s"],
        state=State(row["state"]),
        reason=row["reason"],
        message=row["message"],
        exit_code=row["exit_code"],
        partition=partition,
        created_at=iso(row["created_at"]),
        updated_at=iso(row["updated_at"]),
        timestamps=timestamps,
        boot_seconds=boot,
    )


def tenant_view(row: RowMapping) -> Tenant:
    return Tenant(
        name=row["name"],
        max_gpus=row["max_gpus"],
        max_containers=row["max_containers"],
        nfs_exports=list(row["nfs_exports"]),
        created_at=iso(row["created_at"]),
        gpus_in_use=row["gpus_held"],
        containers_active=row["containers_unfinished"],
    )


def token_view(row: RowMapping) -> Token:
    return Token(
        id=row["id"],
        tenant=row["tenant"],
        label=row["label"],
        created_at=iso(row["created_at"]),
        revoked_at=iso(row["revoked_at"]) if row["revoked_at"] is not None else None,
    )


def _status_of(exc: GpucaasError) -> int:
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status
    if isinstance(exc, InvalidRequest):
        return 400
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Unavailable):
        return 503
    return 500


def _error(
    status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body = {"error": {"type": kind, "message": message, "details": details or []}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(p) for p in loc]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if creds is None:
        raise Unauthenticated(
            "no token: send 'Authorization: Bearer <token>' (gpucaas up printed one)"
        )
    store: Store = request.app.state.store
    return store.authenticate(creds.credentials)


def _admin(who: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not who.admin:
        raise Forbidden("this needs an admin token; tenant tokens cannot use /v1/admin")
    return who


Who = Annotated[Principal, Depends(_principal)]
Admin = Annotated[Principal, Depends(_admin)]


_HTTP_KINDS = {404: "NotFound", 405: "MethodNotAllowed", 400: "BadRequest", 413: "BodyTooLarge"}


def _check_sizes(body: ContainerCreate, limits: Limits) -> None:
    """A container's env and command+args in bytes (UTF-8) against the limits."""
    env = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in body.env.items())
    if env > limits.max_env_bytes:
        raise SpecTooLarge("env", env, limits.max_env_bytes)
    argv = sum(len(a.encode()) + 1 for a in [*body.command, *body.args])
    if argv > limits.max_command_bytes:
        raise SpecTooLarge("command", argv, limits.max_command_bytes)


def create_app(
    store: Store,
    scheduler: Scheduler,
    backend: Backend,
    limits: Limits | None = None,
    followers: Followers | None = None,
) -> FastAPI:
    """The API over one store, scheduler and backend, with ``limits`` on request sizes;
    ``followers`` bounds the open ``logs?follow=true`` streams (default: :class:`Followers`'s
    bounds)."""
    limits = limits or Limits()
    followers = followers or Followers()
    app = FastAPI(
        title="gpucaas",
        version="0.1.0",
        description="GPU Containers-as-a-Service: run a container on 1-8 whole GPUs of one "
        "NVIDIA HGX board, in its own NVLink partition.",
        openapi_url="/openapi.json",
    )
    app.state.store = store
    app.add_middleware(RequestLimits, limits=limits)
    app.state.followers = followers
    registry = CollectorRegistry()
    requests_total = Counter(
        "gpucaas_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "gpucaas_http_request_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
    )

    @app.middleware("http")
    async def _metrics(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        latency.labels(request.method, path).observe(time.perf_counter() - start)
        requests_total.labels(request.method, path, str(response.status_code)).inc()
        return response

    @app.exception_handler(GpucaasError)
    async def _gpucaas_error(_request: Request, exc: GpucaasError) -> JSONResponse:
        details = None
        if isinstance(exc, SpecTooLarge):
            details = [{"field": exc.field, "message": str(exc), "type": "too_large"}]
        return _error(_status_of(exc), type(exc).__name__, str(exc), details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Routing (unknown path, wrong method) and FastAPI's own body parsing end here.
        status = exc.status_code
        kind = _HTTP_KINDS.get(status, "HTTPError")
        if status == 404:
            message = (
                f"no such route: {request.method} {request.url.path[:200]} (see /openapi.json)"
            )
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path[:200]}; use {allowed}"
        elif status == 400:
            message = "the request body could not be read as JSON; send a JSON object"
        else:
            message = str(exc.detail)[:500]
        response = _error(status, kind, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        messages = []
        for err in exc.errors():
            field = _field(tuple(err.get("loc", ())))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            if err.get("type") == "extra_forbidden":
                msg = "unknown field; remove it (see /openapi.json for the fields)"
            elif err.get("type") == "json_invalid":
                # FastAPI puts the parse error's offset in loc ("[0]"): it is the body.
                field = "body"
                reason = str(err.get("ctx", {}).get("error", "")) or "invalid"
                msg = f"the body is not valid JSON ({reason[:100]}); send a JSON object"
            details.append({"field": field, "message": msg, "type": err.get("type", "")})
            messages.append(f"{field}: {msg}")
        return _error(422, "ValidationError", "; ".join(messages), details)

    # -- containers ------------------------------------------------------------------------

    @app.post("/v1/containers", status_code=201, responses=_ERRORS, tags=["containers"])
    def create_container(
        body: ContainerCreate,
        who: Who,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                max_length=255,
                pattern=r"^[\x21-\x7e]+$",
                description="a retried POST with the same key returns the same container",
            ),
        ] = None,
    ) -> Container:
        """Run a container on ``gpus`` GPUs. The reply says the partition size granted."""
        if who.tenant is None:
            raise Forbidden("admin tokens do not own containers; use a tenant's token")
        _check_sizes(body, limits)
        workload = new_workload(
            "precheck",
            who.tenant,
            body.image,
            body.model_dump(mode="json"),
            gpus=body.gpus,
            max_runtime_s=body.max_runtime_s,
        )
        row, created = store.submit(
            who.tenant,
            body,
            gpus_granted=scheduler.granted_size(body.gpus),
            idempotency_key=idempotency_key,
            check=lambda: backend.check(workload),
        )
        if created:
            scheduler.wake()
        else:
            response.headers["Idempotent-Replayed"] = "true"
        return container_view(row)

    @app.get("/v1/containers", responses=_ERRORS, tags=["containers"])
    def list_containers(
        who: Who,
        state: Annotated[list[State] | None, Query(description="repeat to allow several")] = None,
        label: Annotated[
            list[str] | None, Query(description="key=value; repeat to require several")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        page_token: Annotated[str | None, Query(max_length=200)] = None,
        tenant: Annotated[str | None, Query(max_length=40, description="admin only")] = None,
    ) -> ContainerPage:
        """Containers, newest first; ``next_page_token`` fetches the next page."""
        labels: dict[str, str] = {}
        for item in label or ():
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise InvalidRequest(f"label filter {item!r} is not key=value")
            labels[key] = value
        scope = who.tenant
        if who.admin:
            scope = tenant
        elif tenant is not None and tenant != who.tenant:
            raise Forbidden("the tenant filter is for admin tokens")
        rows, token = store.containers(
            scope, states=state or (), labels=labels, limit=limit, page_token=page_token
        )
        return ContainerPage(
            items=[container_view(r, env=False) for r in rows], next_page_token=token
        )

    @app.get("/v1/containers/{container_id}", responses=_ERRORS, tags=["containers"])
    def get_container(container_id: str, who: Who) -> Container:
        """One container, with the time it entered each state and its boot time."""
        row = store.container(container_id, who.tenant)
        return container_view(row, store.events(row["seq"]))

    @app.get("/v1/containers/{container_id}/events", responses=_ERRORS, tags=["containers"])
    def container_events(container_id: str, who: Who) -> EventList:
        row = store.container(container_id, who.tenant)
        return EventList(
            items=[
                Event(
                    at=iso(e["at"]),
                    state=State(e["state"]),
                    reason=e["reason"],
                    message=e["message"],
                )
                for e in store.events(row["seq"])
            ]
        )

    @app.get(
        "/v1/containers/{container_id}/logs",
        responses={**_ERRORS, 200: {"content": {"text/plain": {}}}},
        response_class=StreamingResponse,
        tags=["containers"],
    )
    async def container_logs(
        container_id: str, who: Who, request: Request, follow: bool = False
    ) -> StreamingResponse:
        """The container's output (stdout and stderr); ``follow=true`` streams until it
        ends, at most ``--max-followers-per-tenant`` streams at once per tenant (429)."""
        row = await run_in_threadpool(store.container, container_id, who.tenant)
        if follow:
            return await _follow(row, request)
        workload = workload_of(row)

        def chunks() -> Iterator[bytes]:
            if row["board"] is not None:
                yield from backend.logs(workload, follow=False)

        # The first chunk is read here, so a backend that cannot give logs at all answers
        # with an error status (503 and why) instead of a broken 200 stream.
        stream = chunks()
        first = await run_in_threadpool(next, stream, b"")

        def rest() -> Iterator[bytes]:
            yield first
            try:
                yield from stream
            except GpucaasError as exc:
                yield f"\ngpucaas: the log stream broke off: {exc}\n".encode()

        return StreamingResponse(rest(), media_type="text/plain; charset=utf-8")

    async def _follow(row: RowMapping, request: Request) -> StreamingResponse:
        # No thread is held while following (issue 13, point 1): the stream is a coroutine
        # on the event loop, bounded per tenant, ended by a disconnect or a stopping server.
        tenant = str(row["tenant"])
        followers.acquire(tenant)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                followers.release(tenant)

        source = _placed_then_followed(row)
        # A backend that cannot give logs at all answers with an error status; one that is
        # merely quiet answers 200 at once (its first chunk comes later).
        first = asyncio.ensure_future(anext(source))
        try:
            await asyncio.wait({first}, timeout=FIRST_CHUNK_WAIT_S)
            failed = first.exception() if first.done() and not first.cancelled() else None
            if failed is not None and not isinstance(failed, StopAsyncIteration):
                raise failed
        except BaseException:
            await close_stream(source, first)
            release()
            raise

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in guarded(
                    source,
                    disconnected=request.is_disconnected,
                    closing=followers.closing,
                    release=release,
                    first=first,
                ):
                    yield chunk
            except GpucaasError as exc:
                yield f"\ngpucaas: the log stream broke off: {exc}\n".encode()
                return
            if followers.closing.is_set():
                # Not the container's end: say so, or the follower would take it for one.
                yield f"\ngpucaas: the log stream broke off: {FollowersClosed()}\n".encode()

        async def on_close() -> None:
            try:
                await close_stream(source, first)
            finally:
                release()

        return FollowResponse(body(), on_close)

    async def _placed_then_followed(row: RowMapping) -> AsyncIterator[bytes]:
        while row["board"] is None:
            # Queued: wait until it is placed (or ends without running).
            if State(row["state"]).final:
                return
            await asyncio.sleep(QUEUED_POLL_S)
            row = await run_in_threadpool(store.container, row["id"])
        source = backend.follow_logs(workload_of(row))
        try:
            async for chunk in source:
                yield chunk
        finally:
            await source.aclose()

    @app.delete("/v1/containers/{container_id}", responses=_ERRORS, tags=["containers"])
    def stop_container(container_id: str, who: Who) -> Container:
        """Stop a container (SIGTERM, then SIGKILL after the grace period). Idempotent."""
        row = store.request_stop(container_id, who.tenant)
        scheduler.wake(stops=True)
        return container_view(row)

    # -- admin -----------------------------------------------------------------------------

    @app.post("/v1/admin/tenants", status_code=201, responses=_ERRORS, tags=["admin"])
    def create_tenant(body: TenantCreate, _: Admin) -> TenantCreated:
        """Create a tenant and its first token (shown once)."""
        tenant, secret, token = store.create_tenant(body)
        backend.ensure_tenant(
            TenantSpec(body.name, body.max_gpus, body.max_containers, tuple(body.nfs_exports))
        )
        return TenantCreated(
            tenant=tenant_view(tenant),
            token=NewToken(**token_view(token).model_dump(), token=secret),
        )

    @app.get("/v1/admin/tenants", responses=_ERRORS, tags=["admin"])
    def list_tenants(_: Admin) -> TenantList:
        return TenantList(items=[tenant_view(t) for t in store.tenants()])

    @app.get("/v1/admin/tenants/{name}", responses=_ERRORS, tags=["admin"])
    def get_tenant(name: str, _: Admin) -> Tenant:
        return tenant_view(store.tenant(name))

    @app.delete("/v1/admin/tenants/{name}", status_code=204, responses=_ERRORS, tags=["admin"])
    def delete_tenant(name: str, _: Admin) -> Response:
        """Delete a tenant with no unfinished containers, its tokens and its history."""
        store.delete_tenant(name)
        backend.remove_tenant(name)
        return Response(status_code=204)

    @app.post("/v1/admin/tenants/{name}/tokens", status_code=201, responses=_ERRORS, tags=["admin"])
    def create_tenant_token(name: str, body: TokenCreate, _: Admin) -> NewToken:
        secret, row = store.create_token(name, body.label)
        return NewToken(**token_view(row).model_dump(), token=secret)

    @app.post("/v1/admin/tokens", status_code=201, responses=_ERRORS, tags=["admin"])
    def create_admin_token(body: TokenCreate, _: Admin) -> NewToken:
        secret, row = store.create_token(None, body.label)
        return NewToken(**token_view(row).model_dump(), token=secret)

    @app.get("/v1/admin/tokens", responses=_ERRORS, tags=["admin"])
    def list_tokens(
        _: Admin, tenant: Annotated[str | None, Query(max_length=40)] = None
    ) -> TokenList:
        """Tokens (never their secrets), of one tenant or all."""
        return TokenList(items=[token_view(t) for t in store.tokens(tenant)])

    @app.delete("/v1/admin/tokens/{token_id}", responses=_ERRORS, tags=["admin"])
    def revoke_token(token_id: str, _: Admin) -> Token:
        """Revoke a token; it stops working at once. Idempotent."""
        return token_view(store.revoke_token(token_id))

    @app.get("/v1/admin/fleet", responses=_ERRORS, tags=["admin"])
    def fleet(_: Admin) -> FleetView:
        """Boards, their GPUs and who holds what."""
        return fleet_view(scheduler)

    def _board_known(board: str) -> None:
        if board not in {b.name for b in backend.boards()}:
            raise NotFound("board", board)

    @app.put("/v1/admin/boards/{board}/cordon", responses=_ERRORS, tags=["admin"])
    def cordon_board(board: str, body: CordonRequest, _: Admin) -> BoardView:
        """Keep new containers off a board (or let them back with cordoned=false)."""
        _board_known(board)
        scheduler.cordon(board, 0, body.cordoned)
        return _one_board(board)

    @app.put("/v1/admin/boards/{board}/gpus/{module_id}/cordon", responses=_ERRORS, tags=["admin"])
    def cordon_gpu(board: str, module_id: int, body: CordonRequest, _: Admin) -> BoardView:
        """Keep new containers off one GPU (by module ID, 1-8)."""
        _board_known(board)
        if not 1 <= module_id <= 8:
            raise InvalidRequest(
                f"module_id must be 1-8 (the GPU's baseboard slot), got {module_id}"
            )
        scheduler.cordon(board, module_id, body.cordoned)
        return _one_board(board)

    @app.post("/v1/admin/boards/{board}/drain", responses=_ERRORS, tags=["admin"])
    def drain(board: str, _: Admin) -> DrainResult:
        """Cordon a board and stop every container on it."""
        _board_known(board)
        scheduler.cordon(board, 0, True)
        ids = scheduler.on_board(board)
        for cid in ids:
            store.request_stop(cid, None, reason="Drained")
        scheduler.wake(stops=True)
        return DrainResult(board=board, stopping=ids)

    def _one_board(board: str) -> BoardView:
        return next(b for b in fleet_view(scheduler).boards if b.name == board)

    # -- plumbing --------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    def healthz() -> Health:
        return Health(ok=True, scheduler_passes=scheduler.passes, backend=backend.name)

    @app.get("/metrics", response_class=Response, responses=_ERRORS, tags=["ops"])
    def metrics(_: Admin) -> Response:
        """Prometheus metrics; needs an admin token (per-route counts say what tenants do)."""
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        page = resources.files("gpucaas.control").joinpath("static/dashboard.html")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    return app


def fleet_view(scheduler: Scheduler) -> FleetView:
    ids = scheduler.container_ids()
    with scheduler.lock:
        boards = scheduler.fleet.boards()
        queued = len(scheduler.queue)
    views = []
    active = 0
    for b in boards:
        holder: dict[int, tuple[str, str]] = {}
        partitions = []
        for p in b.placements:
            cid = ids.get(int(p.request_id), str(p.request_id))
            for module_id in p.module_ids:
                holder[int(module_id)] = (cid, p.tenant)
            partitions.append(
                BoardPartition(
                    partition_id=p.partition_id,
                    module_ids=[int(m) for m in p.module_ids],
                    container=cid,
                    tenant=p.tenant,
                )
            )
        active += len(partitions)
        gpus = []
        for m in range(1, get_model(b.model).gpu_count + 1):
            bit = 1 << (m - 1)
            if m in holder:
                gpus.append(
                    GpuView(module_id=m, state="used", container=holder[m][0], tenant=holder[m][1])
                )
            elif b.unhealthy & bit:
                gpus.append(GpuView(module_id=m, state="unhealthy"))
            elif b.cordoned_gpus & bit:
                gpus.append(GpuView(module_id=m, state="cordoned"))
            elif b.reserved & bit:
                gpus.append(GpuView(module_id=m, state="reserved"))
            else:
                gpus.append(GpuView(module_id=m, state="free"))
        views.append(
            BoardView(
                name=b.name, model=b.model, cordoned=b.cordoned, gpus=gpus, partitions=partitions
            )
        )
    capacity = sum(len(v.gpus) for v in views)
    allocated = sum(1 for v in views for g in v.gpus if g.state == "used")
    return FleetView(
        boards=views,
        capacity=capacity,
        allocated=allocated,
        free=sum(1 for v in views for g in v.gpus if g.state == "free" and not v.cordoned),
        queued=queued,
        partitions_active=active,
    )
