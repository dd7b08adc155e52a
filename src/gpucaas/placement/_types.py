"""Values that cross the placement boundary: requests, placements, statuses, board views."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpucaas.topology import GpuMask, ModuleId, PartitionId, module_ids_of

RequestId = str | int
"""Whatever the caller uses to name a request (container id, trace row)."""


@dataclass(frozen=True, slots=True)
class Request:
    """A tenant's ask: ``gpus`` whole GPUs on one board."""

    id: RequestId
    gpus: int
    tenant: str = ""
    node_selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Every key/value here must be among the node's labels."""
    exclusive: bool = False
    """No other tenant may share the board while this request runs on it."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request runs: a node and a GPU set that is (normally) one partition."""

    request_id: RequestId
    node: str | None
    """None only for the ``fluid`` bound, which has no boards."""
    gpus: int
    """GPUs granted: the partition size (3 → 4), or exactly the ask for ``count-only``."""
    mask: GpuMask
    partition_id: PartitionId | None
    """None when the GPU set is no partition: only ``count-only`` produces those."""
    tenant: str = ""
    exclusive: bool = False

    @property
    def module_ids(self) -> tuple[ModuleId, ...]:
        return module_ids_of(self.mask)

    @property
    def valid(self) -> bool:
        """Whether Fabric Manager would accept this GPU set (it is exactly one partition)."""
        return self.partition_id is not None or self.node is None


class Code(enum.Enum):
    """Outcome of a placement attempt, shaped like the kube-scheduler's status codes."""

    OK = "ok"
    """Placed."""
    NO_FIT = "no-fit"
    """No board can take it now; keep it queued, it may fit after a release."""
    NEVER_FITS = "never-fits"
    """No board in this fleet ever can (too large, selector matches nothing); reject now."""
    ERROR = "error"
    """Something broke; the reasons say what."""


@dataclass(frozen=True, slots=True)
class Status:
    code: Code
    reasons: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code is Code.OK

    def __str__(self) -> str:
        return f"{self.code.value}: {'; '.join(self.reasons)}" if self.reasons else self.code.value


@dataclass(frozen=True, slots=True)
class BoardState:
    """A read-only snapshot of one board in the fleet."""

    name: str
    index: int
    model: str
    labels: Mapping[str, str]
    used: GpuMask
    unhealthy: GpuMask
    cordoned_gpus: GpuMask
    reserved: GpuMask
    cordoned: bool
    placements: tuple[Placement, ...]

    @property
    def blocked(self) -> GpuMask:
        return self.used | self.unhealthy | self.cordoned_gpus | self.reserved
