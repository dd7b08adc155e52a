"""What a Kata GPU VM costs the host beyond its tenant's memory: the RuntimeClass overhead.

Kubernetes adds a RuntimeClass's ``overhead.podFixed`` to every pod of that class, both when
scheduling and in the pod's cgroup limit. A Kata pod's cgroup holds the whole VM (QEMU,
virtiofsd, the shim, and every guest page, since VFIO pins all guest RAM for DMA). If the
overhead is too small, the kernel OOM-kills QEMU and the tenant's VM dies with all its GPUs;
if it is too large, HGX hosts fit fewer VMs. The Kata default, 10 GiB / 1 CPU, was measured
in the field as too small for a 100 GiB VM, and about 20 GiB was enough (FACTS.md).

This module models the overhead term by term, says where each number comes from, and turns
it into a RuntimeClass. It does no I/O; it refuses to guess a host's real RAM (``vm_memory_for``
is a default, not a measurement).

The model (all terms are memory charged to the pod's cgroup that the containers' limits do
not cover; ``G`` is the guest RAM = the tenant's memory + Kata's base memory)::

    overhead = base + processes + vcpus × per_vcpu            (fixed)
             + page_tables(G, page size) + bitmaps(G)         (derived, grow with G)
             + HEADROOM_FRACTION × G                          (calibrated, grows with G)

- **Guest base memory** (:data:`KATA_BASE_MEMORY_GIB`, from the Kata NVIDIA GPU configuration's
  ``default_memory``): Kata sizes the VM as ``default_memory`` + the containers' limits, and
  VFIO pins all of it, so the base is resident from boot and only the overhead can cover it.
  The guest kernel, its page cache at boot and OVMF's runtime data live in this part.
  Derived from the configuration (change the constant if you change ``default_memory``).
- **Host processes** (:data:`PROCESS_MEMORY_MIB`): QEMU (device models, 8 PCIe root ports for
  cold plug at ~0.7 MiB each, VFIO device state, OVMF flash images), virtiofsd and
  containerd-shim-kata-v2. Published measurements for small VMs are ~30 MiB, ~10 MiB and
  ~20 MiB; we assume 320 + 128 + 64 MiB to leave room for GPU VMs' larger device state and
  virtiofsd's I/O buffers. **Assumption.**
- **Per vCPU** (:data:`VCPU_MEMORY_MIB`): a QEMU thread stack, KVM's ``kvm_vcpu`` and run page,
  per-vCPU MMU caches; 4 MiB each. **Assumption** (generous; real figures are below 1 MiB).
- **Page tables** (derived): three structures each map every guest page with an 8-byte entry,
  i.e. 8 bytes per 4 KiB page = 1/512 of guest RAM each, plus 1/512 of that per upper level:
  QEMU's own page tables for its mapping of guest RAM, KVM's EPT (second-level tables, charged
  to the memory cgroup), and the IOMMU tables through which VFIO maps guest RAM for the GPUs'
  DMA (charged to the cgroup with iommufd, and on recent kernels with type1 too). With 4 KiB
  pages that is 3/512 ≈ 0.59 % of G. With 1 GiB hugepages backing the guest, each structure
  needs one entry per GiB (a few KiB in all): the EPT and the IOMMU (VT-d / AMD-Vi
  superpages) both map 1 GiB pages when the backing is 1 GiB-contiguous. Transparent huge
  pages are not counted on: the model assumes 4 KiB when ``hugepages`` is false.
- **QEMU per-GiB bookkeeping** (derived): QEMU keeps DIRTY_MEMORY_NUM = 3 dirty bitmaps (VGA,
  TCG code, migration) of 1 bit per 4 KiB target page for all guest RAM, 3/32768 of G
  (~10 MiB at 100 GiB), whatever the host page size. KVM's large-page metadata (4 bytes per
  2 MiB) is smaller still and left out.
- **VFIO pinned-memory accounting** costs no bytes of its own: RLIMIT_MEMLOCK (``locked_vm``)
  is a count, not memory. Its effect is in the terms above: pinning makes every guest page
  resident at boot (no lazy faulting, no swap, no reclaim), which is why the base memory
  counts in full.
- **Headroom** (:data:`HEADROOM_FRACTION`, 5 % of G): for a 100 GiB VM with 4 KiB pages the
  derived terms (base 8 GiB, page tables 0.63 GiB, bitmaps 0.01 GiB) plus the *measured*
  process sizes (~60 MiB) come to about 8.7 GiB, *less* than the 10 GiB found too small.
  Something we cannot derive therefore costs at least ~1.3 GiB there: candidates are QEMU's
  transient allocations while it maps GPU BARs and pins memory (QEMU before 10.2 allocated
  memory twice for cold-plugged GPUs; the Kata project lowered its GPU overheads after that
  fix), virtiofsd's page cache of files the tenant reads (charged to the pod, reclaimable),
  and guest I/O. Our generous process and vCPU allowances (1.4 GiB at the default vCPUs)
  cover part of it; a proportional headroom covers the rest, proportional because the field
  failure grew with the VM's size. **Assumption, calibrated on one field fact**: at 100 GiB
  the model gives 14.8 GiB with hugepages (``15Gi``) and 15.4 GiB with 4 KiB pages
  (``16Gi``): about 5 GiB above the 10 GiB that failed and 4-5 GiB below the 20 GiB that was
  enough. Lower it only with measurements (``memory.peak`` of the pod cgroup).

With hugepages the guest RAM comes from the hugetlb pool, which cgroup v2 charges to the
hugetlb controller (not ``memory``) unless mounted with ``memory_hugetlb_accounting``; the
pod must then also request ``hugepages-1Gi``. This model keeps charging the base memory in
``memory`` in that case too, which overstates the overhead by up to the base: conservative.

CPU: Kata adds :data:`KATA_BASE_VCPUS` vCPU to the containers' CPU limits (the base vCPU runs
the guest agent and kernel threads); QEMU's main loop, virtiofsd and the shim need about a
quarter of a core more (:data:`PROCESS_CPU_MILLICORES`, the Kata project's figure for its
non-GPU classes). vCPUs beyond the base are covered by the containers' CPU limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._errors import InvalidVmSpec

GIB = 1 << 30
"""Bytes in a GiB."""
MIB = 1 << 20
"""Bytes in a MiB."""

KATA_BASE_MEMORY_GIB = 8
"""Kata's ``default_memory`` for the NVIDIA GPU configuration (8 GiB): guest RAM that Kata adds
on top of the containers' memory limits."""
KATA_BASE_VCPUS = 1
"""Kata's ``default_vcpus`` for the NVIDIA GPU configuration: added to the containers' CPU."""
PROCESS_MEMORY_MIB = 512
"""QEMU (320 MiB) + virtiofsd (128 MiB) + containerd-shim-kata-v2 (64 MiB); an assumption."""
PROCESS_CPU_MILLICORES = 250
"""CPU of QEMU's main loop, virtiofsd and the shim beyond the base vCPU; an assumption."""
VCPU_MEMORY_MIB = 4
"""Host memory per vCPU (thread stack, ``kvm_vcpu``, MMU caches); a generous assumption."""
PAGE_TABLE_STRUCTURES = 3
"""Tables that map every guest page: QEMU's page tables, KVM's EPT, the IOMMU's."""
PTE_BYTES = 8
"""Bytes per page-table entry on x86-64 (and in EPT and VT-d / AMD-Vi tables)."""
TABLE_BYTES = 4096
"""One page-table page: 512 entries of 8 bytes."""
SMALL_PAGE = 4096
"""The x86-64 base page size."""
HUGE_PAGE = GIB
"""The hugepage size assumed when ``hugepages`` is true (1 GiB, ``hugepages-1Gi``)."""
DIRTY_BITMAPS = 3
"""QEMU's dirty-memory bitmaps (DIRTY_MEMORY_NUM): 1 bit per 4 KiB guest page each."""
HEADROOM_FRACTION = 0.05
"""Proportional headroom, calibrated on the field fact (10 GiB too small at 100 GiB)."""

