"""A small synchronous client of the HTTP API (what the ``gpucaas`` CLI calls).

One method per API call; replies are the API's own typed models (:mod:`gpucaas._wire`, shared
with the server and re-exported by :mod:`gpucaas.client`), like lightkube's. Every failure is a
:class:`gpucaas.errors.GpucaasError` of ``_errors.py``: HTTP errors become :class:`ApiError`
subclasses that keep the server's status, type and message; an unreachable server becomes
:class:`ApiUnreachable` naming the URL. httpx exceptions never escape.

A reply that is not the model the call expects (not a gpucaas API, or one too different from
this client) is an :class:`ApiUnavailable` of type ``BadReply``.
"""

from __future__ import annotations

import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gpucaas._secrets import check_private, clean_token
from gpucaas._wire import (
    FINAL_STATES,
    BoardView,
    Container,
    ContainerCreate,
    ContainerPage,
    DrainResult,
    Event,
    EventList,
    FleetView,
    NewToken,
    State,
    Tenant,
    TenantCreated,
    TenantList,
    Token,
    TokenList,
)
from gpucaas.errors import InvalidRequest

from ._errors import (
    ApiConflict,
    ApiError,
    ApiInvalidRequest,
    ApiRefused,
    ApiUnavailable,
    ApiUnreachable,
    WaitTimeout,
    error_for,
)

