"""Errors of the API client: every failure of a call is one of these, never an httpx error.

HTTP errors keep the server's status, type and message; an unreachable server becomes
:class:`ApiUnreachable` naming the URL::

    GpucaasError
    ├── ApiError                  base of the Api* errors: ``status`` (0: no answer),
    │                             ``type`` (the server's error class), ``message``, ``details``
    ├── InvalidRequest
    │   └── ApiInvalidRequest     4xx except 409 (also ApiError)
    │       └── ApiRefused        429, and 403 for a quota (also Refused: exit 1)
    ├── Refused
    │   └── Conflict
    │       └── ApiConflict       409 (also ApiError)
    └── Unavailable
        ├── ApiUnavailable        503, other 5xx, a reply that is not JSON (also ApiError)
        │   └── ApiUnreachable    no connection, timeout, dropped connection (also
        │                         Unreachable: exit 3)
        └── WaitTimeout           wait() ran out of time
"""

from __future__ import annotations

from typing import Any

from gpucaas.errors import (
    Conflict,
    GpucaasError,
    InvalidRequest,
    Refused,
    Unavailable,
    Unreachable,
    errorclass,
)


@errorclass
class ApiError(GpucaasError):
    """The API answered with an error (or could not be reached: ``status`` 0)."""

    template = "{message}"
    status: int
    type: str
    message: str
    details: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.details = self.details or []


class ApiInvalidRequest(ApiError, InvalidRequest):
    """4xx other than 409: fix the request (or the token)."""


class ApiRefused(ApiInvalidRequest, Refused):
    """429, or 403 for a quota: the tenant's quota refuses it now or until it is raised."""


class ApiConflict(ApiError, Conflict):
    """409: the state changed, or the name exists."""


class ApiUnavailable(ApiError, Unavailable):
    """503, another 5xx, or no connection: retry later, or start/fix the server."""


class ApiUnreachable(ApiUnavailable, Unreachable):
    """No answer at all (status 0): the server is not running, or the URL is wrong."""


@errorclass
class WaitTimeout(Unavailable):
    """The container did not reach the awaited states in time."""

    template = (
        "container {container_id} is still {state} after {timeout:g}s; wait longer or stop it"
    )
    container_id: str
    state: str
    timeout: float


_QUOTA_TYPE = "QuotaExceeded"
"""The ``type`` of the control plane's quota refusals (the server's class name)."""


def error_for(status: int, kind: str, message: str, details: Any = None) -> ApiError:
    """The ApiError subclass for an HTTP status (and, for 403, the server's error type)."""
    cls: type[ApiError]
    if status == 409:
        cls = ApiConflict
    elif status == 429 or (status == 403 and kind == _QUOTA_TYPE):
        cls = ApiRefused
    elif 400 <= status < 500:
        cls = ApiInvalidRequest
    else:
        cls = ApiUnavailable
    return cls(status, kind, message, details if isinstance(details, list) else None)
