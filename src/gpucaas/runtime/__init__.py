"""Kata runtime sizing: what a GPU microVM costs the host, and the RuntimeClass that says so.

Pure: no I/O. :func:`boot_budget` estimates, phase by phase, how long a Kata GPU VM takes
to boot (from published measurements, in ``_boot.py``). :func:`runtime_overhead` models the
per-VM memory and CPU beyond the tenant's limits (each term and its source are documented
in ``_overhead.py``), :func:`vm_memory_for` gives the default VM memory per partition size,
and :func:`runtime_class` builds the Kubernetes object that ``deploy/runtimeclass.yaml``
holds.
"""

from ._boot import (
    GPU_BAR_GIB,
    H100_BAR_GIB,
    H200_BAR_GIB,
    HUGEPAGES_CHOICES,
    TARGET_SECONDS,
    BootBudget,
    BootPhase,
    bar_gib_for,
    boot_budget,
    memory_gib_from,
)
from ._errors import InvalidVmSpec
from ._overhead import (
    DEFAULT_VCPUS,
    HEADROOM_FRACTION,
    HGX_GPUS,
    HGX_HOST_MEMORY_GIB,
    HGX_NODE_SELECTOR,
    HGX_TOLERATIONS,
    HOST_RESERVED_GIB,
    KATA_BASE_MEMORY_GIB,
    KATA_BASE_VCPUS,
    RUNTIME_CLASS_NAME,
    VM_MEMORY_PER_GPU_GIB,
    Overhead,
    runtime_class,
    runtime_overhead,
    vm_memory_for,
)

__all__ = [
    "DEFAULT_VCPUS",
    "GPU_BAR_GIB",
    "H100_BAR_GIB",
    "H200_BAR_GIB",
    "HEADROOM_FRACTION",
    "HGX_GPUS",
    "HGX_HOST_MEMORY_GIB",
    "HGX_NODE_SELECTOR",
    "HGX_TOLERATIONS",
    "HOST_RESERVED_GIB",
    "HUGEPAGES_CHOICES",
    "KATA_BASE_MEMORY_GIB",
    "KATA_BASE_VCPUS",
    "RUNTIME_CLASS_NAME",
    "TARGET_SECONDS",
    "VM_MEMORY_PER_GPU_GIB",
    "BootBudget",
    "BootPhase",
    "InvalidVmSpec",
    "Overhead",
    "bar_gib_for",
    "boot_budget",
    "memory_gib_from",
    "runtime_class",
    "runtime_overhead",
    "vm_memory_for",
]
