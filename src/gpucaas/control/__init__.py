"""The control plane: HTTP API, store, scheduler loop and backends (DESIGN.md)."""

from gpucaas.client import State

from ._api import Backend, BoardInfo, Phase, Workload, WorkloadStatus
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
from ._local import LocalBackend
from ._models import ContainerCreate, TenantCreate
from ._scheduler import Scheduler
from ._store import Principal, Store, StoreUnavailable, sqlite_url
from ._up import EXECUTORS, ControlPlane, Credentials, UpConfig, make_executor, serve

__all__ = [
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
    "LocalBackend",
    "NotFound",
    "Phase",
    "Principal",
    "ProcessExecutor",
    "QuotaExceeded",
    "Scheduler",
    "State",
    "StateConflict",
    "Store",
    "StoreUnavailable",
    "TenantCreate",
    "Unauthenticated",
    "UpConfig",
    "Workload",
    "WorkloadStatus",
    "create_app",
    "make_executor",
    "serve",
    "sqlite_url",
]
