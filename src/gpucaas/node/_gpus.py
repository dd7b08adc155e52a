"""This node's GPUs as the kubelet sees them: discovery joined with the module-ID map.

The device plugin and the CDI spec must agree on one thing: the device ID the kubelet is
given for a GPU is the CDI device name for it. Both come from :func:`kubelet_gpus`, which
numbers GPUs "0".."7" in module-ID order (as the seed did), never in PCI order.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucaas.cdi import CdiSpec, build_gpu_spec
from gpucaas.topology import ModuleId

from . import modulemap
from .discovery import BDF, Discovery
from .modulemap import ModuleMap, ModuleMapError


@dataclass(frozen=True, slots=True)
class KubeletGpu:
    """One GPU as announced to the kubelet."""

    device_id: str
    """The kubelet device ID and the CDI device name ("0".."7" in module-ID order)."""
    module_id: ModuleId
    bdf: BDF
    uuid: str
    iommu_group: int | None
    vfio_cdev: str | None
    numa_node: int | None


def kubelet_gpus(discovery: Discovery, module_map: ModuleMap) -> tuple[KubeletGpu, ...]:
    """Join the map with discovery. Raises :class:`ModuleMapError` listing every mismatch
    (a GPU missing, an extra one, a BDF that moved) and how to recapture the map."""
    problems = modulemap.validate(module_map, [g.bdf for g in discovery.gpus])
    if problems:
        raise ModuleMapError(
            "the module-ID map does not match this node's GPUs",
            "; ".join(problems),
            "recapture it with `gpucaas node capture-map` while the NVIDIA driver is bound",
            source=module_map.source,
        )
    gpus = []
    for index, entry in enumerate(sorted(module_map.entries, key=lambda e: e.module_id)):
        device = discovery.get(entry.bdf)
        assert device is not None  # modulemap.validate checked the BDF sets are equal
        gpus.append(
            KubeletGpu(
                device_id=str(index),
                module_id=entry.module_id,
                bdf=device.bdf,
                uuid=entry.uuid,
                iommu_group=device.iommu_group,
                vfio_cdev=device.vfio_cdev,
                numa_node=device.numa_node,
            )
        )
    return tuple(gpus)


def gpu_cdi_spec(
    gpus: tuple[KubeletGpu, ...], *, kind: str = "nvidia.com/gpu", iommufd: bool = False
) -> CdiSpec:
    """The CDI spec for these GPUs (see :func:`build_gpu_spec`). Raises :class:`CdiError`,
    e.g. for a GPU without an IOMMU group (IOMMU off) or without a vfio cdev (iommufd)."""
    nodes: list[tuple[str, list[str]]] = []
    for gpu in gpus:
        if iommufd:
            node = gpu.vfio_cdev
        else:
            node = None if gpu.iommu_group is None else str(gpu.iommu_group)
        nodes.append((gpu.device_id, [node] if node is not None else []))
    return build_gpu_spec(nodes, kind=kind, iommufd=iommufd)
