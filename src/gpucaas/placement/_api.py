"""The seam between placement and its callers: anything that can place and release."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from ._types import Placement, Request, RequestId, Status


class Allocator(Protocol):
    """A fleet that places requests (:class:`Fleet`, or the :class:`FluidPool` bound)."""

    @property
    def capacity(self) -> int: ...

    @property
    def free_gpus(self) -> int: ...

    @property
    def allocated_gpus(self) -> int: ...

    @property
    def monotone(self) -> bool:
        """If an ask of N GPUs fits nowhere now, no larger ask does either."""
        ...

    def place(self, request: Request) -> Placement | Status:
        """Place now (recorded) or say why not: ``NO_FIT`` (wait) or ``NEVER_FITS`` (reject)."""
        ...

    def release(self, placement: Placement) -> bool:
        """Free a placement's GPUs. Idempotent."""
        ...

    def reserve(self, request: Request) -> Placement | Status:
        """Hold GPUs for a starving request; its next :meth:`place` uses them once free."""
        ...

    def cancel_reservation(self, request_id: RequestId) -> bool:
        """Drop a hold. Idempotent."""
        ...

    def placements(self) -> Iterator[Placement]: ...
