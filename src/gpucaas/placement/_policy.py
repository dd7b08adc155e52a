"""Placement policies: how a request picks its board, each selectable by name.

The board-level choice is the same for every partition-aware policy (one brain): the free
partition of the right size that destroys the fewest larger free partitions
(:meth:`BoardModel.best_partition`). Policies differ in which *board* they pick, expressed
as a score — higher is better, ties go to the lowest node index, ``None`` means the board
cannot take the request. A score may depend only on the board's model, the GPU count asked
and the board's blocked-GPU mask: that is what lets :class:`Fleet` precompute it per mask
and keep each decision near constant time as the fleet grows. (Scores are ordering keys,
not bounded to the kube-scheduler's 0–100: rounding to 101 steps would merge board shapes.)

``fluid`` is not a board policy: it is the no-boards lower bound, see :class:`FluidPool`.
"""

from __future__ import annotations

from typing import Protocol

from gpucaas.topology import NO_PARTITION, BoardModel, GpuMask, PartitionId

from ._errors import UnknownPolicy


class Policy(Protocol):
    """A fleet-level node choice."""

    name: str
    partition_aware: bool
    """False only for ``count-only``, which hands out any N free GPUs."""
    randomized: bool
    """True when ties are broken by the fleet's seeded RNG instead of the node index."""

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        """How much this policy likes a board in this state for ``gpus`` GPUs; None = no fit."""
        ...

    def choose(
        self, model: BoardModel, gpus: int, blocked: GpuMask
    ) -> tuple[GpuMask, PartitionId | None] | None:
        """The GPUs to take on a board the score accepted, and their partition id."""
        ...


def _popcount(mask: int) -> int:
    return mask.bit_count()


class _PartitionAware:
    """Board-level buddy best-fit shared by every partition-aware policy."""

    name = ""
    partition_aware = True
    randomized = False

    def choose(
        self, model: BoardModel, gpus: int, blocked: GpuMask
    ) -> tuple[GpuMask, PartitionId | None] | None:
        partition = model.best_partition(model.size_for(gpus), blocked)
        if partition is None:
            return None
        return partition.mask, partition.id

    def _fits(self, model: BoardModel, gpus: int, blocked: GpuMask) -> bool:
        return model.best_table(model.size_for(gpus))[blocked] != NO_PARTITION


class BestFit(_PartitionAware):
    """Ours: the board where the request does the least damage to larger free partitions.

    Among equal damage it prefers the board left with the fewest free GPUs, i.e. an
    already-used board over an empty one.
    """

    name = "best-fit"

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        size = model.size_for(gpus)
        if model.best_table(size)[blocked] == NO_PARTITION:
            return None
        free_after = _popcount(model.full_mask & ~blocked) - size
        return -(model.damage(size, blocked) * (model.gpu_count + 1) + free_after)


class FirstFit(_PartitionAware):
    """Partition-aware, lowest node index that has a free partition of the size."""

    name = "first-fit"

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        return 0 if self._fits(model, gpus, blocked) else None


class Spread(_PartitionAware):
    """Emptiest board first (most free GPUs), partition-aware."""

    name = "spread"

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        if not self._fits(model, gpus, blocked):
            return None
        return _popcount(model.full_mask & ~blocked)


class Random(_PartitionAware):
    """Any board with a free partition of the size, uniformly, from the fleet's seeded RNG."""

    name = "random"
    randomized = True

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        return 0 if self._fits(model, gpus, blocked) else None


class CountOnly:
    """What the Kubernetes default scheduler does with a countable GPU resource.

    Any node with at least N free GPUs (lowest node index), and there the lowest-numbered
    free GPUs, exactly N of them. The set is often no partition (Fabric Manager would refuse
    it); such placements come back with ``partition_id=None`` and are counted, never hidden.
    """

    name = "count-only"
    partition_aware = False
    randomized = False

    def score(self, model: BoardModel, gpus: int, blocked: GpuMask) -> int | None:
        if gpus < 1:  # zero GPUs is no container; the fleet answers NEVER_FITS
            return None
        return 0 if _popcount(model.full_mask & ~blocked) >= gpus else None

    def choose(
        self, model: BoardModel, gpus: int, blocked: GpuMask
    ) -> tuple[GpuMask, PartitionId | None] | None:
        free = model.full_mask & ~blocked
        if gpus < 1 or _popcount(free) < gpus:
            return None
        mask = 0
        while _popcount(mask) < gpus:
            low = free & -free
            mask |= low
            free &= ~low
        partition = model.partition_for_mask(mask)
        return mask, None if partition is None else partition.id


POLICIES: dict[str, Policy] = {
    p.name: p for p in (BestFit(), FirstFit(), Spread(), Random(), CountOnly())
}
"""Board policies by name."""

FLUID = "fluid"
"""Name of the no-boards lower bound (:class:`FluidPool`)."""

POLICY_NAMES: tuple[str, ...] = (*POLICIES, FLUID)
"""Every name ``--policy`` accepts, board policies first."""


def get_policy(name: str) -> Policy:
    """The board policy with this name. Raises :class:`UnknownPolicy` (also for ``fluid``,
    which is an allocator of its own, not a board policy)."""
    try:
        return POLICIES[name]
    except KeyError:
        raise UnknownPolicy(name, POLICY_NAMES) from None
