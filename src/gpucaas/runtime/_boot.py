"""How long a Kata GPU VM takes from pod start to a running container: the boot budget.

The product promises an 8-GPU VM in "a couple of minutes" (:data:`TARGET_SECONDS`). A Kata
GPU boot is not one cost but a chain: the VM starts, the guest finds its GPUs, VFIO maps every
GPU BAR for DMA, the guest driver brings each GPU up, the guest generates a CDI spec that the
Kata agent waits for, and the tenant's memory is hot-plugged and pinned. Several of these grow
with the GPU count, the BAR size and the VM's memory, so a default that fits the promise for a
1-GPU VM can miss it by minutes for an 8-GPU one. This module estimates each phase from
*published measurements*, says where each number comes from, and lists what brings a VM under
the target. It does no I/O and measures nothing: it is a budget to compare measurements with
(``gpucaas describe`` shows both), not a prediction for a host nobody has measured.

Sources (cited by tag below):

- **[blog]** L. Clipp (Lambda), "Boot-time Performance of Kata Containers With NVIDIA GPUs",
  2025-11-19, https://topofmind.dev/blog/2025/11/19/boot-time-performance-of-kata-containers-with-nvidia-gpus
  — 7 × H100 SXM in one ``kata-qemu-nvidia-gpu`` VM (QEMU, OVMF, cold plug to root ports,
  guest kernel 6.12, driver 580), ``default_memory`` 10 GiB + a 100 GiB pod limit, image
  already on the node. Guest console timeline, bpftrace of ``vfio_pin_pages_remote`` on the
  host, and ``kubectl describe`` pod start times: 3:03 with 4 KiB pages, 2:26 with 1 GiB
  hugepages, 2:25 → 1:54 when switching VFIO from the legacy type1 backend to iommufd.
- **[lore]** J. Gunthorpe's reply to the same author, "Explanation of VM Boot Performance Gains
  with IOMMUFD", https://lore.kernel.org/linux-iommu/20251122001953.GL233636@ziepe.ca/T/#t —
  older kernels faulted in every page of a GPU BAR on each VFIO map/unmap.
- **[kata-10878]** https://github.com/kata-containers/kata-containers/pull/10878 — the agent's
  CDI wait became configurable (``agent.cdi_timeout``) because 8 × H100/H800 systems "need some
  extended time to be initialized".
- **[kata-10891]** https://github.com/kata-containers/kata-containers/issues/10891 — "failed to
  inject devices after CDI timeout of 100 seconds": the default wait is 100 s.
- **[kata-11216]** https://github.com/kata-containers/kata-containers/pull/11216 — a 90 s
  ``dial_timeout`` "is not enough to create a PodSandbox that has GPUs"; the NVIDIA
  configurations use 500 s.
- **[nvrc]** https://github.com/NVIDIA/nvrc (README) — the guest init loads ``nvidia.ko``,
  starts ``nvidia-persistenced``, runs ``nvidia-smi``, then generates the CDI spec.
- **[tinfoil-363]** https://github.com/tinfoilsh/cvmimage/pull/363 — ``nvidia-persistenced``
  attaches GPUs one after another, 3.1-4.3 s each (8 × B200, TDX).
- **[lizhe]** Li Zhe, "[PATCH v2 0/8] Introduce a huge-page pre-zeroing mechanism",
  https://patchew.org/linux/20260107113130.37231-1-lizhe.67@bytedance.com — faulting in a
  1 GiB hugetlb page takes ~250 ms (zeroing it), "rendering the launch [of a VM] noticeably slow".
- **[qemu-prealloc]** QEMU commit 037fb5eb39 (multi-threaded ``-mem-prealloc``): a 320 GiB VM
  preallocates in 10 s and a 680 GiB one in 18 s with 84 threads.
- **[didi]** DiDi Cloud, "Optimizing GPU Virtual Machine Instance Creation Time",
  https://www.besthub.dev/articles/optimizing-gpu-virtual-machine-instance-creation-time-in-public-cloud-environments-a534242996b3
  — QEMU start and firmware time grow with the GPU count and memory; ``vfio_dma_map`` pins
  (and zeroes) all guest RAM.

The phases, in boot order (``n`` GPUs, ``B`` the BAR1 size in GiB, ``M`` the tenant's memory,
``M0`` Kata's base memory, ``r`` the per-GiB memory rate of the page size)::

    sandbox setup                 SANDBOX_S
    QEMU start + OVMF             QEMU_FIRMWARE_S + n·B/128·BAR_REMAP_S (type1 only) + M0·r
    guest kernel + agent          GUEST_KERNEL_S
    guest PCI enumeration         n·PCI_ENUMERATION_S_PER_GPU
    VFIO BAR mapping              n·B/128·BAR_PIN_S_PER_128GIB           (type1 only)
    guest driver init             DRIVER_LOAD_S + n·(DRIVER_ENABLE_S_PER_GPU − BAR_PIN_S_PER_128GIB
                                  + FBHUB_S_PER_GPU)
    guest CDI spec                GUEST_CDI_FIXED_S + n·GUEST_CDI_S_PER_GPU (0 if pre-generated)
    memory hot-plug + onlining    M·r
    container start               CONTAINER_START_S

Where the publication gives a number it is used as published; where it gives one point (7
GPUs, 128 GiB BARs, 110 GiB guest) and we scale it, the scaling is marked **Assumption** with
its reason. Three constants are *calibrated* so that the published configuration reproduces
the published totals (``tests/runtime/test_boot_budget.py`` checks it): the 4 KiB memory rate
(from the 37 s hugepage saving), the QEMU + firmware residual (from the 3:03 total), and the
BAR remap share (from the 31 s iommufd saving).

What the model leaves out: image pulls (the published runs had the image on the node; so does
this budget), queueing and placement (the control plane measures those), confidential
computing (TDX/SNP boots are far slower [kata-10878]), and run-to-run variance (the same
configuration measured 2:25 and 2:26 on different days [blog]).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from ._errors import InvalidVmSpec
from ._overhead import HGX_GPUS, KATA_BASE_MEMORY_GIB, vm_memory_for

TARGET_SECONDS = 120.0
"""The product promise: an 8-GPU VM runs "in a couple of minutes", pod start to container
running, read as 120 s."""

HUGEPAGES_CHOICES = ("1Gi", "none")
"""What may back guest RAM: 1 GiB hugepages (Kata ``enable_hugepages``, pod requests
``hugepages-1Gi``) or ordinary 4 KiB pages."""

H100_BAR_GIB = 128
"""BAR1 of an H100 SXM 80GB, in GiB ([blog]: ``BAR 2 [mem ... 0x1fffffffff]``; FACTS.md)."""
H200_BAR_GIB = 256
"""BAR1 of an H200, in GiB (captured: tests/node/data/captured-h200-r580/, sysfs and
``nvidia-smi -q -x`` agree). The shipped ``hgx-h100-8`` board model lists 128 GiB for its
``hgx-h200-8`` alias too, so the board name cannot tell the two apart: pass the GPU model."""
GPU_BAR_GIB: Mapping[str, int] = MappingProxyType({"H100": H100_BAR_GIB, "H200": H200_BAR_GIB})
"""BAR1 size by GPU model name (upper case), for ``--bar h200``."""

# --- the published configuration [blog] ---------------------------------------------------
PUBLISHED_GPUS = 7
"""GPUs in the published VM (7 × H100; the eighth on that host was broken) [blog]."""
PUBLISHED_TENANT_MEMORY_GIB = 100
"""The published pod's memory limit, hot-plugged into the VM [blog]."""
PUBLISHED_BASE_MEMORY_GIB = 10
"""The published pod's ``default_memory`` annotation (10240 MiB) [blog]."""
PUBLISHED_POD_START_S = 183.0
"""Published pod start → container started with 4 KiB pages: 3:03 [blog]."""
PUBLISHED_POD_START_HUGEPAGES_S = 146.0
"""The same pod with 1 GiB hugepages: 2:26, "37 seconds faster" [blog]."""
PUBLISHED_IOMMUFD_SAVING_S = 31.0
"""Legacy VFIO type1 2:25 → iommufd 1:54 for the same pod, "a solid 31 second reduction"
[blog]; Kata needed an unmerged patch for iommufd then."""

