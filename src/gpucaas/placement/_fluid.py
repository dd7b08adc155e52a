"""The ``fluid`` lower bound: one pool of GPUs with no boards and no partitions.

A request fits whenever the fleet has as many free GPUs as its partition size, wherever
they are. No real fleet does better, so the gap between a policy and ``fluid`` is what
board boundaries and the partition table cost. For comparison only: its placements have no
node. It asks for the same partition size as the board policies (3 → 4), so the bound
isolates packing from rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

from gpucaas.errors import MisuseError
from gpucaas.topology import BoardModel, SizeOutOfRange

from ._policy import FLUID
from ._types import Code, Placement, Request, RequestId, Status


class FluidPool:
    """``capacity`` GPUs in one pool; sizes rounded as on ``model``."""

    name = FLUID

    def __init__(self, model: BoardModel, capacity: int) -> None:
        self._model = model
        self._capacity = capacity
        self._free = capacity
        self._placed: dict[RequestId, Placement] = {}

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def free_gpus(self) -> int:
        return self._free

    @property
    def monotone(self) -> bool:
        return True

    @property
    def allocated_gpus(self) -> int:
        return self._capacity - self._free

    def place(self, request: Request) -> Placement | Status:
        """Take ``size_for(gpus)`` GPUs from the pool, or say why not."""
        if request.id in self._placed:
            raise MisuseError(f"request {request.id!r} is already placed; release it first")
        try:
            size = self._model.size_for(request.gpus)
        except SizeOutOfRange as exc:
            return Status(Code.NEVER_FITS, (str(exc),))
        if size > self._free:
            return Status(Code.NO_FIT, (f"{self._free} GPUs free, {size} asked",))
        self._free -= size
        placement = Placement(request.id, None, size, 0, None, request.tenant, request.exclusive)
        self._placed[request.id] = placement
        return placement

    def release(self, placement: Placement) -> bool:
        """Give the GPUs back. Idempotent: False when it was not placed."""
        if self._placed.pop(placement.request_id, None) is None:
            return False
        self._free += placement.gpus
        return True

    def reserve(self, request: Request) -> Placement | Status:
        """Nothing to hold: in one pool a request waits only for GPUs, never for shape."""
        return Status(Code.NO_FIT, ("the fluid pool has no boards to reserve",))

    def cancel_reservation(self, request_id: RequestId) -> bool:
        return False

    def placements(self) -> Iterator[Placement]:
        yield from self._placed.values()
