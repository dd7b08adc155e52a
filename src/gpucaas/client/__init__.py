"""The client of the gpucaas HTTP API (what the tenant CLI uses), and the API's state names.

Kept apart from :mod:`gpucaas.control` so a client imports httpx alone, not the server.
"""

from gpucaas.errors import own_errors

from ._client import (
    CONFIG_ENV,
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    Client,
    ClientConfig,
)
from ._errors import (
    ApiConflict,
    ApiError,
    ApiInvalidRequest,
    ApiRefused,
    ApiUnavailable,
    ApiUnreachable,
    WaitTimeout,
)
from ._states import ACTIVE_STATES, FINAL_STATES, State

__all__ = [
    "ACTIVE_STATES",
    "CONFIG_ENV",
    "DEFAULT_URL",
    "FINAL_STATES",
    "TOKEN_ENV",
    "URL_ENV",
    "ApiConflict",
    "ApiError",
    "ApiInvalidRequest",
    "ApiRefused",
    "ApiUnavailable",
    "ApiUnreachable",
    "Client",
    "ClientConfig",
    "State",
    "WaitTimeout",
]

own_errors(globals())