# --- phases --------------------------------------------------------------------------------
SANDBOX_S = 5.0
"""Kubelet → containerd → Kata shim: pod sandbox, network namespace and CNI, virtiofsd.
**Assumption**: not in the published trace; a few seconds on an idle node."""
QEMU_FIRMWARE_S = 20.4
"""QEMU start and OVMF up to the guest kernel, beyond the base-memory and BAR terms.
*Calibrated*: the published 183 s minus every other phase at the published configuration.
The trace starts at the guest kernel, so this residual also holds whatever the kubelet and
containerd spend that :data:`SANDBOX_S` and :data:`CONTAINER_START_S` miss; firmware time is
known to grow with GPUs and memory [didi], which the per-GPU remap term carries."""
BAR_REMAP_S_PER_128GIB = 1.23
"""Per GPU and 128 GiB of BAR, legacy type1 only: the part of the published 31 s iommufd
saving that the traced BAR pins do not explain ((31 − 7 × 3.2) / 7). **Assumption**: it is
spent mapping and unmapping BARs while OVMF and the guest (``pci=realloc``) reassign them —
type1 faulted in every BAR page on each map or unmap [lore] — so iommufd removes it."""
GUEST_KERNEL_S = 1.7
"""Guest kernel to a ready Kata agent: 1.2 s to the agent, 0.5 s of its checks [blog]."""
PCI_ENUMERATION_S_PER_GPU = 2.0
"""Guest PCI enumeration and BAR assignment: 14 s from the ready agent to the last of 7 GPUs
on the bus in the traced boot [blog] (5 s in another boot). **Assumption**: linear in GPUs,
from the slower trace."""
BAR_PIN_S_PER_128GIB = 3.2
"""VFIO DMA-mapping one GPU's BAR with the legacy type1 backend: ``vfio_pin_pages_remote``
of 128 GiB took 3168-3471 ms, seven in 24 s, each as the guest driver enabled a GPU [blog].
**Assumption**: linear in the BAR size (the walk is per 4 KiB page: 33.5 M pages for 128 GiB
[blog]), so an H200's 256 GiB BAR costs 6.4 s; iommufd removes it (its published saving
exceeds this phase)."""
DRIVER_LOAD_S = 4.0
"""Last GPU on the guest's bus → first GPU enabled: ``modprobe nvidia`` and its probe [blog]."""
DRIVER_ENABLE_S_PER_GPU = 4.0
"""``nvidia ... enabling device`` lines ~4 s apart, 28 s for 7 GPUs [blog]. The BAR pin
(:data:`BAR_PIN_S_PER_128GIB`) happens inside each interval, so the driver's own share is
the difference, 0.8 s per GPU."""
FBHUB_S_PER_GPU = 13.0 / 7
"""``NVRM: gpuClearFbhubPoisonIntrForBug2924523_GA100`` once per GPU, 2.1 s apart, "an
additional 13 seconds" for 7 GPUs after the last enable [blog]."""
GUEST_CDI_S_PER_GPU = 3.5
"""Per GPU of the guest CDI wait: NVRC starts ``nvidia-persistenced`` before it runs
``nvidia-ctk cdi generate`` [nvrc], and persistenced attaches GPUs one by one, 3.1-4.3 s each
[tinfoil-363]. **Assumption**: the same per-GPU cost on H100 without confidential computing
(the published figure is for B200 under TDX)."""
GUEST_CDI_FIXED_S = 20.5
"""The rest of the agent's wait for the guest CDI spec. Published: the spec arrived 58 s
after the last BAR pin ("over a minute" of waiting in all) [blog]; 58 − 13 s of FBHUB − 7 ×
3.5 s leaves 20.5 s for ``nvidia-smi``, ``nvidia-ctk`` and the agent's retry interval.
**Assumption**: the split into fixed and per-GPU parts."""
MEMORY_S_PER_GIB_HUGEPAGES = 0.03
"""Guest RAM backed by 1 GiB hugepages, per GiB: zeroing on first touch, done by QEMU's
multi-threaded preallocation (320 GiB in 10 s, 680 GiB in 18 s with 84 threads
[qemu-prealloc]). **Assumption**: preallocation runs in parallel. Faulting 1 GiB pages one at
a time costs :data:`HUGEPAGE_FAULT_S` each [lizhe], eight times this rate."""
HUGEPAGE_FAULT_S = 0.25
"""Faulting in (zeroing) one 1 GiB hugetlb page on one thread: ~250 ms [lizhe]."""
MEMORY_S_PER_GIB_4K = 0.366
"""Guest RAM backed by 4 KiB pages, per GiB: fault, zero, build 4 KiB EPT and IOMMU tables,
pin. *Calibrated*: :data:`MEMORY_S_PER_GIB_HUGEPAGES` + the published hugepage saving over
the published guest RAM, 0.03 + 37 s / 110 GiB. Cross-check: in the traced boot the 100 GiB
hot-plug took 33 s from the CDI spec's arrival to ``online_cpu_mem`` (the last 17 s of it in
``vfio_pin_pages_remote`` calls) [blog]; the model says 36.6 s. **Assumption**: linear in
memory far beyond the published 110 GiB (an 8-GPU VM has ~1.3 TiB)."""
CONTAINER_START_S = 3.0
"""The agent creates and starts the container once memory is online (image on the node,
rootfs over virtiofs). **Assumption**: not in the published trace."""

