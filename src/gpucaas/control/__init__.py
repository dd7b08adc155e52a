"""The control plane: HTTP API, store, scheduler loop and backends (DESIGN.md)."""

from gpucaas._wire import ContainerCreate, State, TenantCreate

from ._app import create_app
from ._backend import Backend, BoardInfo, Phase, TenantSpec, Workload, WorkloadStatus
from ._errors import (
    AlreadyExists,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    QuotaExceeded,
    StateConflict,
    Unauthenticated,
)
from ._executor import (
    EngineExecutor,
    EngineNotFound,
    Executor,
    ExecutorRefused,
    ProcessExecutor,
)
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
from ._store import Principal, Store, StoreUnavailable, sqlite_url

__all__ = [
    "BACKENDS",
    "EXECUTORS",
    "AlreadyExists",
    "Backend",
    "BoardInfo",
    "ContainerCreate",
    "ControlPlane",
    "ControlPlaneConfig",
    "Credentials",
    "EngineExecutor",
    "EngineNotFound",
    "Executor",
    "ExecutorRefused",
    "Forbidden",
    "IdempotencyMismatch",
    "KubernetesBackend",
    "LocalBackend",
    "NotFound",
    "Phase",
    "PodDefaults",
    "Principal",
    "ProcessExecutor",
    "QuotaExceeded",
    "Scheduler",
    "State",
    "StateConflict",
    "Store",
    "StoreUnavailable",
    "TenantCreate",
    "TenantSpec",
    "Unauthenticated",
    "Workload",
    "WorkloadStatus",
    "create_app",
    "make_executor",
    "parse_toleration",
    "serve",
    "sqlite_url",
]
