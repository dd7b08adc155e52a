"""Kata runtime sizing: what a GPU microVM costs the host, and the RuntimeClass that says so.

Pure: no I/O. :func:`boot_budget` estimates, phase by phase, how long a Kata GPU VM takes
to boot (from published measurements, in ``_boot.py``). :func:`runtime_overhead` models the
per-VM memory and CPU beyond the tenant's limits (each term and its source are documented
in ``_overhead.py``), :func:`vm_memory_for` gives the default VM memory per partition size,
and :func:`runtime_class` builds the Kubernetes object that ``deploy/runtimeclass.yaml``
holds. :func:`containerd_dropin` / :func:`merge_containerd_config` write the containerd
configuration of the Kata GPU runtime (``_containerd.py``) and :func:`kata_gpu_dropin` the
Kata configuration drop-in for GPU passthrough (``_kata.py``).
"""

from gpucaas.errors import own_errors

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
from ._containerd import (
    CDI_SPEC_DIRS,
    DROPIN_PATH,
    KATA_CONFIG_PATH,
    KATA_POD_ANNOTATIONS,
    KATA_RUNTIME_TYPE,
    KATA_SHIM_PATH,
    RUNC_RUNTIME_TYPE,
    Change,
    ContainerdVersion,
    DropIn,
    KataRuntime,
    Merged,
    containerd_dropin,
    merge_containerd_config,
    runtime_handlers,
)
from ._errors import InvalidVmSpec, RuntimeConfigError
from ._kata import (
    AGENT_WAIT_PHASES,
    CDI_TIMEOUT_PARAM,
    GPU_KERNEL_PARAMS,
    KATA_DROPIN_NAME,
    KATA_MAX_PCIE_ROOT_PORTS,
    KATA_NVIDIA_TIMEOUT_S,
    KataGpuDropIn,
    duration,
    effective_kernel_params,
    gpu_kernel_params,
    kata_dropin_dir,
    kata_gpu_dropin,
    kubelet_runtime_request_timeout,
)
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
    "AGENT_WAIT_PHASES",
    "CDI_SPEC_DIRS",
    "CDI_TIMEOUT_PARAM",
    "DEFAULT_VCPUS",
    "DROPIN_PATH",
    "GPU_BAR_GIB",
    "GPU_KERNEL_PARAMS",
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
    "KATA_CONFIG_PATH",
    "KATA_DROPIN_NAME",
    "KATA_MAX_PCIE_ROOT_PORTS",
    "KATA_NVIDIA_TIMEOUT_S",
    "KATA_POD_ANNOTATIONS",
    "KATA_RUNTIME_TYPE",
    "KATA_SHIM_PATH",
    "RUNC_RUNTIME_TYPE",
    "RUNTIME_CLASS_NAME",
    "TARGET_SECONDS",
    "VM_MEMORY_PER_GPU_GIB",
    "BootBudget",
    "BootPhase",
    "Change",
    "ContainerdVersion",
    "DropIn",
    "InvalidVmSpec",
    "KataGpuDropIn",
    "KataRuntime",
    "Merged",
    "Overhead",
    "RuntimeConfigError",
    "bar_gib_for",
    "boot_budget",
    "containerd_dropin",
    "duration",
    "effective_kernel_params",
    "gpu_kernel_params",
    "kata_dropin_dir",
    "kata_gpu_dropin",
    "kubelet_runtime_request_timeout",
    "memory_gib_from",
    "merge_containerd_config",
    "runtime_class",
    "runtime_handlers",
    "runtime_overhead",
    "vm_memory_for",
]

own_errors(globals())
