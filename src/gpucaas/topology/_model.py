"""Board models: a partition table plus the precomputed bitmask tables placement runs on.

A :class:`BoardModel` is immutable. At construction it computes, for every one of the
``2**gpu_count`` masks of blocked GPUs (used, unhealthy or cordoned), which partitions are
still free and, for each partition size, which free partition to take so that the fewest
larger free partitions are destroyed. Every placement decision is then a few list lookups,
whatever the board's history. The module does no I/O; :mod:`._loader` reads model files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ._errors import NotAPartition, SizeOutOfRange, UnknownPartition
from ._types import GpuMask, ModuleId, PartitionId, format_module_ids, mask_of

NO_PARTITION = -1
"""Sentinel in the per-mask tables: no free partition of that size."""

MAX_GPUS = 16
"""Fabric Manager's partition struct holds at most 16 GPUs (FM_MAX_NUM_GPUS)."""

MAX_PARTITIONS = 64
"""Fabric Manager's partition list holds at most 64 partitions (FM_MAX_FABRIC_PARTITIONS)."""

_DAMAGE_BASE = MAX_PARTITIONS + 1


@dataclass(frozen=True, slots=True)
class Partition:
    """One row of a Fabric Manager partition table."""

    id: PartitionId
    module_ids: tuple[ModuleId, ...]
    nvlinks: int
    """Sum of NVLinks available to the partition's GPUs (FM's NVLINKS column)."""
    mask: GpuMask

    @property
    def size(self) -> int:
        return len(self.module_ids)

    def __str__(self) -> str:
        return f"partition {self.id} (GPUs {format_module_ids(self.module_ids)})"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """A GPU that ships on the board, by PCI device id (vendor 0x10de)."""

    name: str
    device_id: int
    bar2_gib: int | None = None
    """This GPU's BAR2 (the VRAM aperture VFIO maps) when it differs from the board's
    :class:`Bars` (an H200 on the H100 board: 256 GiB, not 128)."""


@dataclass(frozen=True, slots=True)
class NvSwitch:
    name: str
    device_id: int
    count: int


@dataclass(frozen=True, slots=True)
class Bars:
    """BAR sizes of one GPU as a guest sees them."""

    bar0_mib: int
    bar2_gib: int
    bar4_mib: int


