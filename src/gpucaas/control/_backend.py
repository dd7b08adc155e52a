"""The seam between the scheduler loop and what runs containers: :class:`Backend`.

Implementations: :class:`LocalBackend` (the embedded default: simulated HGX boards with their
fabric, containers run by podman/docker or as host processes) and, in production, the
Kubernetes backend (pods bound to nodes).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpucaas._wire import NfsMount


@dataclass(frozen=True, slots=True)
class BoardInfo:
    """One board the backend offers: name, model, labels, GPUs it reports unhealthy."""

    name: str
    model: str
    labels: Mapping[str, str] = field(default_factory=dict)
    unhealthy: tuple[int, ...] = ()
    cordoned: bool = False
    """Closed to new work by the backend itself (a node unschedulable or not Ready)."""
    ready: bool = True
    """False while the backend cannot reach the board (a node NotReady)."""


@dataclass(frozen=True, slots=True)
class TenantSpec:
    """What a backend sets up for a tenant (namespace, policies, quota)."""

    name: str
    max_gpus: int
    max_containers: int
    nfs_exports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Workload:
    """What the backend runs for one container, and where."""

    container_id: str
    tenant: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: Mapping[str, str]
    nfs: tuple[NfsMount, ...]
    labels: Mapping[str, str]
    max_runtime_s: int | None
    gpus: int
    board: str | None = None
    partition_id: int | None = None
    module_ids: tuple[int, ...] = ()


class Phase(enum.Enum):
    """Where a workload is, as its backend sees it."""

    ABSENT = "absent"
    """The backend never heard of it (not started yet)."""
    STARTING = "starting"
    """Created, not running yet."""
    RUNNING = "running"
    EXITED = "exited"
    """Ended; ``exit_code`` and ``reason`` say how."""
    LOST = "lost"
    """It existed and is gone without an exit status."""


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    phase: Phase
    exit_code: int | None = None
    reason: str = ""
    """For EXITED: exited, stopped, deadline or spawn-failed; for LOST: what was seen."""
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None


class Backend(Protocol):
    """Runs workloads on boards. Every method is idempotent; the scheduler loop calls
    them from one thread, ``check``/``logs`` from API threads and ``follow_logs`` on the
    API's event loop."""

    name: str

    def boards(self) -> Sequence[BoardInfo]:
        """The boards this backend offers now."""
        ...

    def check(self, workload: Workload) -> None:
        """Refuse (an ``InvalidRequest``) what this backend can never run, at submit time."""
        ...

    def start(self, workload: Workload) -> None:
        """Create the workload on its board and partition (no-op if it exists)."""
        ...

    def status(self, workload: Workload) -> WorkloadStatus: ...

    def stop(self, workload: Workload, grace_s: float) -> None:
        """Ask it to end: SIGTERM, then SIGKILL after ``grace_s``. No-op once ended. Returns
        at once (the grace period runs elsewhere)."""
        ...

    def release(self, workload: Workload) -> None:
        """After it ended: give back its partition and resources. No-op when done."""
        ...

    def sync(self, workloads: Sequence[Workload]) -> None:
        """At start: release whatever the backend holds that is not in ``workloads``."""
        ...

    def logs(self, workload: Workload, *, follow: bool) -> Iterator[bytes]:
        """The workload's output; with ``follow``, until it ends."""
        ...

    def follow_logs(self, workload: Workload) -> AsyncGenerator[bytes, None]:
        """The workload's output until it ends, for the API's event loop: it must wait
        without blocking the loop or holding a thread (a quiet workload may be followed
        for days), and stop when closed (``aclose``) or cancelled."""
        ...

    def ensure_tenant(self, tenant: TenantSpec) -> None:
        """Set up (or update) what the tenant's workloads need. Idempotent."""
        ...

    def remove_tenant(self, tenant: str) -> None:
        """Remove what :meth:`ensure_tenant` made. Idempotent."""
        ...
