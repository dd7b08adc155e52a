"""CDI (Container Device Interface) specs for the Kata cold-plug path.

Why this package exists: the Kata shim resolves the kubelet's ``<resource>=<device id>`` names
through the CDI spec files in ``/var/run/cdi`` to ``/dev/vfio/...`` nodes and from there to the
GPU's BDF. The spec we write must therefore be one the reference library
(cncf-tags/container-device-interface) accepts, or the pod never starts. We write our own
reader and checker from the published definitions instead of shelling out to a Go tool,
because the node agent must validate before it writes and report every problem at once.

What it covers (CDI spec 1.1.0, ``specs-go/config.go``):

* typed, frozen values for every field of a spec (:class:`CdiSpec`, :class:`CdiDevice`,
  :class:`ContainerEdits`, :class:`DeviceNode`, :class:`Mount`, :class:`Hook`,
  :class:`IntelRdt`, :class:`NetDevice`), with :meth:`CdiSpec.to_json` and
  :meth:`CdiSpec.from_json`;
* :func:`minimum_version`, the lowest ``cdiVersion`` the used fields need, by the rules of
  ``specs-go/version.go`` (``requiresV040`` ... ``requiresV110``);
* :func:`validate`, which returns every :class:`Violation` (code, location, message) instead
  of stopping at the first, including devices that another spec file in the same directory
  also defines (the CDI cache then refuses both);
* :func:`qualified_name` and :func:`spec_file_name`, the CDI names;
* :func:`build_gpu_spec` and :func:`write_spec` for the spec the device plugin needs.

What it refuses to do: write a spec with any error-level violation, guess module IDs, or put
both the legacy VFIO container and the iommufd nodes in one spec (see :func:`build_gpu_spec`).
Importing it loads neither YAML nor gRPC: the control plane uses :func:`qualified_name`.
"""

from gpucaas.errors import own_errors

from ._build import IOMMU_DEVICE, VFIO_CONTAINER, build_gpu_spec
from ._errors import CdiError
from ._model import (
    CdiDevice,
    CdiSpec,
    ContainerEdits,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Violation,
    ViolationCode,
)
from ._names import qualified_name, spec_file_name
from ._validate import validate
from ._versions import minimum_version
from ._write import CDI_SPEC_DIR, write_spec

__all__ = [
    "CDI_SPEC_DIR",
    "IOMMU_DEVICE",
    "VFIO_CONTAINER",
    "CdiDevice",
    "CdiError",
    "CdiSpec",
    "ContainerEdits",
    "DeviceNode",
    "Hook",
    "IntelRdt",
    "Mount",
    "NetDevice",
    "Violation",
    "ViolationCode",
    "build_gpu_spec",
    "minimum_version",
    "qualified_name",
    "spec_file_name",
    "validate",
    "write_spec",
]

own_errors(globals())
