"""VFIO preparation: move GPUs (and NVSwitches) to vfio-pci, or give them back to the host.

Why this package exists: a GPU can only be cold-plugged into a tenant's VM when every device
of its IOMMU group is owned by vfio-pci (VFIO hands out whole groups). Moving a device is
three writes to sysfs, in this order, the way the kernel documents for ``driver_override``:

1. ``vfio-pci`` into ``bus/pci/devices/<bdf>/driver_override`` (so no other driver can take it);
2. the BDF into ``bus/pci/drivers/<current driver>/unbind`` (skipped when it has none);
3. the BDF into ``bus/pci/drivers_probe`` (the kernel binds the override driver).

Giving it back is the reverse: clear ``driver_override`` (write a newline), unbind from
vfio-pci, probe (the kernel binds the device's default driver, if one is loaded).

The work is split so each piece can be checked on its own:

* :func:`read_host` reads a :class:`PciHost` snapshot: discovery plus the driver, class and
  ``driver_override`` of every member of the NVIDIA devices' IOMMU groups;
* :func:`plan` is pure: it turns a snapshot into the ordered writes per device, for every
  device of each touched group that must move with it, skipping what is already done (so a
  second run plans nothing), and refusing groups it must not touch;
* :func:`apply` asks the :class:`SysfsKernel` seam whether anything holds the devices, runs
  the steps, re-reads sysfs and checks each group is complete, and reports what changed;
* :func:`status` says, per GPU and NVSwitch, whether its group is ready for VFIO.

:class:`SysfsKernel` has two implementations: :class:`LinuxSysfs`, which writes the files
(that *is* the kernel's interface), and :class:`FixtureKernel`, which performs the same writes
on a fixture tree and then does what the kernel would do.

What it refuses to do: take a non-NVIDIA device from its host driver (a NIC or NVMe drive that
shares a GPU's IOMMU group is named in the error, and nothing is written); unbind a device a
process holds (a VM with ``/dev/vfio/<group>`` open, a CUDA process on ``/dev/nvidiaN``): the
kernel would block in the unbind, not fail; bind a device that has no IOMMU group. Bridges in a
group stay on their driver: the kernel allows them in a VFIO group.
"""

from gpucaas.errors import own_errors

from ._api import SysfsKernel
from ._apply import VfioResult, apply
from ._errors import DeviceInUse, KernelWriteError, UnknownDevice, VfioError
from ._host import PciHost, read_host
from ._kernels import FixtureKernel, LinuxSysfs
from ._plan import VfioAction, VfioPlan, plan
from ._status import VfioStatus, status

__all__ = [
    "DeviceInUse",
    "FixtureKernel",
    "KernelWriteError",
    "LinuxSysfs",
    "PciHost",
    "SysfsKernel",
    "UnknownDevice",
    "VfioAction",
    "VfioError",
    "VfioPlan",
    "VfioResult",
    "VfioStatus",
    "apply",
    "plan",
    "read_host",
    "status",
]

own_errors(globals())
