"""The client of the gpucaas HTTP API (what the tenant CLI uses), the API's state names and
the typed replies its calls return.

Kept apart from :mod:`gpucaas.control`: a client imports httpx and the shared wire models
(:mod:`gpucaas._wire`, pydantic), never the server.
"""

from gpucaas._wire import (
    ACTIVE_STATES,
    FINAL_STATES,
    BoardPartition,
    BoardView,
    Container,
    ContainerCreate,
    ContainerPage,
    DrainResult,
    Event,
    FleetView,
    GpuView,
    NewToken,
    NfsMount,
    PartitionView,
    State,
    Tenant,
    TenantCreated,
    Token,
)
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
    "BoardPartition",
    "BoardView",
    "Client",
    "ClientConfig",
    "Container",
    "ContainerCreate",
    "ContainerPage",
    "DrainResult",
    "Event",
    "FleetView",
    "GpuView",
    "NewToken",
    "NfsMount",
    "PartitionView",
    "State",
    "Tenant",
    "TenantCreated",
    "Token",
    "WaitTimeout",
]

own_errors(globals())
