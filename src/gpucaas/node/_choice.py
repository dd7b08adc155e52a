"""Which partition a set of kubelet devices is, and which one to offer.

The device plugin speaks in kubelet device IDs ("0".."7"); partitions are sets of module IDs.
:class:`PartitionChoice` translates between the two for one board and asks the board for the
choice: :meth:`PartitionChoice.preferred` is :meth:`BoardModel.best_partition`, the same
buddy best-fit that placement uses (with the kubelet's must-include devices as a mask), so
there is one ranking on both sides. Pure: no I/O, no locks; the DRA plugin reuses it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpucaas.errors import Conflict, InvalidRequest
from gpucaas.topology import (
    BoardModel,
    NotAPartition,
    Partition,
    SizeOutOfRange,
    format_module_ids,
    mask_of,
)

from ._gpus import KubeletGpu


class PartitionChoice:
    """Partitions of ``model`` in terms of this node's kubelet devices.

    Parameters:
        gpus: this node's GPUs (:func:`kubelet_gpus`), device IDs "0".."7" by module ID.
        model: the board model whose partition table the fabric serves.
        resource: the extended resource name, for messages.
    """

    def __init__(self, gpus: Sequence[KubeletGpu], model: BoardModel, resource: str) -> None:
        self.model = model
        self.resource = resource
        self._by_id = {g.device_id: g for g in gpus}
        self._by_module = {int(g.module_id): g for g in gpus}

    def preferred(
        self, available: Iterable[str], must_include: Iterable[str], size: int
    ) -> Partition:
        """The partition to offer: buddy best-fit among partitions of exactly ``size`` GPUs
        inside ``available`` that contain ``must_include``. Raises :class:`InvalidRequest`
        (unknown device, a size no partition has) and :class:`Conflict` (none free)."""
        offered = sorted(available, key=device_order)
        free = mask_of(self.modules(offered))
        must = mask_of(self.modules(must_include))
        try:
            fit = self.model.size_for(size)
        except SizeOutOfRange as exc:
            raise InvalidRequest(f"cannot allocate {size} GPUs: {exc}") from exc
        if fit != size:
            raise InvalidRequest(
                f"no partition of board model {self.model.name} has {size} GPUs (sizes: "
                f"{', '.join(map(str, self.model.sizes))}); request {fit} GPUs instead"
            )
        blocked = self.model.full_mask & ~free
        best = self.model.best_partition(size, blocked, must_include=must)
        if best is None:
            raise Conflict(
                f"no free {size}-GPU partition among the offered devices "
                f"{','.join(offered) or '(none)'} (modules "
                f"{format_module_ids(self.modules(offered)) or 'none'})"
                + (f" that includes devices {','.join(sorted(must_include))}" if must else "")
                + "; wait for a pod to end or schedule the pod to another node"
            )
        return best

    def partition_of(self, device_ids: Iterable[str]) -> Partition:
        """The partition that is exactly these devices. Raises :class:`InvalidRequest`
        naming the set and the valid partitions of that size."""
        ids = sorted(device_ids, key=device_order)
        modules = self.modules(ids)
        try:
            return self.model.partition_for(modules)
        except NotAPartition as exc:
            valid = [p for p in self.model.partitions if p.size == len(ids)]
            choices = "; ".join(
                f"devices {','.join(self.device_ids(p))} (partition {p.id}, modules "
                f"{format_module_ids(p.module_ids)})"
                for p in valid
            )
            raise InvalidRequest(
                f"devices {','.join(ids) or '(none)'} (modules "
                f"{format_module_ids(modules) or 'none'}) are not one partition of board model "
                f"{self.model.name}; "
                + (
                    f"valid {len(ids)}-GPU sets: {choices}"
                    if valid
                    else f"partition sizes are {', '.join(map(str, self.model.sizes))}"
                )
            ) from exc

    def modules(self, device_ids: Iterable[str]) -> list[int]:
        """The module IDs of these devices. Raises :class:`InvalidRequest` for an unknown
        device, naming this node's devices."""
        modules = []
        for device_id in device_ids:
            gpu = self._by_id.get(device_id)
            if gpu is None:
                raise InvalidRequest(
                    f"unknown device {device_id!r} for {self.resource}; this node's devices "
                    f"are {','.join(self._by_id)}"
                )
            modules.append(int(gpu.module_id))
        return modules

    def gpus(self, partition: Partition) -> list[KubeletGpu]:
        """The GPUs of ``partition``, in module-ID order."""
        return [self._by_module[int(m)] for m in partition.module_ids]

    def device_ids(self, partition: Partition) -> list[str]:
        """The kubelet device IDs of ``partition``, in module-ID order."""
        return [g.device_id for g in self.gpus(partition)]


def device_order(device_id: str) -> tuple[int, str]:
    """Sort key of kubelet device IDs: numbers by value ("2" before "10"), then the rest."""
    return (int(device_id), device_id) if device_id.isdigit() else (1 << 30, device_id)