@dataclass(frozen=True, eq=False)
class BoardModel:
    """A board model and its lookup tables. Build it with :func:`build_model`."""

    name: str
    aliases: tuple[str, ...]
    description: str
    gpu_count: int
    partitions: tuple[Partition, ...]
    """Sorted by partition id; a partition's position here is its *index* in the tables."""
    gpu_devices: tuple[GpuDevice, ...] = ()
    nvswitch: NvSwitch | None = None
    bars: Bars | None = None

    full_mask: GpuMask = field(init=False)
    sizes: tuple[int, ...] = field(init=False)
    """Distinct partition sizes, ascending."""
    _by_id: dict[int, int] = field(init=False, repr=False)
    _by_mask: dict[GpuMask, int] = field(init=False, repr=False)
    _conflicts: tuple[int, ...] = field(init=False, repr=False)
    _free: list[int] = field(init=False, repr=False)
    _best: dict[int, list[int]] = field(init=False, repr=False)
    _damage: dict[int, list[int]] = field(init=False, repr=False)
    _size_for: tuple[int, ...] = field(init=False, repr=False)
    nested: bool = field(init=False)
    """Every partition contains a partition of each smaller size (buddy tables do): then if
    no partition of size s is free, none larger is either."""

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        parts = self.partitions
        masks = [p.mask for p in parts]
        full = (1 << self.gpu_count) - 1
        sizes = tuple(sorted({p.size for p in parts}))
        setattr_(self, "full_mask", full)
        setattr_(self, "sizes", sizes)
        setattr_(self, "_by_id", {int(p.id): i for i, p in enumerate(parts)})
        setattr_(self, "_by_mask", {p.mask: i for i, p in enumerate(parts)})
        conflicts = []
        for m in masks:
            bits = 0
            for j, other in enumerate(masks):
                if m & other:
                    bits |= 1 << j
            conflicts.append(bits)
        setattr_(self, "_conflicts", tuple(conflicts))
        # free[blocked] = bitset of partition indices whose GPUs are all unblocked.
        free = [0] * (full + 1)
        for blocked in range(full + 1):
            bits = 0
            for i, m in enumerate(masks):
                if not m & blocked:
                    bits |= 1 << i
            free[blocked] = bits
        setattr_(self, "_free", free)
        # size_for[n] = smallest partition size >= n (0 where none).
        size_for = [0] * (self.gpu_count + 1)
        for n in range(1, self.gpu_count + 1):
            size_for[n] = next((s for s in sizes if s >= n), 0)
        setattr_(self, "_size_for", tuple(size_for))
        nested = all(
            any(q.size == small and q.mask & ~p.mask == 0 for q in parts)
            for p in parts
            for small in sizes
            if small < p.size
        )
        setattr_(self, "nested", nested)
        best: dict[int, list[int]] = {}
        damage: dict[int, list[int]] = {}
        for size in sizes:
            of_size = [i for i, p in enumerate(parts) if p.size == size]
            best_row = [NO_PARTITION] * (full + 1)
            damage_row = [0] * (full + 1)
            for blocked in range(full + 1):
                before = free[blocked]
                choice, choice_damage = NO_PARTITION, 0
                for i in of_size:
                    if not before >> i & 1:
                        continue
                    d = self._cost(i, blocked)
                    if choice == NO_PARTITION or d < choice_damage:
                        choice, choice_damage = i, d
                best_row[blocked] = choice
                damage_row[blocked] = choice_damage
            best[size] = best_row
            damage[size] = damage_row
        setattr_(self, "_best", best)
        setattr_(self, "_damage", damage)

    # -- lookups -----------------------------------------------------------------------

    def partition(self, partition_id: int) -> Partition:
        """The partition with this id. Raises :class:`UnknownPartition`."""
        try:
            return self.partitions[self._by_id[partition_id]]
        except KeyError:
            raise UnknownPartition(self.name, partition_id) from None

    def partition_for(self, module_ids: Iterable[int]) -> Partition:
        """The partition whose GPU set is exactly ``module_ids``. Raises :class:`NotAPartition`."""
        ids = tuple(sorted(module_ids))
        if not all(1 <= m <= self.gpu_count for m in ids):
            raise NotAPartition(self.name, ids)
        index = self._by_mask.get(mask_of(ids))
        if index is None or len(set(ids)) != len(ids):
            raise NotAPartition(self.name, ids)
        return self.partitions[index]

    def partition_for_mask(self, mask: GpuMask) -> Partition | None:
        """The partition whose GPU mask is exactly ``mask``, or None."""
        index = self._by_mask.get(mask)
        return None if index is None else self.partitions[index]

    def conflicts(self, partition_id: int) -> tuple[Partition, ...]:
        """Partitions that share a GPU with this one (itself excluded)."""
        index = self._by_id.get(partition_id)
        if index is None:
            raise UnknownPartition(self.name, partition_id)
        bits = self._conflicts[index] & ~(1 << index)
        return self._from_bits(bits)

    def overlaps(self, a: int, b: int) -> bool:
        """Whether partitions ``a`` and ``b`` share a GPU (a partition overlaps itself)."""
        ia, ib = self.partition(a), self.partition(b)
        return bool(ia.mask & ib.mask)

    def size_for(self, gpus: int) -> int:
        """Smallest partition size that holds ``gpus`` GPUs (3 → 4, 5–7 → 8).

        Raises :class:`SizeOutOfRange` when no partition is large enough or ``gpus < 1``.
        """
        if 1 <= gpus <= self.gpu_count and self._size_for[gpus]:
            return self._size_for[gpus]
        raise SizeOutOfRange(self.name, gpus, self.sizes)

    def available(
        self,
        used: GpuMask = 0,
        *,
        active: Sequence[int] = (),
        unhealthy: GpuMask = 0,
    ) -> tuple[Partition, ...]:
        """Partitions that could be activated now.

        A partition is available when none of its GPUs is used or unhealthy and it does
        not overlap an active partition (Fabric Manager answers IN_USE to those).
        """
        blocked = (used | unhealthy) & self.full_mask
        for partition_id in active:
            blocked |= self.partition(partition_id).mask
        return self._from_bits(self._free[blocked])

    def free_bits(self, blocked: GpuMask) -> int:
        """Bitset over partition indices of the partitions free given ``blocked`` GPUs."""
        return self._free[blocked]

    def best_partition(
        self, size: int, blocked: GpuMask, *, must_include: GpuMask = 0
    ) -> Partition | None:
        """The free partition of exactly ``size`` GPUs that destroys the fewest larger ones.

        Buddy best-fit: it fills a half-used block before it breaks a whole one. Larger
        partitions weigh more than any number of smaller ones; ties go to the lowest id.
        With ``must_include``, only partitions holding all those GPUs count (the kubelet's
        must-include devices); the ranking is the same. This is the one board-level choice:
        placement and the node agent both call it.
        """
        row = self._best.get(size)
        if row is None:
            return None
        index = row[blocked]
        if index == NO_PARTITION:
            return None
        if must_include & ~self.partitions[index].mask == 0:
            return self.partitions[index]
        free = self._free[blocked]
        candidates = [
            i
            for i, p in enumerate(self.partitions)
            if p.size == size and free >> i & 1 and must_include & ~p.mask == 0
        ]
        if not candidates:
            return None
        return self.partitions[min(candidates, key=lambda i: (self._cost(i, blocked), i))]

    def _cost(self, index: int, blocked: GpuMask) -> int:
        """What taking partition ``index`` destroys: free partitions at least its size
        (itself excluded), one of a larger size outweighing all smaller ones."""
        size = self.partitions[index].size
        lost = self._free[blocked] & ~self._free[blocked | self.partitions[index].mask]
        lost &= ~(1 << index)
        d = 0
        j = 0
        while lost:
            if lost & 1 and self.partitions[j].size >= size:
                d += _DAMAGE_BASE ** self.sizes.index(self.partitions[j].size)
            lost >>= 1
            j += 1
        return d

    def damage(self, size: int, blocked: GpuMask) -> int:
        """How much taking :meth:`best_partition` costs: free partitions of size ≥ ``size``
        it destroys, weighted so that one larger partition outweighs all smaller ones."""
        return self._damage[size][blocked]

    def best_table(self, size: int) -> list[int]:
        """The raw per-mask table behind :meth:`best_partition` (indices or ``NO_PARTITION``).

        Exposed for the placement index, which reads it in its inner loop.
        """
        return self._best[size]

    def damage_table(self, size: int) -> list[int]:
        """The raw per-mask table behind :meth:`damage`."""
        return self._damage[size]

    def _from_bits(self, bits: int) -> tuple[Partition, ...]:
        out = []
        i = 0
        while bits:
            if bits & 1:
                out.append(self.partitions[i])
            bits >>= 1
            i += 1
        return tuple(out)

    def __repr__(self) -> str:
        return f"BoardModel({self.name!r}, {len(self.partitions)} partitions)"
