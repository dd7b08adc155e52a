"""The control plane: HTTP API, store, scheduler loop and backends (DESIGN.md)."""

from gpucaas.client import State

from ._api import Backend, BoardInfo, Phase, TenantSpec, Workload, WorkloadStatus
from ._app import create_app
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
from ._models import ContainerCreate, TenantCreate
from ._scheduler import Scheduler
from ._store import Principal, Store, StoreUnavailable, sqlite_url
from ._up import (
    BACKENDS,
    EXECUTORS,
    ControlPlane,
    Credentials,
    UpConfig,
    make_executor,
    parse_toleration,
    serve,
)

__all__ = [
    "BACKENDS",
    "EXECUTORS",
    "AlreadyExists",
    "Backend",
    "BoardInfo",
    "ContainerCreate",
    "ControlPlane",
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
    "UpConfig",
    "Workload",
    "WorkloadStatus",
    "create_app",
    "make_executor",
    "parse_toleration",
    "serve",
    "sqlite_url",
]
