"""Kata's GPU passthrough settings as a drop-in, and the kubelet timeout that multi-GPU boots need.

Kata's NVIDIA GPU configuration (``configuration-qemu-nvidia-gpu.toml``) must cold-plug every
GPU of a partition into its own PCIe root port, give the guest kernel room to re-assign BARs,
and wait long enough for a VM with eight GPUs to boot. Rather than edit the shipped file
(kata-deploy rewrites it), we write a drop-in. Pure: this module builds text; the CLI reads the
base configuration and writes the file.

Drop-ins (Kata 3.x Go runtime, ``src/runtime/pkg/katautils/config.go``: ``decodeDropIns``;
runtime-rs: ``src/libs/kata-types/src/config/drop_in.rs``): after loading the configuration
file -- resolved through symlinks -- Kata reads every file in ``config.d/`` next to it, in file
name order, and each key a drop-in sets replaces the value so far; keys it does not set keep
theirs. So a drop-in's ``kernel_params`` *replaces* the base file's (kata-deploy's own
``30-kernel-params.toml`` therefore re-reads the base value and appends to it): pass the
effective base value (:func:`effective_kernel_params`) so its parameters are kept. Unknown keys
only log "undecoded keys". kata-deploy installs each runtime in its own directory
(``.../kata-containers/runtimes/qemu-nvidia-gpu/``) with its own ``config.d``; with the flat
layout (``.../kata-containers/configuration-qemu-nvidia-gpu.toml``) the ``config.d`` beside it
is shared by every ``configuration-*.toml`` there, so our GPU settings would reach the non-GPU
runtimes too (the notes say so).

Keys (``configuration-qemu-nvidia-gpu.toml.in`` and the Go runtime's ``hypervisor``,
``agent`` and ``runtime`` structs):

- ``[hypervisor.qemu]`` ``cold_plug_vfio = "root-port"``, ``hot_plug_vfio = "no-port"`` (Kata
  refuses both set: "only one of them can be set"), ``pcie_root_port`` (root ports QEMU
  creates; Kata caps it at 16, ``maxPCIeRootPorts``), ``default_memory`` (MiB: the VM's base
  memory, to which Kata adds the containers' limits), ``default_vcpus`` (vCPUs; Kata adds the
  containers' CPU limits; values above the host's CPUs are clamped to them),
  ``enable_hugepages`` (guest RAM from hugepages, which implies preallocation),
  ``kernel_params`` (a space-separated string added to Kata's own guest command line).
- ``[agent.kata] dial_timeout`` (seconds the shim waits to reach the agent; with NVIDIA GPUs
  the agent starts only after the guest driver initialised every GPU) and ``[runtime]
  create_container_timeout`` (seconds for CreateContainer; Kata's NVIDIA configs use 1200 for
  both). There is no ``reconnect_timeout`` in the Go runtime's ``[agent.kata]``.

The kubelet side: every CRI call runs under the kubelet's ``runtimeRequestTimeout``
(KubeletConfiguration, default ``2m``), and a Kata sandbox with GPUs does not come up in two
minutes. The effective limit for creating a container is the shorter of that and Kata's
``create_container_timeout`` (the comment on the key says so). containerd adds no deadline of
its own: its ``[timeouts]`` table covers shim load/cleanup/shutdown and task state only.
:func:`kubelet_runtime_request_timeout` takes the boot estimate of :func:`boot_budget`
(``_boot.py``, every phase from published measurements) and applies the same margin and
rounding as its recommendations, so ``gpucaas describe`` and this drop-in agree. The guest
agent's wait for the GPUs' CDI spec (``agent.cdi_timeout``, 100 s by default) is raised the
same way, as a guest kernel parameter.

Refuses (:class:`InvalidVmSpec`): GPU counts outside one HGX board, fewer root ports than
GPUs, more root ports than Kata allows, and timeouts shorter than the kubelet's recommended one.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import tomlkit

from gpucaas.errors import MisuseError

from ._boot import (
    H200_BAR_GIB,
    KATA_CDI_TIMEOUT_S,
    KUBELET_RUNTIME_REQUEST_TIMEOUT_S,
    TIMEOUT_MARGIN,
    BootBudget,
    boot_budget,
)
from ._containerd import KATA_CONFIG_PATH
from ._errors import InvalidVmSpec, RuntimeConfigError
from ._overhead import HGX_GPUS, KATA_BASE_MEMORY_GIB, KATA_BASE_VCPUS

KATA_DROPIN_NAME = "60-gpucaas-gpu.toml"
"""The drop-in's file name. Kata applies ``config.d/*`` in name order, last value wins: 60
sorts after kata-deploy's own drop-ins (10-installation-prefix ... 30-kernel-params,
50-user-overrides), so our GPU settings are the ones in effect. Our choice."""
KATA_MAX_PCIE_ROOT_PORTS = 16
"""Kata's ``maxPCIeRootPorts``: larger ``pcie_root_port`` values are silently cut to 16
(``src/runtime/pkg/katautils/config.go``; rationale in ``docs/design/kata-vra.md``)."""
GPU_KERNEL_PARAMS: tuple[str, ...] = ("pci=realloc", "pci=nocrs", "pci=assign-busses")
"""Guest kernel parameters of Kata's NVIDIA GPU runtime (FACTS.md): ``pci=realloc`` lets the
guest kernel re-allocate BARs the firmware placed, ``pci=nocrs`` ignores the ACPI host-bridge
windows (too small for 128-256 GiB GPU BARs), ``pci=assign-busses`` renumbers the buses behind
the root ports (Linux ``kernel-parameters.txt``)."""
KATA_NVIDIA_TIMEOUT_S = 1200
"""``create_container_timeout`` and ``dial_timeout`` of Kata's NVIDIA configurations, seconds
("The NVIDIA shim configurations use a create_container_timeout of 1200s",
``docs/use-cases/NVIDIA-GPU-passthrough-and-Kata-QEMU.md``; both keys take
``@DEFAULTTIMEOUT_NV@`` in ``configuration-qemu-nvidia-gpu.toml.in``)."""
CDI_TIMEOUT_PARAM = "agent.cdi_timeout"
"""The guest kernel parameter for the Kata agent's wait for the guest CDI spec, seconds
(kata-containers PR 10878; default 100 s, issue 10891)."""
AGENT_WAIT_PHASES = (
    "guest pci enumeration",
    "vfio bar mapping",
    "guest driver init",
    "guest cdi spec",
)
"""The :func:`boot_budget` phases the Kata agent spends waiting for the guest's GPUs and their
CDI spec, which ``agent.cdi_timeout`` bounds (the phases ``_boot.py`` counts for it)."""


@dataclass(frozen=True)
class KataGpuDropIn:
    """A Kata drop-in for GPU passthrough: ``text`` to install at ``path``; the
    ``kernel_params`` it sets; the kubelet ``runtimeRequestTimeout`` it needs (seconds); and
    ``notes`` the operator must read."""

    text: str
    path: str
    kernel_params: str
    kubelet_timeout_s: int
    notes: tuple[str, ...]

    @property
    def kubelet_runtime_request_timeout(self) -> str:
        """:attr:`kubelet_timeout_s` as a KubeletConfiguration duration (``"7m"``)."""
        return duration(self.kubelet_timeout_s)


def duration(seconds: int) -> str:
    """A Go/Kubernetes duration string: whole minutes as ``"7m"``, else ``"7m30s"``/``"45s"``."""
    minutes, rest = divmod(seconds, 60)
    if minutes and not rest:
        return f"{minutes}m"
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def kubelet_runtime_request_timeout(
    gpus: int,
    *,
    hugepages: bool = True,
    memory_gib: float | None = None,
    base_memory_gib: float = KATA_BASE_MEMORY_GIB,
    bar_gib: int = H200_BAR_GIB,
) -> int:
    """The kubelet ``runtimeRequestTimeout``, in seconds, for Kata VMs with up to ``gpus`` GPUs.

    ``TIMEOUT_MARGIN`` x the :func:`boot_budget` estimate, rounded up to whole minutes (as the
    budget's own recommendation), never below the kubelet's 2-minute default. The defaults are
    the largest VM of that size: ``vm_memory_for(gpus)`` of tenant memory and H200 BARs (256
    GiB; the board model cannot tell H100 from H200). With hugepages: 3m for 1 GPU, 8m for 8;
    without, 5m and 23m. Raises :class:`InvalidVmSpec` as :func:`boot_budget` does.
    """
    return _timeouts(_budget(gpus, hugepages, memory_gib, base_memory_gib, bar_gib))[0]


def _budget(
    gpus: int, hugepages: bool, memory_gib: float | None, base_memory_gib: float, bar_gib: int
) -> BootBudget:
    return boot_budget(
        gpus,
        memory_gib,
        hugepages="1Gi" if hugepages else "none",
        bar_gib=bar_gib,
        base_memory_gib=base_memory_gib,
    )


def _timeouts(budget: BootBudget) -> tuple[int, int]:
    """(kubelet ``runtimeRequestTimeout``, agent ``cdi_timeout``) in seconds for ``budget``."""
    kubelet = math.ceil(TIMEOUT_MARGIN * budget.total_seconds / 60) * 60
    waits = [p.seconds for p in budget.phases if p.name in AGENT_WAIT_PHASES]
    if len(waits) != len(AGENT_WAIT_PHASES):  # pragma: no cover - _boot.py renamed a phase
        raise MisuseError(f"boot_budget phases changed: {[p.name for p in budget.phases]}")
    cdi = math.ceil(TIMEOUT_MARGIN * sum(waits) / 10) * 10
    return max(kubelet, int(KUBELET_RUNTIME_REQUEST_TIMEOUT_S)), max(cdi, int(KATA_CDI_TIMEOUT_S))


def kata_dropin_dir(config_path: str = KATA_CONFIG_PATH) -> PurePosixPath:
    """The ``config.d`` directory Kata reads for the configuration file ``config_path`` (give
    the resolved path if it is a symlink: Kata resolves it first)."""
    if not config_path.startswith("/"):
        raise InvalidVmSpec("config_path", config_path, "an absolute path")
    return PurePosixPath(config_path).parent / "config.d"


def effective_kernel_params(texts: Sequence[str], *, source: str = "kata config") -> str | None:
    """The ``[hypervisor.qemu] kernel_params`` in effect after Kata loads ``texts`` in order
    (the base configuration, then its drop-ins in name order); None if none sets it.

    Raises :class:`RuntimeConfigError` if a text is not TOML or the key is not a string.
    """
    params: str | None = None
    for number, text in enumerate(texts):
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RuntimeConfigError(
                f"{source} #{number + 1}", f"not valid TOML: {exc}", "fix the file"
            ) from exc
        value: Any = data.get("hypervisor", {}).get("qemu", {}).get("kernel_params")
        if value is None:
            continue
        if not isinstance(value, str):
            raise RuntimeConfigError(
                f"{source} #{number + 1}",
                f"[hypervisor.qemu] kernel_params is {value!r}, not a string",
                "fix the file: Kata would not load it",
            )
        params = value
    return params


def gpu_kernel_params(base: str | None, extra: Iterable[str] = (), also: Iterable[str] = ()) -> str:
    """``base``'s parameters, then ``extra``'s, then :data:`GPU_KERNEL_PARAMS` and ``also``,
    each once.

    Appends and never drops: a parameter given twice keeps its first place.
    """
    tokens: list[str] = []
    for token in [*(base or "").split(), *_split(extra), *GPU_KERNEL_PARAMS, *_split(also)]:
        if token not in tokens:
            tokens.append(token)
    return " ".join(tokens)


def kata_gpu_dropin(
    *,
    gpus: int = HGX_GPUS,
    pcie_root_ports: int = HGX_GPUS,
    memory_gib: int = KATA_BASE_MEMORY_GIB,
    vcpus: int = KATA_BASE_VCPUS,
    hugepages: bool = True,
    kernel_params: Sequence[str] = (),
    base_kernel_params: str | None = None,
    timeout_s: int | None = None,
    bar_gib: int = H200_BAR_GIB,
    config_path: str = KATA_CONFIG_PATH,
) -> KataGpuDropIn:
    """The Kata drop-in for VMs with up to ``gpus`` cold-plugged GPUs.

    Parameters:
        gpus: the largest VM this configuration must boot (1 to :data:`HGX_GPUS`).
        pcie_root_ports: ``pcie_root_port``; at least ``gpus``, at most 16 (Kata's cap).
        memory_gib, vcpus: ``default_memory`` (written in MiB) and ``default_vcpus``, the VM's
            base that Kata adds the pod's limits to (the RuntimeClass overhead assumes the
            defaults, :data:`KATA_BASE_MEMORY_GIB` and :data:`KATA_BASE_VCPUS`).
        hugepages: ``enable_hugepages`` (the host must reserve them; see the notes).
        kernel_params: more guest kernel parameters; each string may hold several. Unless
            they (or the base) set ``agent.cdi_timeout``, it is added when the boot budget's
            agent wait needs more than Kata's 100 s.
        base_kernel_params: the ``kernel_params`` in effect without this drop-in (see
            :func:`effective_kernel_params`); kept, since a drop-in's value replaces it.
        timeout_s: ``dial_timeout`` and ``create_container_timeout``; default the larger of
            Kata's NVIDIA value (1200 s) and the kubelet timeout recommended for ``gpus``.
        bar_gib: each GPU's BAR1 in GiB, for the boot budget (H200's 256 by default).
        config_path: the Kata configuration file the drop-in belongs to.

    Raises :class:`InvalidVmSpec` for a value out of range (the message names it).
    """
    _check_gpus(gpus)
    if (
        isinstance(pcie_root_ports, bool)
        or not isinstance(pcie_root_ports, int)
        or not gpus <= pcie_root_ports <= KATA_MAX_PCIE_ROOT_PORTS
    ):
        raise InvalidVmSpec(
            "pcie_root_ports",
            pcie_root_ports,
            f"from {gpus} (one root port per GPU of a {gpus}-GPU VM) to "
            f"{KATA_MAX_PCIE_ROOT_PORTS} (Kata's maximum)",
        )
    if isinstance(memory_gib, bool) or not isinstance(memory_gib, int) or memory_gib < 1:
        raise InvalidVmSpec("memory_gib", memory_gib, "a whole number of GiB, at least 1")
    if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
        raise InvalidVmSpec("vcpus", vcpus, "a whole number of vCPUs, at least 1")
    for param in _split(kernel_params):
        if not re.fullmatch(r"[^\s\"'\\]+", param):
            raise InvalidVmSpec("kernel_params", param, "parameters without quotes or backslashes")
    budget = _budget(gpus, hugepages, None, memory_gib, bar_gib)
    kubelet_s, cdi_s = _timeouts(budget)
    if timeout_s is None:
        timeout_s = max(KATA_NVIDIA_TIMEOUT_S, kubelet_s)
    elif isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s < kubelet_s:
        raise InvalidVmSpec(
            "timeout_s",
            timeout_s,
            f"at least {kubelet_s} s, the kubelet timeout a {gpus}-GPU boot needs "
            "(Kata's own timeouts must not cut it shorter)",
        )
    directory = kata_dropin_dir(config_path)
    given = [*(base_kernel_params or "").split(), *_split(kernel_params)]
    cdi = (
        []
        if cdi_s <= KATA_CDI_TIMEOUT_S or any(p.startswith(f"{CDI_TIMEOUT_PARAM}=") for p in given)
        else [f"{CDI_TIMEOUT_PARAM}={cdi_s}"]
    )
    params = gpu_kernel_params(base_kernel_params, kernel_params, cdi)

    doc = tomlkit.document()
    doc.add(tomlkit.comment("Generated by `gpucaas node runtime-config kata`: GPU passthrough"))
    doc.add(tomlkit.comment(f"for Kata VMs with up to {gpus} GPUs. Install as"))
    doc.add(tomlkit.comment(f"  {directory / KATA_DROPIN_NAME}"))
    doc.add(tomlkit.comment("Kata applies config.d/* after the base file, in name order."))
    doc.add(tomlkit.nl())
    qemu = tomlkit.table()
    qemu.add(tomlkit.comment("Cold-plug each GPU into its own PCIe root port; no hot plug."))
    qemu.add("cold_plug_vfio", "root-port")
    qemu.add("hot_plug_vfio", "no-port")
    qemu.add("pcie_root_port", pcie_root_ports)
    qemu.add(tomlkit.comment("The VM's base; Kata adds the pod's limits (MiB, vCPUs)."))
    qemu.add("default_memory", memory_gib * 1024)
    qemu.add("default_vcpus", vcpus)
    qemu.add("enable_hugepages", hugepages)
    qemu.add(tomlkit.comment("Replaces the base file's kernel_params: it repeats them first."))
    qemu.add("kernel_params", params)
    hypervisor = tomlkit.table(is_super_table=True)
    hypervisor.add("qemu", qemu)
    doc.add("hypervisor", hypervisor)
    agent = tomlkit.table()
    agent.add(tomlkit.comment("Seconds; the agent starts after the guest driver saw every GPU."))
    agent.add("dial_timeout", timeout_s)
    agent_super = tomlkit.table(is_super_table=True)
    agent_super.add("kata", agent)
    doc.add("agent", agent_super)
    runtime = tomlkit.table()
    runtime.add(tomlkit.comment("Seconds; the kubelet's runtimeRequestTimeout must be at least"))
    runtime.add(tomlkit.comment(f"{duration(kubelet_s)} too: the shorter of the two wins."))
    runtime.add("create_container_timeout", timeout_s)
    doc.add("runtime", runtime)
    text = tomlkit.dumps(doc)

    notes = [
        f"install as {directory / KATA_DROPIN_NAME}; Kata reads it on the next pod start",
        f"set the kubelet's runtimeRequestTimeout to at least {duration(kubelet_s)} "
        f"(KubeletConfiguration; the 2m default is too short for {gpus}-GPU boots) and "
        "restart the kubelet",
    ]
    if directory.parent.name == "kata-containers":
        notes.append(
            f"{directory} is shared by every configuration-*.toml in {directory.parent}, so "
            "these settings reach the other Kata runtimes there too; use kata-deploy's "
            "per-runtime layout (.../kata-containers/runtimes/qemu-nvidia-gpu/) or a copy of "
            "the configuration in a directory of its own"
        )
    if base_kernel_params is None:
        notes.append(
            "the base configuration's kernel_params were not read: this drop-in's kernel_params "
            "replace them; pass the base configuration to keep them"
        )
    if hugepages:
        notes.append(
            "enable_hugepages: reserve hugepages on the host for every VM's memory (e.g. "
            "hugepagesz=1G hugepages=N on the kernel command line) and request hugepages-1Gi "
            "in the pods, or pass --no-hugepages"
        )
    if memory_gib != KATA_BASE_MEMORY_GIB or vcpus != KATA_BASE_VCPUS:
        notes.append(
            f"the RuntimeClass overhead model assumes {KATA_BASE_MEMORY_GIB} GiB and "
            f"{KATA_BASE_VCPUS} vCPU of VM base; with {memory_gib} GiB / {vcpus} vCPU, "
            "re-check the overhead in deploy/runtimeclass.yaml"
        )
    return KataGpuDropIn(
        text=text,
        path=str(directory / KATA_DROPIN_NAME),
        kernel_params=params,
        kubelet_timeout_s=kubelet_s,
        notes=tuple(notes),
    )


def _check_gpus(gpus: int) -> None:
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= HGX_GPUS:
        raise InvalidVmSpec("gpus", gpus, f"a GPU count from 1 to {HGX_GPUS}")


def _split(params: Iterable[str]) -> list[str]:
    return [token for param in params for token in param.split()]
