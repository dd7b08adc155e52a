"""Errors of the control plane, each with the HTTP status the API answers with.

::

    GpucaasError
    ├── InvalidRequest
    │   ├── NotFound              404: no such container/tenant/token (or not yours)
    │   ├── Unauthenticated       401: no token, a malformed or unknown or revoked one
    │   ├── Forbidden             403: the token may not do this (admin only, NFS export)
    │   ├── QuotaExceeded         429/403: the tenant's GPU or container quota
    │   └── ExecutorRefused       422: the backend's executor cannot run this request
    ├── Conflict
    │   ├── IdempotencyMismatch   409: an Idempotency-Key reused with another body
    │   └── AlreadyExists         409: a tenant of that name exists
    └── Unavailable
        └── EngineNotFound        503: podman/docker is not on PATH
"""

from __future__ import annotations

from gpucaas.errors import Conflict, InvalidRequest


class NotFound(InvalidRequest):
    """No such object, or one the caller may not see (answered alike: 404)."""

    status = 404

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(kind, name)
        self.kind = kind
        self.name = name

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} not found; list them to see what exists"


class Unauthenticated(InvalidRequest):
    """The request carries no usable token."""

    status = 401

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class Forbidden(InvalidRequest):
    """The token is valid but may not do this."""

    status = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class QuotaExceeded(InvalidRequest):
    """The tenant's quota does not allow this request now (429) or ever (403)."""

    def __init__(self, tenant: str, what: str, limit: int, used: int, asked: int) -> None:
        super().__init__(tenant, what, limit, used, asked)
        self.tenant = tenant
        self.what = what
        self.limit = limit
        self.used = used
        self.asked = asked

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


class IdempotencyMismatch(Conflict):
    """An Idempotency-Key was reused for a different request."""

    status = 409

    def __init__(self, key: str, container_id: str) -> None:
        super().__init__(key, container_id)
        self.key = key
        self.container_id = container_id

    def __str__(self) -> str:
        return (
            f"Idempotency-Key {self.key!r} was used for container {self.container_id} with a "
            "different request; use a new key for a new request"
        )


class AlreadyExists(Conflict):
    """An object of that name exists."""

    status = 409

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(kind, name)
        self.kind = kind
        self.name = name

    def __str__(self) -> str:
        return f"{self.kind} {self.name!r} already exists; pick another name"


class StateConflict(Conflict):
    """The object is in a state that does not allow this."""

    status = 409

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return self.what
