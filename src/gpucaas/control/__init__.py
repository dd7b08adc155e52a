"""The control plane: HTTP API, store, scheduler loop and backends (DESIGN.md)."""

from gpucaas._wire import ContainerCreate, State, TenantCreate
from gpucaas.errors import own_errors

from ._app import create_app
from ._backend import Backend, BoardInfo, Phase, TenantSpec, Workload, WorkloadStatus
from ._errors import (
    AlreadyExists,
    AlreadyRunning,
    BadStoreUrl,
    EngineCommandFailed,
    EngineNotFound,
    ExecutorRefused,
    FollowersClosed,
    Forbidden,
    IdempotencyMismatch,
    KubernetesApiError,
    KubernetesConflict,
    KubernetesError,
    KubernetesRefused,
    KubernetesUnreachable,
    NotFound,
    QuotaExceeded,
    SandboxUnavailable,
    ShimStartFailed,
    StateConflict,
    StateDirBusy,
    StoreConflict,
    StoreQueryError,
    StoreUnavailable,
    StoreUnreachable,
    TooManyFollowers,
    Unauthenticated,
)
from ._executor import EngineExecutor, Executor, ProcessExecutor, SandboxExecutor
from ._follow import Followers
from ._kubernetes import KubernetesBackend, PodDefaults
from ._local import LocalBackend
from ._plane import (
    BACKENDS,
    EXECUTORS,
    ControlPlane,
    ControlPlaneConfig,
    Credentials,
    make_executor,
    parse_toleration,
    serve,
)
from ._scheduler import Scheduler
from ._store import Principal, Store, sqlite_url

__all__ = [
    "BACKENDS",
    "EXECUTORS",
    "AlreadyExists",
    "AlreadyRunning",
    "Backend",
    "BadStoreUrl",
    "BoardInfo",
    "ContainerCreate",
    "ControlPlane",
    "ControlPlaneConfig",
    "Credentials",
    "EngineCommandFailed",
    "EngineExecutor",
    "EngineNotFound",
    "Executor",
    "ExecutorRefused",
    "Followers",
    "FollowersClosed",
    "Forbidden",
    "IdempotencyMismatch",
    "KubernetesApiError",
    "KubernetesBackend",
    "KubernetesConflict",
    "KubernetesError",
    "KubernetesRefused",
    "KubernetesUnreachable",
    "LocalBackend",
    "NotFound",
    "Phase",
    "PodDefaults",
    "Principal",
    "ProcessExecutor",
    "QuotaExceeded",
    "SandboxExecutor",
    "SandboxUnavailable",
    "Scheduler",
    "ShimStartFailed",
    "State",
    "StateConflict",
    "StateDirBusy",
    "Store",
    "StoreConflict",
    "StoreQueryError",
    "StoreUnavailable",
    "StoreUnreachable",
    "TenantCreate",
    "TenantSpec",
    "TooManyFollowers",
    "Unauthenticated",
    "Workload",
    "WorkloadStatus",
    "create_app",
    "make_executor",
    "parse_toleration",
    "serve",
    "sqlite_url",
]

own_errors(globals())