# --- timeouts the budget must fit ------------------------------------------------------------
KUBELET_RUNTIME_REQUEST_TIMEOUT_S = 120.0
"""The kubelet's default ``runtimeRequestTimeout`` (2 min): each CRI call, including the
``RunPodSandbox`` / ``CreateContainer`` that boot a Kata VM, must finish within it (FACTS.md)."""
KATA_CDI_TIMEOUT_S = 100.0
"""Kata agent's default wait for the guest CDI spec ([kata-10891]; ``agent.cdi_timeout``
[kata-10878])."""
TIMEOUT_MARGIN = 2.0
"""Recommended timeouts are this multiple of the estimate, rounded up. **Assumption**: the
published boots of one configuration vary by tens of seconds across runs and kernels [blog]."""

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(Mi|Gi|Ti)?(?:B)?\s*$")
_UNIT_GIB = {None: 1.0, "Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0}


@dataclass(frozen=True)
class BootPhase:
    """One phase of a Kata GPU VM's boot: its ``name``, estimated ``seconds`` and the
    ``basis`` of the estimate (the publication or the assumption behind it)."""

    name: str
    seconds: float
    basis: str


@dataclass(frozen=True)
class BootBudget:
    """The estimated boot of one Kata GPU VM, phase by phase, against :data:`TARGET_SECONDS`.

    ``phases`` are in boot order and sum to :attr:`total_seconds`. ``memory_gib`` is the
    tenant's memory (Kata's ``base_memory_gib`` comes on top). ``recommendations`` say what
    would bring this VM under the target, and which timeouts it needs, each with its effect.
    """

    gpus: int
    memory_gib: float
    base_memory_gib: float
    hugepages: str
    bar_gib: int
    iommufd: bool
    pregenerated_cdi: bool
    phases: tuple[BootPhase, ...]
    recommendations: tuple[str, ...]
    target_seconds: float = TARGET_SECONDS

    @property
    def total_seconds(self) -> float:
        """The sum of the phases."""
        return sum(p.seconds for p in self.phases)

    @property
    def within_target(self) -> bool:
        """Whether :attr:`total_seconds` is at most :attr:`target_seconds`."""
        return self.total_seconds <= self.target_seconds

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (seconds rounded to 0.1 s)."""
        return {
            "gpus": self.gpus,
            "memory_gib": self.memory_gib,
            "base_memory_gib": self.base_memory_gib,
            "hugepages": self.hugepages,
            "bar_gib": self.bar_gib,
            "iommufd": self.iommufd,
            "pregenerated_cdi": self.pregenerated_cdi,
            "phases": [
                {"name": p.name, "seconds": round(p.seconds, 1), "basis": p.basis}
                for p in self.phases
            ],
            "total_seconds": round(self.total_seconds, 1),
            "target_seconds": self.target_seconds,
            "within_target": self.within_target,
            "recommendations": list(self.recommendations),
        }


def _positive(value: object, parameter: str, expected: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidVmSpec(parameter, value, expected)
    return float(value)


class _Vm(NamedTuple):
    """One VM configuration of the budget (checked by :func:`boot_budget`)."""

    gpus: int
    memory_gib: float
    base_memory_gib: float
    hugepages: str
    bar_gib: int
    iommufd: bool
    pregenerated_cdi: bool


def _phases(vm: _Vm) -> tuple[BootPhase, ...]:
    gpus, memory_gib, base_memory_gib, hugepages, bar_gib, iommufd, pregenerated_cdi = vm
    bars = gpus * bar_gib / H100_BAR_GIB  # GPU BARs in units of one H100 BAR
    rate = MEMORY_S_PER_GIB_HUGEPAGES if hugepages == "1Gi" else MEMORY_S_PER_GIB_4K
    pages = "1 GiB hugepages" if hugepages == "1Gi" else "4 KiB pages"
    remap = 0.0 if iommufd else bars * BAR_REMAP_S_PER_128GIB
    driver_per_gpu = DRIVER_ENABLE_S_PER_GPU - BAR_PIN_S_PER_128GIB + FBHUB_S_PER_GPU
    return (
        BootPhase(
            "sandbox setup",
            SANDBOX_S,
            "kubelet, containerd, Kata shim, CNI, virtiofsd; assumption (not in the trace)",
        ),
        BootPhase(
            "qemu start + ovmf",
            QEMU_FIRMWARE_S + remap + base_memory_gib * rate,
            f"calibrated residual {QEMU_FIRMWARE_S:g} s"
            + ("" if iommufd else f" + {BAR_REMAP_S_PER_128GIB:g} s per 128 GiB BAR (type1)")
            + f" + {base_memory_gib:g} GiB base RAM at {rate:g} s/GiB ({pages})",
        ),
        BootPhase(
            "guest kernel + agent",
            GUEST_KERNEL_S,
            "published: 1.2 s to the agent + 0.5 s of its checks (7 x H100)",
        ),
        BootPhase(
            "guest pci enumeration",
            gpus * PCI_ENUMERATION_S_PER_GPU,
            f"published: 14 s for 7 GPUs; {PCI_ENUMERATION_S_PER_GPU:g} s per GPU (linear: "
            "assumption)",
        ),
        BootPhase(
            "vfio bar mapping",
            0.0 if iommufd else bars * BAR_PIN_S_PER_128GIB,
            "iommufd maps BARs without pinning them page by page (published: 31 s saved)"
            if iommufd
            else f"published: {BAR_PIN_S_PER_128GIB:g} s per 128 GiB BAR (vfio_pin_pages_remote);"
            f" {bar_gib} GiB BAR x {gpus} GPUs (linear in BAR size: assumption)",
        ),
        BootPhase(
            "guest driver init",
            DRIVER_LOAD_S + gpus * driver_per_gpu,
            f"published: {DRIVER_LOAD_S:g} s modprobe, ~{DRIVER_ENABLE_S_PER_GPU:g} s per GPU "
            f"enable (less the BAR pin), {FBHUB_S_PER_GPU:.1f} s per GPU FBHUB interrupt",
        ),
        BootPhase(
            "guest cdi spec",
            0.0 if pregenerated_cdi else GUEST_CDI_FIXED_S + gpus * GUEST_CDI_S_PER_GPU,
            "spec ready before the agent asks: no wait (assumption: persistenced and nvidia-ctk"
            " then run off the critical path)"
            if pregenerated_cdi
            else f"published: spec 58 s after the last BAR pin at 7 GPUs; {GUEST_CDI_FIXED_S:g} s"
            f" + {GUEST_CDI_S_PER_GPU:g} s per GPU for nvidia-persistenced (split: assumption)",
        ),
        BootPhase(
            "memory hot-plug + onlining",
            memory_gib * rate,
            f"{memory_gib:g} GiB at {rate:g} s/GiB ({pages}); "
            + (
                "parallel preallocation (published 680 GiB in 18 s): assumption"
                if hugepages == "1Gi"
                else "calibrated on the published 37 s hugepage saving (linear: assumption)"
            ),
        ),
        BootPhase(
            "container start",
            CONTAINER_START_S,
            "agent creates and starts the container, image on the node; assumption",
        ),
    )


def _total(vm: _Vm) -> float:
    return sum(p.seconds for p in _phases(vm))


def _recommendations(vm: _Vm) -> tuple[str, ...]:
    gpus, memory_gib, base_memory_gib, hugepages, bar_gib, iommufd, pregenerated_cdi = vm
    now = _total(vm)
    guest = memory_gib + base_memory_gib
    out: list[str] = []
    if hugepages != "1Gi":
        saving = now - _total(vm._replace(hugepages="1Gi"))
        out.append(
            f"back guest RAM with 1 GiB hugepages (Kata enable_hugepages; the pod requests "
            f"hugepages-1Gi: {math.ceil(guest)}Gi): saves {saving:.0f} s (published: 3:03 -> "
            "2:26 for 7 x H100 and 110 GiB)"
        )
    if not pregenerated_cdi:
        saving = now - _total(vm._replace(pregenerated_cdi=True))
        out.append(
            "have the guest CDI spec ready before the Kata agent asks for it (generated ahead "
            f"of time, or Kata's guest-side fix), so the agent does not wait for nvidia-ctk: "
            f"saves {saving:.0f} s (published: over a minute of waiting for 7 x H100)"
        )
    if not iommufd:
        saving = now - _total(vm._replace(iommufd=True))
        out.append(
            "pass GPUs through with iommufd (/dev/vfio/devices/vfioN and /dev/iommu: "
            f"`gpucaas node cdi generate --iommufd`): saves ~{saving:.0f} s (published: 2:25 "
            "-> 1:54 for 7 x H100)"
        )
    fastest = vm._replace(hugepages="1Gi", iommufd=True, pregenerated_cdi=True)
    best = _total(fastest)
    if out:
        verdict = "within" if best <= TARGET_SECONDS else "still over"
        out.append(f"with all of these: {best:.0f} s, {verdict} the {TARGET_SECONDS:g} s target")
    if best > TARGET_SECONDS:
        phases = _phases(fastest)
        largest = max(phases, key=lambda p: p.seconds)
        out.append(
            f"even then the largest phase is {largest.name} ({largest.seconds:.0f} s); "
            + (
                f"less tenant memory shortens it by {MEMORY_S_PER_GIB_HUGEPAGES * 100:.0f} s "
                "per 100 GiB"
                if largest.name == "memory hot-plug + onlining"
                else "measure it on the hosts before promising the target"
            )
        )
    serial = guest * HUGEPAGE_FAULT_S
    if hugepages == "1Gi" and serial - guest * MEMORY_S_PER_GIB_HUGEPAGES > 10:
        out.append(
            "preallocate hugepages with many threads (QEMU prealloc-threads) or from pre-zeroed "
            f"pages: this budget assumes {MEMORY_S_PER_GIB_HUGEPAGES:g} s/GiB, while faulting "
            f"1 GiB pages one at a time costs ~{HUGEPAGE_FAULT_S:g} s each (published), "
            f"{serial:.0f} s for {guest:g} GiB"
        )
    timeout = math.ceil(TIMEOUT_MARGIN * now / 60)
    if TIMEOUT_MARGIN * now > KUBELET_RUNTIME_REQUEST_TIMEOUT_S:
        out.append(
            f"set the kubelet's runtimeRequestTimeout to at least {timeout}m (default 2m): "
            "Kata boots the VM inside the CRI calls, and twice this estimate leaves room for "
            "slow boots"
        )
    agent_wait = sum(
        p.seconds
        for p in _phases(vm)
        if p.name
        in ("guest pci enumeration", "vfio bar mapping", "guest driver init", "guest cdi spec")
    )
    if TIMEOUT_MARGIN * agent_wait > KATA_CDI_TIMEOUT_S:
        out.append(
            f"raise Kata's agent.cdi_timeout to at least "
            f"{math.ceil(TIMEOUT_MARGIN * agent_wait / 10) * 10} s (default "
            f"{KATA_CDI_TIMEOUT_S:g} s): the agent waits {agent_wait:.0f} s for the guest's "
            "devices and CDI spec"
        )
    out.append(
        'keep cold_plug_vfio = "root-port" (Kata\'s NVIDIA default): the published figures are '
        "cold-plug boots; hot plug adds a hot-plug wait per GPU"
    )
    out.append(
        "pre-pull tenant images on the HGX nodes: image pulls are not in this budget (the "
        "published runs had the image on the node)"
    )
    return tuple(out)


def boot_budget(
    gpus: int,
    memory_gib: float | None = None,
    *,
    hugepages: str = "1Gi",
    bar_gib: int = H100_BAR_GIB,
    iommufd: bool = False,
    pregenerated_cdi: bool = False,
    base_memory_gib: float = KATA_BASE_MEMORY_GIB,
) -> BootBudget:
    """The estimated boot of a Kata GPU VM with ``gpus`` GPUs, phase by phase.

    Parameters:
        gpus: the VM's GPUs, the partition size (1-8).
        memory_gib: the tenant's memory in GiB (the containers' limits), hot-plugged after
            boot; ``vm_memory_for(gpus)`` when not given.
        hugepages: ``"1Gi"`` when 1 GiB hugepages back the guest RAM, ``"none"`` for 4 KiB.
        bar_gib: each GPU's BAR1 in GiB: :data:`H100_BAR_GIB` or :data:`H200_BAR_GIB`
            (see :func:`bar_gib_for`).
        iommufd: VFIO through iommufd instead of the legacy type1 container.
        pregenerated_cdi: the guest's CDI spec is ready before the agent asks for it.
        base_memory_gib: Kata's ``default_memory`` in GiB, part of the VM from its start.

    Raises :class:`InvalidVmSpec` naming the parameter when ``gpus`` is not 1-8, a memory is
    not a positive number, ``hugepages`` is not ``"1Gi"`` or ``"none"``, or ``bar_gib`` is
    not a power of two up to 1024. The phases and the source of each number are in the
    module docstring.
    """
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= HGX_GPUS:
        raise InvalidVmSpec("gpus", gpus, f"a GPU count from 1 to {HGX_GPUS}")
    memory = (
        float(vm_memory_for(gpus))
        if memory_gib is None
        else _positive(memory_gib, "memory_gib", "a positive number of GiB, e.g. 1280")
    )
    base = _positive(base_memory_gib, "base_memory_gib", "a positive number of GiB, e.g. 8")
    if hugepages not in HUGEPAGES_CHOICES:
        raise InvalidVmSpec("hugepages", hugepages, "'1Gi' (1 GiB hugepages) or 'none' (4 KiB)")
    if (
        isinstance(bar_gib, bool)
        or not isinstance(bar_gib, int)
        or not 1 <= bar_gib <= 1024
        or bar_gib & (bar_gib - 1)
    ):
        raise InvalidVmSpec(
            "bar_gib", bar_gib, f"a BAR1 size in GiB, a power of two: {H100_BAR_GIB} (H100) or "
            f"{H200_BAR_GIB} (H200)"
        )  # fmt: skip
    vm = _Vm(gpus, memory, base, hugepages, bar_gib, bool(iommufd), bool(pregenerated_cdi))
    return BootBudget(
        gpus=gpus,
        memory_gib=memory,
        base_memory_gib=base,
        hugepages=hugepages,
        bar_gib=bar_gib,
        iommufd=bool(iommufd),
        pregenerated_cdi=bool(pregenerated_cdi),
        phases=_phases(vm),
        recommendations=_recommendations(vm),
    )


def memory_gib_from(text: str) -> float:
    """A memory size in GiB from ``"1280"`` (GiB), or a Kubernetes binary quantity
    ``"1280Gi"``, ``"1.25Ti"``, ``"512Mi"`` (a trailing ``B`` is allowed: ``"1280GiB"``).

    Raises :class:`InvalidVmSpec` for anything else, or a size that is not positive.
    """
    match = _QUANTITY.match(text)
    if match is None:
        raise InvalidVmSpec(
            "memory", text, "GiB as a number (1280) or a quantity with Mi, Gi or Ti (1.25Ti)"
        )
    return _positive(float(match[1]) * _UNIT_GIB[match[2]], "memory", "a size above 0")


def bar_gib_for(text: str) -> int:
    """A BAR1 size in GiB from a GPU model (``"h100"``, ``"H200"``) or a number (``"256"``).

    Raises :class:`InvalidVmSpec` for an unknown model or a size that :func:`boot_budget`
    refuses.
    """
    name = text.strip().upper()
    if name in GPU_BAR_GIB:
        return GPU_BAR_GIB[name]
    models = ", ".join(m.lower() for m in GPU_BAR_GIB)
    if not name.isdigit():
        raise InvalidVmSpec("bar", text, f"a GPU model ({models}) or a BAR1 size in GiB")
    size = int(name)
    if not 1 <= size <= 1024 or size & (size - 1):
        raise InvalidVmSpec(
            "bar", text, f"a power of two up to 1024 GiB, or a GPU model ({models})"
        )
    return size