__all__ = [
    "DEFAULT_URL",
    "ApiConflict",
    "ApiError",
    "ApiInvalidRequest",
    "ApiRefused",
    "ApiUnavailable",
    "ApiUnreachable",
    "Client",
    "ClientConfig",
    "WaitTimeout",
    "default_config_path",
]

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "GPUCAAS_URL"
TOKEN_ENV = "GPUCAAS_TOKEN"
CONFIG_ENV = "GPUCAAS_CONFIG"

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$GPUCAAS_CONFIG``, else ``~/.config/gpucaas/config.toml``."""
    env = os.environ if env is None else env
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path.home() / ".config" / "gpucaas" / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    """Where the API is and which token to send."""

    url: str
    token: str = field(repr=False)  # a secret: never in a repr, a log line or a traceback

    @classmethod
    def resolve(
        cls,
        url_flag: str | None,
        token_flag: str | None,
        *,
        env: Mapping[str, str] | None = None,
        config_path: Path | None = None,
    ) -> ClientConfig:
        """Flags, else ``GPUCAAS_URL``/``GPUCAAS_TOKEN``, else the config file, else (URL
        only) ``http://127.0.0.1:8080``. The token loses surrounding whitespace (a ``$(cat
        file)`` newline). Raises InvalidRequest when no token is given, when it is not
        printable ASCII, or when the config file holds one and is open to group or others."""
        env = os.environ if env is None else env
        path = config_path if config_path is not None else default_config_path(env)
        file = _read_config(path)
        url = url_flag or env.get(URL_ENV) or file.get("url") or DEFAULT_URL
        sources = (
            (token_flag, f"--token (or {TOKEN_ENV})"),
            (env.get(TOKEN_ENV), TOKEN_ENV),
            (file.get("token"), f"the config file {path}"),
        )
        for value, source in sources:
            if value and value.strip():
                return cls(url=url.strip().rstrip("/"), token=clean_token(value, source))
        raise InvalidRequest(
            f'no API token: pass --token, set {TOKEN_ENV}, or write token = "..." in '
            f"{path} (gpucaas up printed one and saved it in STATE_DIR/credentials.json)"
        )

    def client(self, **kwargs: Any) -> Client:
        return Client(self.url, self.token, **kwargs)


def _read_config(path: Path) -> dict[str, str]:
    """The config file's ``url`` and ``token``; {} when there is none. A file that holds a
    token must be the owner's alone (mode 0600), as ssh asks of a private key."""
    try:
        with path.open("rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            data = tomllib.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidRequest(f"cannot read the config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequest(f"the config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError:  # its message would quote bytes of the file, perhaps the token's
        raise InvalidRequest(f"the config file {path} is not UTF-8 text") from None
    except RecursionError:
        raise InvalidRequest(
            f"the config file {path} is nested too deeply; it holds only url and token"
        ) from None
    out: dict[str, str] = {}
    for key in ("url", "token"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f'{path}: {key} must be a string, e.g. {key} = "..."')
        out[key] = value
    if "token" in out:
        check_private(path, mode, "the config file")
    return out


def _check_url(url: str) -> str:
    """``url`` if it can address the API; else InvalidRequest (a usage error, exit 2), not
    the "cannot reach" (exit 3) or the httpx exception that sending to it would end in."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"the API URL {url!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidRequest(
            f"the API URL {url!r} is not an http:// or https:// URL with a host; give one "
            f"like {DEFAULT_URL} (--url or {URL_ENV})"
        )
    return url


class Client:
    """The gpucaas API over HTTP. Use as a context manager, or call :meth:`close`.

    Connection errors are retried ``retries`` times, and other transport errors too for
    calls that are safe to repeat (reads, PUT/DELETE, and ``run``, which sends an
    Idempotency-Key so a retry never creates a second container).

    ``token`` loses surrounding whitespace; one that is not printable ASCII raises
    :class:`~gpucaas.errors.InvalidRequest` (by position, never showing it), and no message
    of this client ever contains it.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30,
        transport: httpx.BaseTransport | None = None,
        retries: int = 1,
        retry_delay_s: float = 0.5,
    ) -> None:
        self.base_url = _check_url(base_url.strip().rstrip("/"))
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self._token = clean_token(token, "the client's token argument")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self._token}", "User-Agent": "gpucaas-cli"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _unreachable(self, exc: httpx.HTTPError) -> ApiUnreachable:
        # httpx may quote the request's headers (an illegal value, say): never the token.
        reason = (str(exc) or type(exc).__name__).replace(self._token, "<token>")
        return ApiUnreachable(
            0,
            type(exc).__name__,
            f"cannot reach the gpucaas API at {self.base_url} ({reason}); is `gpucaas up` "
            "running? (set the URL with --url or GPUCAAS_URL)",
        )

    def _with_retry(self, call: Callable[[], _T], *, safe: bool) -> _T:
        attempt = 0
        while True:
            try:
                return call()
            except httpx.TransportError as exc:
                retryable = safe or isinstance(exc, httpx.ConnectError)
                if not retryable or attempt >= self.retries:
                    raise self._unreachable(exc) from exc
                attempt += 1
                time.sleep(self.retry_delay_s)
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        status = response.status_code
        try:
            body = response.json()
            err = body["error"]
            kind, message = str(err["type"]), str(err["message"])
            details = err.get("details")
        except (ValueError, KeyError, TypeError):
            text = " ".join(response.text.split())[:300]  # one line, as errors are printed
            kind, message, details = "HTTPError", f"HTTP {status} from {self.base_url}", None
            if text:
                message += f": {text}"
        raise error_for(status, kind, message, details)

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
        safe: bool | None = None,
    ) -> tuple[int, Any]:
        """The reply's status and JSON (None when empty); an error status raises."""
        if safe is None:
            safe = method in ("GET", "PUT", "DELETE")

        def once() -> httpx.Response:
            return self._http.request(method, path, json=json, params=params, headers=headers)

        response = self._with_retry(once, safe=safe)
        self._raise_for(response)
        if response.status_code == 204 or not response.content:
            return response.status_code, None
        try:
            return response.status_code, response.json()
        except ValueError as exc:
            raise ApiUnavailable(
                response.status_code,
                "BadReply",
                f"{self.base_url} answered {method} {path} with something that is not JSON; "
                "is it a gpucaas API?",
            ) from exc

    def _reply(self, model: type[_M], method: str, path: str, **kwargs: Any) -> _M:
        """Call, then read the reply as ``model``; a reply that is not one is a BadReply."""
        status, data = self._call(method, path, **kwargs)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the body"
            raise ApiUnavailable(
                status,
                "BadReply",
                f"{self.base_url} answered {method} {path} with something that is not a "
                f"{model.__name__} ({where}: {first['msg']}); is it a gpucaas API of this "
                "version?",
            ) from exc

    # -- containers ------------------------------------------------------------------------

    def run(
        self, body: ContainerCreate | Mapping[str, Any], idempotency_key: str | None = None
    ) -> Container:
        """``POST /v1/containers``; a retry resends the same Idempotency-Key.

        ``body`` is a :class:`ContainerCreate` or its JSON as a mapping (checked by the
        server, whose 422 names each bad field).
        """
        key = idempotency_key or str(uuid.uuid4())
        if isinstance(body, ContainerCreate):
            payload = body.model_dump(mode="json", exclude_unset=True)
        else:
            payload = dict(body)
        return self._reply(
            Container,
            "POST",
            "/v1/containers",
            json=payload,
            headers={"Idempotency-Key": key},
            safe=True,
        )

    def container_page(
        self,
        state: Iterable[State | str] | None = None,
        label: Mapping[str, str] | Iterable[str] | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> ContainerPage:
        """One page of containers, newest first; its ``next_page_token`` fetches the next."""
        labels = (
            [f"{k}={v}" for k, v in label.items()] if isinstance(label, Mapping) else label or []
        )
        params: dict[str, Any] = {"state": [str(s) for s in state or ()], "label": list(labels)}
        if limit is not None:
            params["limit"] = limit
        if page_token:
            params["page_token"] = page_token
        return self._reply(ContainerPage, "GET", "/v1/containers", params=params)

    def containers(
        self,
        state: Iterable[State | str] | None = None,
        label: Mapping[str, str] | Iterable[str] | None = None,
        limit: int | None = None,
        page_token: str | None = None,
        all_pages: bool = False,
    ) -> list[Container]:
        """Containers, newest first; with ``all_pages`` it follows ``next_page_token``."""
        states = list(state or ())
        labels = dict(label) if isinstance(label, Mapping) else list(label or ())
        items: list[Container] = []
        token = page_token
        while True:
            page = self.container_page(states, labels, limit, token)
            items.extend(page.items)
            token = page.next_page_token
            if not all_pages or not token:
                return items

    def container(self, container_id: str) -> Container:
        """One container, with the time it entered each state and its boot time."""
        return self._reply(Container, "GET", f"/v1/containers/{_seg(container_id)}")

    def events(self, container_id: str) -> list[Event]:
        """The container's state changes, oldest first."""
        path = f"/v1/containers/{_seg(container_id)}/events"
        return self._reply(EventList, "GET", path).items

    def logs(self, container_id: str, follow: bool = False) -> Iterator[bytes]:
        """The container's output as it arrives (``follow``: until it ends)."""
        path = f"/v1/containers/{_seg(container_id)}/logs"
        params = {"follow": "true" if follow else "false"}
        request = self._http.build_request("GET", path, params=params, timeout=None)
        response = self._with_retry(lambda: self._http.send(request, stream=True), safe=True)
        try:
            if response.status_code >= 400:
                response.read()
                self._raise_for(response)
            try:
                yield from response.iter_bytes()
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc
        finally:
            response.close()

    def stop(self, container_id: str) -> Container:
        """Stop a container (idempotent); the reply is its state now."""
        return self._reply(Container, "DELETE", f"/v1/containers/{_seg(container_id)}")

    def wait(
        self,
        container_id: str,
        states: Iterable[State | str] = FINAL_STATES,
        timeout: float | None = None,
        poll_s: float = 0.2,
    ) -> Container:
        """Poll until the container is in one of ``states`` (default: a final one).

        Raises :class:`WaitTimeout` when ``timeout`` seconds pass first.
        """
        wanted = {str(s) for s in states}
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.container(container_id)
            if current.state in wanted:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(container_id, current.state, timeout or 0.0)
            time.sleep(poll_s)

    # -- admin -----------------------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        max_gpus: int | None = None,
        max_containers: int | None = None,
        nfs_exports: Iterable[str] = (),
    ) -> TenantCreated:
        """Create a tenant; the reply holds its first token's secret (shown once)."""
        body: dict[str, Any] = {"name": name, "nfs_exports": list(nfs_exports)}
        if max_gpus is not None:
            body["max_gpus"] = max_gpus
        if max_containers is not None:
            body["max_containers"] = max_containers
        return self._reply(TenantCreated, "POST", "/v1/admin/tenants", json=body)

    def tenants(self) -> list[Tenant]:
        return self._reply(TenantList, "GET", "/v1/admin/tenants").items

    def delete_tenant(self, name: str) -> None:
        self._call("DELETE", f"/v1/admin/tenants/{_seg(name)}")

    def create_token(self, tenant: str | None, label: str = "") -> NewToken:
        """A new token of ``tenant``, or an admin token when ``tenant`` is None."""
        path = "/v1/admin/tokens" if tenant is None else f"/v1/admin/tenants/{_seg(tenant)}/tokens"
        return self._reply(NewToken, "POST", path, json={"label": label})

    def tokens(self, tenant: str | None = None) -> list[Token]:
        params = {"tenant": tenant} if tenant is not None else None
        return self._reply(TokenList, "GET", "/v1/admin/tokens", params=params).items

    def revoke_token(self, token_id: str) -> Token:
        return self._reply(Token, "DELETE", f"/v1/admin/tokens/{_seg(token_id)}")

    def fleet(self) -> FleetView:
        return self._reply(FleetView, "GET", "/v1/admin/fleet")

    def cordon(self, board: str, module_id: int | None = None, cordoned: bool = True) -> BoardView:
        """Cordon (or uncordon) a board, or one GPU of it; returns the board's view."""
        path = f"/v1/admin/boards/{_seg(board)}"
        if module_id is not None:
            path += f"/gpus/{module_id}"
        return self._reply(BoardView, "PUT", path + "/cordon", json={"cordoned": cordoned})

    def drain(self, board: str) -> DrainResult:
        """Cordon a board and stop its containers."""
        return self._reply(DrainResult, "POST", f"/v1/admin/boards/{_seg(board)}/drain")


def _seg(value: str) -> str:
    """One URL path segment, escaped (an ID with '/' must not reach another route)."""
    from urllib.parse import quote

    return quote(value, safe="")
