"""Node agent: everything that runs on one HGX host, in parts named for what they talk to.

* :mod:`gpucaas.node.discovery`: the NVIDIA PCI devices sysfs shows;
* :mod:`gpucaas.node.modulemap`: the module-ID -> PCI address map, captured from nvidia-smi;
* :mod:`gpucaas.node.vfio`: moving GPUs and NVSwitches to vfio-pci and back;
* :mod:`gpucaas.node.health`: whether a GPU is fit to hand out, and the node annotation
  that tells the control plane which are not (light: no gRPC);
* :mod:`gpucaas.node.deviceplugin`: the partition-aware kubelet device plugin (gRPC);
* CDI specs are the top-level :mod:`gpucaas.cdi`.

Here: this node's GPUs as the kubelet sees them (:func:`kubelet_gpus`, discovery joined
with the module-ID map), their CDI spec (:func:`gpu_cdi_spec`) and the board-level partition
choice in kubelet device IDs (:class:`PartitionChoice`), which every kubelet plugin shares.
Importing this package loads neither gRPC nor YAML; the subpackages load what they need.
"""

from gpucaas.errors import own_errors

from ._choice import PartitionChoice
from ._gpus import KubeletGpu, gpu_cdi_spec, kubelet_gpus

__all__ = ["KubeletGpu", "PartitionChoice", "gpu_cdi_spec", "kubelet_gpus"]

own_errors(globals())
