"""The per-node map from GPU module ID to PCI address.

Fabric Manager partitions name GPUs by *module ID* (1-8, set by the HGX baseboard's
strapping), and module IDs do not follow PCI order: on a typical HGX H100 the GPU on bus 0x18
is module 2 and the one on bus 0x3a is module 1. The node agent therefore needs, per node, the
map module ID -> BDF (and UUID). Only the NVIDIA driver knows it, so the map is captured once
(:func:`capture`, from ``nvidia-smi -q -x``) while the driver is still bound, stored
(:func:`save`), and read back (:func:`load`) after the GPUs have moved to vfio-pci, where
``nvidia-smi`` cannot see them. Module IDs are never inferred from PCI order.
"""

from gpucaas.errors import own_errors

from ._errors import ModuleMapError, ModuleMapMissing, NvidiaSmiUnavailable
from ._map import (
    DEFAULT_MAP_PATH,
    MAP_DOCUMENT_KIND,
    MAP_DOCUMENT_VERSION,
    ModuleEntry,
    ModuleMap,
    load,
    save,
    validate,
)
from ._nvidia_smi import capture, parse_nvidia_smi_xml

__all__ = [
    "DEFAULT_MAP_PATH",
    "MAP_DOCUMENT_KIND",
    "MAP_DOCUMENT_VERSION",
    "ModuleEntry",
    "ModuleMap",
    "ModuleMapError",
    "ModuleMapMissing",
    "NvidiaSmiUnavailable",
    "capture",
    "load",
    "parse_nvidia_smi_xml",
    "save",
    "validate",
]

own_errors(globals())
