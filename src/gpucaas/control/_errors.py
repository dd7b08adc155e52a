"""Errors of the control plane, each with the HTTP status the API answers with.

::

    GpucaasError
    ├── InvalidRequest
    │   ├── NotFound              404: no such container/tenant/token (or not yours)
    │   ├── Unauthenticated       401: no token, a malformed or unknown or revoked one
    │   ├── Forbidden             403: the token may not do this (admin only, NFS export)
    │   ├── ExecutorRefused       422: the backend's executor cannot run this request
    │   ├── SpecTooLarge          422: a container's env or command is over its size limit
    │   ├── BadStoreUrl           a store URL that is neither sqlite nor postgresql
    │   └── KubernetesRefused     the Kubernetes API refused a call (4xx but 404/409)
    ├── Refused
    │   ├── QuotaExceeded         429/403: the tenant's GPU or container quota (also
    │   │                         InvalidRequest)
    │   ├── TooManyFollowers      429: the tenant (or the server) follows too many logs
    │   └── Conflict
    │       ├── IdempotencyMismatch   409: an Idempotency-Key reused with another body
    │       ├── AlreadyExists         409: a tenant of that name exists
    │       ├── StateConflict         409: the object's state does not allow this
    │       ├── AlreadyRunning        a container directory whose shim still runs it
    │       ├── StateDirBusy          another `gpucaas up` holds the state directory
    │       ├── StoreConflict         a write broke a unique or foreign-key constraint
    │       └── KubernetesConflict    the Kubernetes API answered 409
    ├── Unavailable
    │   ├── StoreUnavailable      503: the database cannot be opened, or failed
    │   ├── FollowersClosed       503: the server is stopping; no new log stream
    │   ├── EngineNotFound        503: podman/docker is not on PATH
    │   ├── SandboxUnavailable    bubblewrap is missing or cannot make a sandbox here
    │   ├── ShimStartFailed       a container's shim did not come up
    │   ├── EngineCommandFailed   a podman/docker command failed
    │   ├── KubernetesError       the Kubernetes API failed (5xx)
    │   └── Unreachable
    │       ├── StoreUnreachable        no connection to the database server (also
    │       │                           StoreUnavailable: 503)
    │       └── KubernetesUnreachable   the Kubernetes API cannot be reached
    └── MisuseError
        └── StoreQueryError       the database refused our SQL (a bug, or a schema from
                                  another version)

The Kubernetes errors share the family base :class:`KubernetesApiError` (``what`` names
the call), and :func:`gpucaas.control._dberrors.map_db_errors` turns every SQLAlchemy error
into a store error here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gpucaas.errors import (
    Conflict,
    GpucaasError,
    InvalidRequest,
    MisuseError,
    Refused,
    Unavailable,
    Unreachable,
    errorclass,
)

from ._supervisor import SUPERVISOR_LOG


@errorclass
class NotFound(InvalidRequest):
    """No such object, or one the caller may not see (answered alike: 404)."""

    status = 404
    template = "{kind} {name!r} not found; list them to see what exists"
    kind: str
    name: str


@errorclass
class Unauthenticated(InvalidRequest):
    """The request carries no usable token."""

    status = 401
    template = "{reason}"
    reason: str


@errorclass
class Forbidden(InvalidRequest):
    """The token is valid but may not do this."""

    status = 403
    template = "{reason}"
    reason: str


@errorclass
class QuotaExceeded(Refused, InvalidRequest):
    """The tenant's quota does not allow this request now (429) or ever (403)."""

    tenant: str
    what: str
    limit: int
    used: int
    asked: int

    @property
    def status(self) -> int:
        return 403 if self.asked > self.limit else 429

    def __str__(self) -> str:
        if self.asked > self.limit:
            return (
                f"tenant {self.tenant!r} may hold at most {self.limit} {self.what}, this request "
                f"needs {self.asked}; ask the operator to raise the quota"
            )
        return (
            f"tenant {self.tenant!r} holds {self.used} of {self.limit} {self.what}; this request "
            f"needs {self.asked} more: wait for a container to end, or stop one"
        )


@errorclass
class TooManyFollowers(Refused):
    """A ``logs?follow=true`` beyond the open streams allowed per tenant or per server."""

    status = 429
    tenant: str
    limit: int
    scope: str
    """``tenant``: the tenant's own bound; ``server``: the bound of all tenants together."""

    def __str__(self) -> str:
        if self.scope == "tenant":
            return (
                f"tenant {self.tenant!r} already follows {self.limit} log streams, its limit; "
                "close one, or read the log without follow"
            )
        return (
            f"this server already follows {self.limit} log streams, its limit; retry later, "
            "or read the log without follow"
        )


@errorclass
class IdempotencyMismatch(Conflict):
    """An Idempotency-Key was reused for a different request."""

    status = 409
    template = (
        "Idempotency-Key {key!r} was used for container {container_id} with a "
        "different request; use a new key for a new request"
    )
    key: str
    container_id: str


@errorclass
class AlreadyExists(Conflict):
    """An object of that name exists."""

    status = 409
    template = "{kind} {name!r} already exists; pick another name"
    kind: str
    name: str


@errorclass
class StateConflict(Conflict):
    """The object is in a state that does not allow this."""

    status = 409
    template = "{what}"
    what: str


