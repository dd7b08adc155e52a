"""Building the GPU spec the device plugin needs: one CDI device per kubelet device, each
with its VFIO nodes, and the one shared node (legacy VFIO container or iommufd) at spec level.

It refuses to guess module IDs or to put both the legacy VFIO container and the iommufd nodes
in one spec (see :func:`build_gpu_spec`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from ._errors import CdiError
from ._model import CdiDevice, CdiSpec, ContainerEdits, DeviceNode
from ._names import _check_kind, _device_name_problem
from ._validate import validate
from ._versions import _EARLIEST, minimum_version

#: Default legacy VFIO container node, shared by every device in the spec.
VFIO_CONTAINER: Final = "/dev/vfio/vfio"
#: Default iommufd control node, the iommufd counterpart of the VFIO container.
IOMMU_DEVICE: Final = "/dev/iommu"


def _node_path(entry: str, *, iommufd: bool, device: str, container: str) -> str:
    """The /dev path for one node entry of a device (see :func:`build_gpu_spec`)."""
    hint = (
        "give iommufd cdev names like 'vfio3' or paths under /dev/vfio/devices/"
        if iommufd
        else "give IOMMU group numbers like '63' or paths /dev/vfio/<group>"
    )
    if iommufd:
        if re.fullmatch(r"vfio[0-9]+", entry):
            return f"/dev/vfio/devices/{entry}"
        if re.fullmatch(r"/dev/vfio/devices/vfio[0-9]+", entry):
            return entry
    else:
        if re.fullmatch(r"[0-9]+", entry):
            return f"/dev/vfio/{entry}"
        if re.fullmatch(r"/dev/vfio/[0-9]+", entry) and entry != container:
            return entry
    mode = "an iommufd" if iommufd else "a legacy VFIO"
    raise CdiError(f"device {device!r}: not {mode} node", entry, hint)


def build_gpu_spec(
    devices: Sequence[tuple[str, Sequence[str]]],
    *,
    kind: str = "nvidia.com/gpu",
    iommufd: bool = False,
    vfio_container: str = VFIO_CONTAINER,
    iommu_device: str = IOMMU_DEVICE,
) -> CdiSpec:
    """The CDI spec that lets Kata cold-plug each GPU: one CDI device per kubelet device.

    ``devices`` holds ``(name, nodes)`` pairs: ``name`` is the device ID given to the kubelet
    (the Kata shim builds ``<kind>=<name>`` from the PodResources answer, so both must
    match), ``nodes`` are the GPU's IOMMU group numbers (``"63"`` -> ``/dev/vfio/63``) or, with
    ``iommufd``, its vfio cdev names (``"vfio3"`` -> ``/dev/vfio/devices/vfio3``); absolute
    paths of the right form are taken as they are. Every node is a character device with
    ``rwm`` permissions; major and minor are left to the runtime, which reads the host node.

    The spec-level edits hold the one node every device shares: the legacy VFIO container
    ``/dev/vfio/vfio`` or, with ``iommufd``, the iommufd control node ``/dev/iommu``. QEMU
    opens ``/dev/iommu`` plus ``/dev/vfio/devices/vfioN`` for iommufd passthrough, and the
    container plus ``/dev/vfio/<group>`` for the legacy backend. We never emit both backends
    in one spec: the same GPU would reach the OCI spec through two handles, which Kata
    maintainers reject (kubernetes-sigs/dra-driver-nvidia-gpu#1036); NVIDIA's and AMD's
    passthrough drivers pair the nodes the same way.

    ``cdiVersion`` is :func:`minimum_version` of the result: 0.5.0 for names that start with
    a digit such as "0".."7", 0.3.0 for names such as "gpu0".

    Raises:
        CdiError: no devices, a device without nodes, a bad or duplicate name, a bad kind, a
            node entry of the wrong form, or one node given to two devices.
    """
    _check_kind(kind)
    if not devices:
        raise CdiError(
            "no GPUs to put in the CDI spec", list(devices), "pass at least one (name, nodes)"
        )
    container = iommu_device if iommufd else vfio_container
    if not container.startswith("/dev/"):
        raise CdiError("shared VFIO node must be under /dev", container, "pass a /dev path")
    seen_names: set[str] = set()
    node_owner: dict[str, str] = {}
    built: list[CdiDevice] = []
    for name, nodes in devices:
        problem = _device_name_problem(name)
        if problem:
            raise CdiError(
                f"CDI device name {problem}",
                name,
                "use the kubelet device ID: letters, digits, '_', '-', '.', ':'",
            )
        if name in seen_names:
            raise CdiError(
                "duplicate CDI device name", name, "give each GPU its own kubelet device ID"
            )
        seen_names.add(name)
        if isinstance(nodes, str) or not nodes:
            raise CdiError(
                f"device {name!r} has no VFIO nodes",
                nodes,
                "pass a sequence of its IOMMU groups (or iommufd cdevs)",
            )
        paths: list[str] = []
        for entry in nodes:
            path = _node_path(entry, iommufd=iommufd, device=name, container=container)
            owner = node_owner.get(path)
            if owner is not None:
                raise CdiError(
                    f"VFIO node is given to devices {owner!r} and {name!r}",
                    path,
                    "a VFIO group or cdev can be opened by one VM only; give each GPU its own",
                )
            node_owner[path] = name
            paths.append(path)
        built.append(
            CdiDevice(name, ContainerEdits(device_nodes=tuple(DeviceNode(p) for p in paths)))
        )
    draft = CdiSpec(
        version=_EARLIEST,
        kind=kind,
        devices=tuple(built),
        edits=ContainerEdits(device_nodes=(DeviceNode(container),)),
    )
    spec = CdiSpec(minimum_version(draft), draft.kind, draft.devices, draft.edits)
    errors = [v for v in validate(spec) if v.is_error]
    if errors:  # pragma: no cover - the checks above rule these out
        raise CdiError("generated CDI spec is invalid", kind, "report this bug", errors)
    return spec