DEFAULT_VCPUS = 224
"""The default vCPU count: every hardware thread of a typical HGX H100 host (2 sockets × 56
cores × 2 threads), so the default is an upper bound for any one VM."""
HGX_GPUS = 8
"""GPUs on an HGX H100/H200 8-GPU board: the largest partition."""
HGX_HOST_MEMORY_GIB = 2048
"""A typical HGX H100/H200 host's RAM (DGX H100: 2 TiB); a default, not a measurement."""
HOST_RESERVED_GIB = 64
"""Host RAM kept for the OS, kubelet, containerd, node agent and fm-controller; a default."""
VM_MEMORY_PER_GPU_GIB = 160
"""Default tenant memory per GPU of a partition. The largest multiple of 16 GiB for which both
one 8-GPU VM and eight 1-GPU VMs fit in ``HGX_HOST_MEMORY_GIB - HOST_RESERVED_GIB`` when every
pod carries the overhead of the 8-GPU VM (one RuntimeClass serves every size); a default."""

RUNTIME_CLASS_NAME = "kata-qemu-nvidia-gpu"
"""The RuntimeClass name and containerd handler of Kata's NVIDIA GPU runtime."""
HGX_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"gpucaas.io/hgx": "true"})
"""The node label that marks HGX hosts (it also selects the node agent's DaemonSet)."""
HGX_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": "nvidia.com/gpu", "operator": "Exists"}),
    MappingProxyType({"key": "gpucaas.io/hgx", "operator": "Exists"}),
)
"""Taints that GPU nodes usually carry to keep other workloads off."""


