"""Identifier types shared by every package: a GPU is a module ID inside a board."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NewType

ModuleId = NewType("ModuleId", int)
"""GPU module ID on the baseboard (1-based, from strapping; ``nvidia-smi -q`` "Module ID")."""

PartitionId = NewType("PartitionId", int)
"""Fabric Manager partition id, as in the board model's table."""

GpuMask = int
"""Bit ``m - 1`` set for module ID ``m``. Plain ``int`` so the tables stay fast."""


def mask_of(module_ids: Iterable[int]) -> GpuMask:
    """The bitmask of a set of module IDs (module 1 is bit 0)."""
    mask = 0
    for module_id in module_ids:
        mask |= 1 << (module_id - 1)
    return mask


def module_ids_of(mask: GpuMask) -> tuple[ModuleId, ...]:
    """The module IDs in a bitmask, ascending."""
    ids: list[ModuleId] = []
    bit = 1
    while mask:
        if mask & 1:
            ids.append(ModuleId(bit))
        mask >>= 1
        bit += 1
    return tuple(ids)


def format_module_ids(module_ids: Iterable[int]) -> str:
    """``1,3`` or ``1-4``: how operators and fmctl write GPU sets."""
    ids = sorted(module_ids)
    if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1)):
        return f"{ids[0]}-{ids[-1]}"
    return ",".join(str(i) for i in ids)