@errorclass
class SpecTooLarge(InvalidRequest):
    """A container's env or command (with args) is larger than the API allows."""

    status = 422
    template = (
        "{field}: {size} bytes in all, more than the limit of {limit}; pass large data through "
        "a file on NFS instead (the operator sets the limit with gpucaas up --max-{field}-bytes)"
    )
    field: str
    size: int
    limit: int


# -- executors -----------------------------------------------------------------------------


@errorclass
class ExecutorRefused(InvalidRequest):
    """This executor cannot run the request as given; the message says which field and why."""

    template = (
        "the {executor} executor cannot run container {container_id!r}: {field}={value!r}: {reason}"
    )
    executor: str
    container_id: str
    field: str
    value: object
    reason: str


@errorclass
class AlreadyRunning(Conflict):
    """A container was started in a directory whose shim is still running it."""

    template = (
        "container {container_id!r} is already running in {directory}: "
        "stop it first, or start the new one in another directory"
    )
    container_id: str
    directory: Path


@errorclass
class EngineNotFound(Unavailable):
    """The container engine's command is not on PATH."""

    template = (
        "{engine} not found on PATH; install it or start with --executor process "
        "(PATH was {path!r})"
    )
    engine: str
    path: str


@errorclass
class SandboxUnavailable(Unavailable):
    """The sandbox executor cannot run here: no ``bwrap``, or it cannot make a sandbox."""

    template = (
        "the sandbox executor cannot run: {detail}; install bubblewrap (Debian/Ubuntu: "
        "apt-get install bubblewrap) and make sure unprivileged user namespaces are allowed "
        "(sysctl kernel.unprivileged_userns_clone=1; on Ubuntu 24.04 also "
        "kernel.apparmor_restrict_unprivileged_userns=0), or start with --executor podman"
    )
    detail: str


@errorclass
class ShimStartFailed(Unavailable):
    """The shim did not come up; its own log says why."""

    template = "the shim of container {container_id!r} did not start: {detail}; see {log}"
    container_id: str
    directory: Path
    detail: str

    @property
    def log(self) -> Path:
        return self.directory / SUPERVISOR_LOG


@errorclass
class EngineCommandFailed(Unavailable):
    """A container engine command failed (other than for a container already gone)."""

    template = "{command} failed with code {returncode}: {output}; check the engine, then retry"
    argv: Sequence[str]
    returncode: int
    stderr: str

    def __post_init__(self) -> None:
        self.argv = tuple(self.argv)

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    @property
    def output(self) -> str:
        return self.stderr.strip() or "(no output)"


# -- `gpucaas up` --------------------------------------------------------------------------


@errorclass
class StateDirBusy(Conflict):
    """Another ``gpucaas up`` holds the state directory's lock."""

    template = (
        "another gpucaas up is running on {state_dir}; stop it, or give this one "
        "its own --state-dir"
    )
    state_dir: Path


# -- the store -----------------------------------------------------------------------------


@errorclass
class StoreUnavailable(Unavailable):
    """The database cannot be reached or opened."""

    template = "store {url} is unavailable: {reason}"
    url: str
    reason: str


@errorclass
class FollowersClosed(Unavailable):
    """The server is stopping: it ends open log streams and starts no new one."""

    status = 503
    template = "the server is stopping; reconnect to follow the log once it is back"


@errorclass
class StoreUnreachable(StoreUnavailable, Unreachable):
    """No connection could be made to the database server (refused, timed out, no route)."""


@errorclass
class BadStoreUrl(InvalidRequest):
    """A store URL of a kind the store cannot open."""

    template = (
        "store URL {url!r} is not supported; use sqlite:///PATH or "
        "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
    )
    url: str


@errorclass
class StoreConflict(Conflict):
    """A write broke a unique or foreign-key constraint: another request got there first."""

    template = "store {url}: the write conflicts with a stored row: {reason}; retry"
    url: str
    reason: str


@errorclass
class StoreQueryError(MisuseError):
    """The database refused a statement of the store (a bug, or a schema from another
    version of gpucaas)."""

    template = (
        "store {url} refused a statement: {reason}; check that every control plane on this "
        "database runs the same gpucaas version, else report a bug"
    )
    url: str
    reason: str


# -- Kubernetes ----------------------------------------------------------------------------


class KubernetesApiError(GpucaasError):
    """Base of the Kubernetes API's errors; ``what`` names the call that failed."""

    what: str


@errorclass
class KubernetesError(KubernetesApiError, Unavailable):
    """The Kubernetes API could not be reached, or failed (5xx)."""

    template = "Kubernetes API: {what} failed: {reason}; check the API server"
    what: str
    reason: str


@errorclass
class KubernetesUnreachable(KubernetesError, Unreachable):
    """The Kubernetes API cannot be reached (connection refused, timeout, DNS)."""


@errorclass
class KubernetesRefused(KubernetesApiError, InvalidRequest):
    """The Kubernetes API refused a request (4xx other than 404/409)."""

    template = "Kubernetes API refused {what} ({code}): {reason}"
    what: str
    code: int
    reason: str


@errorclass
class KubernetesConflict(KubernetesApiError, Conflict):
    """The Kubernetes API answered 409: the object exists or changed."""

    template = "Kubernetes API: {what} conflicts: {reason}"
    what: str
    reason: str