@dataclass(frozen=True)
class Overhead:
    """The host resources one Kata GPU VM needs beyond its containers' limits.

    ``terms`` names each memory term in bytes, in the order of the module docstring; they sum
    to ``memory_bytes``. ``cpu_millicores`` is the CPU beyond the containers' limits.
    """

    memory_bytes: int
    cpu_millicores: int
    terms: tuple[tuple[str, int], ...]

    @property
    def memory_gib(self) -> float:
        """``memory_bytes`` in GiB (not rounded)."""
        return self.memory_bytes / GIB

    def pod_fixed(self) -> dict[str, str]:
        """``overhead.podFixed`` in Kubernetes quantity syntax: memory rounded up to a whole
        GiB (``"15Gi"``), CPU in cores when whole (``"1"``), else millicores (``"1250m"``)."""
        memory = math.ceil(self.memory_bytes / GIB)
        cores, milli = divmod(self.cpu_millicores, 1000)
        cpu = str(cores) if milli == 0 else f"{self.cpu_millicores}m"
        return {"memory": f"{memory}Gi", "cpu": cpu}


def _page_table_bytes(guest_bytes: int, page: int) -> int:
    """Bytes of one radix page-table structure that maps ``guest_bytes`` with ``page``-sized
    leaves: whole 4 KiB table pages at every level up to a single root table."""
    entries = math.ceil(guest_bytes / page)
    total = 0
    while True:
        tables = math.ceil(entries / (TABLE_BYTES // PTE_BYTES))
        total += tables * TABLE_BYTES
        if tables == 1:
            return total
        entries = tables


def runtime_overhead(
    vm_memory_gib: float, *, vcpus: int = DEFAULT_VCPUS, hugepages: bool = True
) -> Overhead:
    """The overhead of one Kata GPU VM whose containers get ``vm_memory_gib`` GiB of memory.

    Parameters:
        vm_memory_gib: the memory the tenant's containers get (the sum of their limits), in
            GiB; Kata's base memory comes on top and is part of the overhead.
        vcpus: the VM's vCPUs (:data:`DEFAULT_VCPUS`, an upper bound, when not known).
        hugepages: whether 1 GiB hugepages back the guest RAM (4 KiB pages otherwise).

    Raises :class:`InvalidVmSpec` when ``vm_memory_gib`` is not a positive finite number or
    ``vcpus`` is below 1. The formula and the source of each term are in the module docstring.
    """
    if (
        isinstance(vm_memory_gib, bool)
        or not isinstance(vm_memory_gib, int | float)
        or not math.isfinite(vm_memory_gib)
        or vm_memory_gib <= 0
    ):
        raise InvalidVmSpec("vm_memory_gib", vm_memory_gib, "a positive number of GiB, e.g. 100")
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
        raise InvalidVmSpec("vcpus", vcpus, "a whole number of vCPUs, at least 1")

    base = KATA_BASE_MEMORY_GIB * GIB
    guest = math.ceil(vm_memory_gib * GIB) + base
    page = HUGE_PAGE if hugepages else SMALL_PAGE
    terms = (
        ("guest base memory", base),
        ("qemu, virtiofsd, shim", PROCESS_MEMORY_MIB * MIB),
        ("per vcpu", vcpus * VCPU_MEMORY_MIB * MIB),
        ("page tables", PAGE_TABLE_STRUCTURES * _page_table_bytes(guest, page)),
        ("qemu dirty bitmaps", math.ceil(guest // SMALL_PAGE * DIRTY_BITMAPS / 8)),
        ("headroom", math.ceil(guest * HEADROOM_FRACTION)),
    )
    return Overhead(
        memory_bytes=sum(size for _, size in terms),
        cpu_millicores=KATA_BASE_VCPUS * 1000 + PROCESS_CPU_MILLICORES,
        terms=terms,
    )


def vm_memory_for(gpus: int) -> int:
    """The default tenant memory, in GiB, of a VM with ``gpus`` GPUs: ``gpus`` ×
    :data:`VM_MEMORY_PER_GPU_GIB`, a per-GPU share of a typical HGX host's RAM.

    A default for sizing pods and the RuntimeClass, not a measurement of any host: pass the
    partition size the VM gets (a 3-GPU request gets a 4-GPU partition, so pass 4). Raises
    :class:`InvalidVmSpec` unless ``1 <= gpus <= HGX_GPUS``.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= HGX_GPUS:
        raise InvalidVmSpec("gpus", gpus, f"a GPU count from 1 to {HGX_GPUS}")
    return gpus * VM_MEMORY_PER_GPU_GIB


def runtime_class(
    name: str = RUNTIME_CLASS_NAME,
    *,
    vm_memory_gib: float = HGX_GPUS * VM_MEMORY_PER_GPU_GIB,
    vcpus: int = DEFAULT_VCPUS,
    hugepages: bool = False,
    handler: str = RUNTIME_CLASS_NAME,
    node_selector: Mapping[str, str] = HGX_NODE_SELECTOR,
    tolerations: Sequence[Mapping[str, str]] = HGX_TOLERATIONS,
) -> dict[str, Any]:
    """The ``node.k8s.io/v1`` RuntimeClass for Kata GPU VMs, overhead from :func:`runtime_overhead`.

    A RuntimeClass has one overhead for all its pods, so it must be sized for the largest VM
    that uses it: the default is the 8-GPU VM (``vm_memory_for(8)``), with 4 KiB pages
    (``hugepages=False``) because the hosts are not required to reserve hugepages, and that is
    never cheaper. Smaller VMs then over-reserve; a class per partition size (same
    ``handler``, another ``name``, ``vm_memory_gib=vm_memory_for(n)``) avoids that once the
    backend picks the class by size.

    Parameters:
        name: ``metadata.name``; pods name it in ``runtimeClassName``.
        vm_memory_gib, vcpus, hugepages: the largest VM of the class (see
            :func:`runtime_overhead`).
        handler: the runtime name in containerd's configuration on the HGX hosts.
        node_selector, tolerations: ``scheduling``: pods of the class land only on HGX hosts.

    Raises :class:`InvalidVmSpec` as :func:`runtime_overhead` does.
    """
    overhead = runtime_overhead(vm_memory_gib, vcpus=vcpus, hugepages=hugepages)
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpucaas"}},
        "handler": handler,
        "overhead": {"podFixed": overhead.pod_fixed()},
        "scheduling": {
            "nodeSelector": dict(node_selector),
            "tolerations": [dict(t) for t in tolerations],
        },
    }
