"""VFIO preparation: move GPUs (and NVSwitches) to vfio-pci, or give them back to the host.

Why this module exists: a GPU can only be cold-plugged into a tenant's VM when every device of
its IOMMU group is owned by vfio-pci (VFIO hands out whole groups). Moving a device is three
writes to sysfs, in this order, the way the kernel documents for ``driver_override``:

1. ``vfio-pci`` into ``bus/pci/devices/<bdf>/driver_override`` (so no other driver can take it);
2. the BDF into ``bus/pci/drivers/<current driver>/unbind`` (skipped when it has none);
3. the BDF into ``bus/pci/drivers_probe`` (the kernel binds the override driver).

Giving it back is the reverse: clear ``driver_override`` (write a newline), unbind from
vfio-pci, probe (the kernel binds the device's default driver, if one is loaded).

The work is split so each piece can be checked on its own:

* :func:`read_host` reads a :class:`PciHost` snapshot: discovery plus the driver, class and
  ``driver_override`` of every member of the NVIDIA devices' IOMMU groups;
* :func:`plan` is pure: it turns a snapshot into the ordered :class:`VfioStep` writes per
  device, for every device of each touched group that must move with it, skipping what is
  already done (so a second run plans nothing), and refusing groups it must not touch;
* :func:`apply` asks the :class:`SysfsKernel` seam whether anything holds the devices, runs
  the steps, re-reads sysfs and checks each group is complete, and reports what changed;
* :func:`status` says, per GPU and NVSwitch, whether its group is ready for VFIO.

:class:`SysfsKernel` has two implementations: :class:`LinuxSysfs`, which writes the files
(that *is* the kernel's interface), and :class:`FixtureKernel`, which performs the same writes
on a fixture tree and then does what the kernel would do (links and unlinks ``driver``, creates
the iommufd cdev, refuses to unbind a device in use with EBUSY).

What it refuses to do: take a non-NVIDIA device from its host driver (a NIC or NVMe drive that
shares a GPU's IOMMU group is named in the error, and nothing is written); unbind a device a
process holds (a VM with ``/dev/vfio/<group>`` open, a CUDA process on ``/dev/nvidiaN``): the
kernel would block in the unbind, not fail; bind a device that has no IOMMU group. Bridges in a
group stay on their driver: the kernel allows them in a VFIO group.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, Protocol

from gpucaas.errors import Conflict, InvalidRequest, MisuseError, Unavailable

from ._discovery import SYSFS_ROOT, VFIO_PCI, discover, is_vfio_driver
from ._types import BDF, NVIDIA_VENDOR_ID, DeviceKind, Discovery, NvidiaDevice, parse_bdf

__all__ = [
    "FIXTURE_LOADED_DRIVERS",
    "PROC_ROOT",
    "DeviceChange",
    "DeviceInUse",
    "DeviceMove",
    "DeviceVfioState",
    "FixtureKernel",
    "GroupCheck",
    "KernelWriteError",
    "LinuxSysfs",
    "PciFunction",
    "PciHost",
    "VfioStep",
    "VfioStepKind",
    "SysfsKernel",
    "UnknownDevice",
    "VfioAction",
    "VfioError",
    "VfioPlan",
    "VfioProblem",
    "VfioResult",
    "VfioStatus",
    "apply",
    "plan",
    "read_host",
    "status",
]

PROC_ROOT: Final = Path("/proc")
"""Where :class:`LinuxSysfs` looks for processes holding a device (``/proc/<pid>/fd``)."""

_PCI_STUB: Final = "pci-stub"
"""A placeholder driver that parks a device for assignment; the kernel accepts it in a VFIO
group, so a member on pci-stub is left where it is."""
_BRIDGE_CLASSES: Final = frozenset({0x0604, 0x0607, 0x0609})
"""PCI-PCI, CardBus and semi-transparent bridges (class >> 8): they stay on their driver."""
_NO_OVERRIDE: Final = "(null)"
"""What the kernel shows in ``driver_override`` when none is set."""


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class VfioProblem:
    """One reason a device cannot be moved: the device and a sentence with what to do."""

    bdf: BDF
    message: str

    def __str__(self) -> str:
        return self.message


class VfioError(Conflict):
    """The devices cannot be moved as asked; each problem names its device and what to do.

    A :class:`~gpucaas.errors.Conflict`: the host's state (a device in the group, a driver,
    a process) stands in the way. ``changed`` lists devices already moved when the error
    came part-way through :func:`apply` (empty when nothing was written).
    """

    def __init__(
        self, action: str, problems: Sequence[VfioProblem], changed: Sequence[BDF] = ()
    ) -> None:
        super().__init__(action, tuple(problems), tuple(changed))
        self.action = action
        self.problems = tuple(problems)
        self.changed = tuple(changed)

    @property
    def bdfs(self) -> tuple[BDF, ...]:
        return tuple(p.bdf for p in self.problems)

    def __str__(self) -> str:
        text = f"cannot {self.action}: " + "; ".join(p.message for p in self.problems)
        if self.changed:
            text += (
                f"; already changed before stopping: {', '.join(self.changed)} "
                "(run the command again once the cause is fixed, or run the opposite one)"
            )
        else:
            text += "; nothing was changed"
        return text


class DeviceInUse(VfioError):
    """A process holds a device (or the kernel answered EBUSY), so it was not unbound."""


class UnknownDevice(InvalidRequest):
    """A ``--device`` address is no GPU or NVSwitch found under the sysfs root."""

    def __init__(self, bdf: str, sysfs_root: Path) -> None:
        super().__init__(bdf, sysfs_root)
        self.bdf = bdf
        self.sysfs_root = sysfs_root

    def __str__(self) -> str:
        return (
            f"no NVIDIA GPU or NVSwitch at {self.bdf} under {self.sysfs_root}; "
            "`gpucaas node inspect` lists the devices this host has"
        )


class KernelWriteError(Unavailable):
    """A sysfs write failed for a reason other than a busy device (names the file)."""

    def __init__(self, path: Path, reason: str, hint: str) -> None:
        super().__init__(path, reason, hint)
        self.path = path
        self.reason = reason
        self.hint = hint

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.reason}; {self.hint}"


# --------------------------------------------------------------------------- host snapshot


@dataclass(frozen=True, slots=True)
class PciFunction:
    """What binding needs to know about one PCI function, NVIDIA or not."""

    bdf: BDF
    vendor_id: int | None
    class_code: int | None
    """24-bit class code; None when unreadable."""
    driver: str | None
    driver_override: str | None
    """None when no override is set (sysfs shows ``(null)``)."""
    iommu_group: int | None

    @property
    def is_nvidia(self) -> bool:
        return self.vendor_id == NVIDIA_VENDOR_ID

    @property
    def is_bridge(self) -> bool:
        return self.class_code is not None and self.class_code >> 8 in _BRIDGE_CLASSES

    @property
    def on_vfio(self) -> bool:
        return is_vfio_driver(self.driver)


@dataclass(frozen=True, slots=True)
class PciHost:
    """A snapshot of a host for VFIO decisions: discovery plus every group member's state."""

    sysfs_root: Path
    discovery: Discovery
    functions: Mapping[BDF, PciFunction]
    """Every NVIDIA device and every member of their IOMMU groups."""

    def group(self, group: int) -> tuple[PciFunction, ...]:
        """The members of IOMMU group ``group`` (any vendor), in PCI order."""
        return tuple(
            sorted(
                (f for f in self.functions.values() if f.iommu_group == group), key=lambda f: f.bdf
            )
        )


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_hex(path: str) -> int | None:
    text = _read_text(path)
    try:
        return None if text is None else int(text, 16)
    except ValueError:
        return None


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _read_function(devices_dir: str, bdf: BDF, group: int | None) -> PciFunction:
    base = os.path.join(devices_dir, bdf)
    override = _read_text(f"{base}/driver_override")
    return PciFunction(
        bdf=bdf,
        vendor_id=_read_hex(f"{base}/vendor"),
        class_code=_read_hex(f"{base}/class"),
        driver=_link_name(f"{base}/driver"),
        driver_override=None if override in (None, "", _NO_OVERRIDE) else override,
        iommu_group=group,
    )


def read_host(sysfs_root: Path = SYSFS_ROOT) -> PciHost:
    """Discover the NVIDIA devices under ``sysfs_root`` and read each group member's state.

    Raises :class:`~gpucaas.node.DiscoveryError` when there is no PCI tree under the root.
    """
    root = Path(sysfs_root)
    discovery = discover(root)
    devices_dir = str(root / "bus" / "pci" / "devices")
    functions: dict[BDF, PciFunction] = {}
    for device in discovery.devices:
        functions[device.bdf] = _read_function(devices_dir, device.bdf, device.iommu_group)
        for member in device.iommu_group_members:
            if member not in functions:
                functions[member] = _read_function(devices_dir, member, device.iommu_group)
    return PciHost(sysfs_root=root, discovery=discovery, functions=functions)


# --------------------------------------------------------------------------- the seam


class SysfsKernel(Protocol):
    """The few kernel actions VFIO binding needs. Each is one sysfs write (or a read).

    Methods raise :class:`DeviceInUse` when the kernel answers EBUSY and
    :class:`KernelWriteError` for any other failed write. None is idempotent by itself:
    :func:`plan` decides which to call, in the order given in the module docstring.
    """

    @property
    def root(self) -> Path:
        """The sysfs root the writes go to."""
        ...

    def set_driver_override(self, bdf: BDF, driver: str | None) -> None:
        """Write ``driver`` to the device's ``driver_override``; None clears it."""
        ...

    def unbind(self, bdf: BDF, driver: str) -> None:
        """Write ``bdf`` to ``bus/pci/drivers/<driver>/unbind``."""
        ...

    def probe(self, bdf: BDF) -> None:
        """Write ``bdf`` to ``bus/pci/drivers_probe`` so the kernel binds a driver to it."""
        ...

    def holders(self, function: PciFunction) -> tuple[str, ...]:
        """Who holds the device open, one line each (``qemu (pid 4242): /dev/vfio/38``).

        Asked before any unbind: unbinding a device in use blocks in the kernel until the
        holder lets go, it does not fail.
        """
        ...


def _pci(root: Path) -> Path:
    return root / "bus" / "pci"


@contextmanager
def _map_write_errors(path: Path, bdf: BDF, action: str) -> Iterator[None]:
    """Turn the OSError of a sysfs write into our errors (EBUSY: :class:`DeviceInUse`)."""
    try:
        yield
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        if exc.errno == errno.EBUSY:
            raise DeviceInUse(
                action,
                [
                    VfioProblem(
                        bdf,
                        f"the kernel refused to release {bdf} ({reason}): a process or the "
                        "driver still holds it; stop the VM or the CUDA processes using it, "
                        "then run the command again",
                    )
                ],
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "run as root, on the host (in a container: mount /sys read-write)"
        elif exc.errno == errno.ENOENT and "drivers" in path.parts[:-1]:
            hint = f"is the driver loaded? (`modprobe {path.parent.name.replace('-', '_')}`)"
        elif exc.errno == errno.ENOENT:
            hint = "is this a sysfs root, and is the device still on the bus?"
        else:
            hint = "check `dmesg` for what the kernel said"
        raise KernelWriteError(path, reason, hint) from exc


def _write_attr(path: Path, text: str) -> None:
    """One ``write()`` to an existing attribute file, as ``echo text > path`` does."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)


class LinuxSysfs:
    """The real kernel: each action is the sysfs write the kernel documents, nothing more.

    ``proc`` is where :meth:`holders` looks for open file descriptors; it needs root to see
    other users' processes (a process it cannot see is not reported).
    """

    def __init__(self, root: Path = SYSFS_ROOT, *, proc: Path = PROC_ROOT) -> None:
        self._root = Path(root)
        self._proc = Path(proc)

    @property
    def root(self) -> Path:
        return self._root

    def set_driver_override(self, bdf: BDF, driver: str | None) -> None:
        path = _pci(self._root) / "devices" / bdf / "driver_override"
        with _map_write_errors(path, bdf, "set driver_override"):
            _write_attr(path, "\n" if driver is None else driver)

    def unbind(self, bdf: BDF, driver: str) -> None:
        path = _pci(self._root) / "drivers" / driver / "unbind"
        with _map_write_errors(path, bdf, f"unbind {bdf} from {driver}"):
            _write_attr(path, bdf)

    def probe(self, bdf: BDF) -> None:
        path = _pci(self._root) / "drivers_probe"
        with _map_write_errors(path, bdf, f"probe {bdf}"):
            _write_attr(path, bdf)

    def holders(self, function: PciFunction) -> tuple[str, ...]:
        nodes = self._device_nodes(function)
        if not nodes:
            return ()
        found: list[str] = []
        try:
            pids = [p for p in os.listdir(self._proc) if p.isdigit()]
        except OSError:
            return ()
        for pid in sorted(pids, key=int):
            fd_dir = os.path.join(self._proc, pid, "fd")
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue  # gone, or another user's process
            for fd in fds:
                target = _link_target(os.path.join(fd_dir, fd))
                if target in nodes:
                    comm = _read_text(os.path.join(self._proc, pid, "comm")) or "?"
                    found.append(f"{comm} (pid {pid}): {target}")
        return tuple(dict.fromkeys(found))

    def _device_nodes(self, function: PciFunction) -> frozenset[str]:
        """The /dev nodes through which a process can hold this device."""
        nodes: set[str] = set()
        if function.on_vfio and function.iommu_group is not None:
            nodes.add(f"/dev/vfio/{function.iommu_group}")
            vfio_dev = _pci(self._root) / "devices" / function.bdf / "vfio-dev"
            try:
                nodes.update(f"/dev/vfio/devices/{n}" for n in os.listdir(vfio_dev))
            except OSError:
                pass
        if function.driver == "nvidia":
            info = _read_text(
                str(self._proc / "driver" / "nvidia" / "gpus" / function.bdf / "information")
            )
            match = re.search(r"Device Minor:\s*(\d+)", info or "")
            if match:
                nodes.add(f"/dev/nvidia{match.group(1)}")
        return frozenset(nodes)


def _link_target(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


_DEFAULT_DRIVER_BY_CLASS: Final = {
    0x0302: "nvidia",  # GPU (3D controller)
    0x0680: "nvidia",  # NVSwitch (other bridge)
    0x0108: "nvme",
    0x0200: "mlx5_core",
    0x0207: "mlx5_core",
    0x0604: "pcieport",
}
"""The driver :class:`FixtureKernel` binds on probe when no override is set (by class >> 8),
if that driver is loaded in the fixture."""

FIXTURE_LOADED_DRIVERS: Final = frozenset({VFIO_PCI, _PCI_STUB, "pcieport", "mlx5_core", "nvme"})
"""The drivers loaded on a gpucaas host: no ``nvidia``, which must not share GPUs between
tenants, so a GPU given back by ``unbind`` stays without a driver."""


class FixtureKernel:
    """A faithful simulation on a fixture sysfs tree (``tests/node/sysfs_fixture.py``).

    Each action writes what :class:`LinuxSysfs` writes, to the same file, then changes the
    tree as the kernel would: unbind removes the ``driver`` links (and the iommufd cdev of a
    vfio-pci device); probe binds the ``driver_override`` driver, or else the class's default
    driver, when that driver is in ``loaded_drivers`` (vfio-pci only takes devices with an
    IOMMU group). :meth:`mark_in_use` makes a device busy: :meth:`holders` reports it and an
    unbind fails with EBUSY. ``writes`` records every write as ``(path, text)``.
    """

    def __init__(
        self, root: Path, *, loaded_drivers: Iterable[str] = FIXTURE_LOADED_DRIVERS
    ) -> None:
        self._root = Path(root)
        self._real = LinuxSysfs(self._root)
        self.loaded_drivers = frozenset(loaded_drivers)
        self.writes: list[tuple[Path, str]] = []
        self._in_use: dict[BDF, str] = {}

    @property
    def root(self) -> Path:
        return self._root

    def mark_in_use(self, bdf: str, holder: str = "qemu-system-x86 (pid 4242)") -> None:
        """From now on, ``bdf`` is held by ``holder``: unbinding it fails with EBUSY."""
        self._in_use[parse_bdf(bdf)] = holder

    def release(self, bdf: str) -> None:
        """``bdf`` is no longer in use (idempotent)."""
        self._in_use.pop(parse_bdf(bdf), None)

    def set_driver_override(self, bdf: BDF, driver: str | None) -> None:
        path = _pci(self._root) / "devices" / bdf / "driver_override"
        self._record(path, "\n" if driver is None else driver)
        self._real.set_driver_override(bdf, driver)
        # The kernel stores the name without the newline and shows "(null)" when cleared.
        path.write_text(f"{driver or _NO_OVERRIDE}\n")

    def unbind(self, bdf: BDF, driver: str) -> None:
        path = _pci(self._root) / "drivers" / driver / "unbind"
        self._record(path, bdf)
        action = f"unbind {bdf} from {driver}"
        with _map_write_errors(path, bdf, action):
            if bdf in self._in_use:
                raise OSError(errno.EBUSY, "Device or resource busy", str(path))
            if _link_name(str(self._device(bdf) / "driver")) != driver:
                raise OSError(errno.ENODEV, "No such device", str(path))
        self._real.unbind(bdf, driver)
        device = self._device(bdf)
        (device / "driver").unlink()
        (_pci(self._root) / "drivers" / driver / bdf).unlink(missing_ok=True)
        if driver == VFIO_PCI:
            shutil.rmtree(device / "vfio-dev", ignore_errors=True)

    def probe(self, bdf: BDF) -> None:
        self._record(_pci(self._root) / "drivers_probe", bdf)
        self._real.probe(bdf)
        device = self._device(bdf)
        if os.path.lexists(device / "driver"):
            return  # already bound: the kernel does nothing
        override = _read_text(str(device / "driver_override"))
        if override and override != _NO_OVERRIDE:
            driver: str | None = override
        else:
            class_code = _read_hex(str(device / "class"))
            driver = None if class_code is None else _DEFAULT_DRIVER_BY_CLASS.get(class_code >> 8)
        if driver is None or driver not in self.loaded_drivers:
            return
        if driver == VFIO_PCI and not os.path.lexists(device / "iommu_group"):
            return  # vfio-pci's probe fails without an IOMMU group; the device stays unbound
        self._bind(device, bdf, driver)

    def holders(self, function: PciFunction) -> tuple[str, ...]:
        holder = self._in_use.get(function.bdf)
        return () if holder is None else (holder,)

    def _device(self, bdf: BDF) -> Path:
        """The device's real directory (``devices/pci0000:XX/...``), as the kernel resolves it."""
        return (_pci(self._root) / "devices" / bdf).resolve()

    def _record(self, path: Path, text: str) -> None:
        self.writes.append((path, text))

    def _bind(self, device: Path, bdf: BDF, driver: str) -> None:
        driver_dir = _pci(self._root) / "drivers" / driver
        (device / "driver").symlink_to(os.path.relpath(driver_dir, device))
        (driver_dir / bdf).symlink_to(os.path.relpath(device, driver_dir))
        if driver == VFIO_PCI:
            (device / "vfio-dev").mkdir(exist_ok=True)
            number = self._free_cdev()
            (device / "vfio-dev" / f"vfio{number}").mkdir()
            (device / "vfio-dev" / f"vfio{number}" / "dev").write_text(f"237:{number}\n")

    def _free_cdev(self) -> int:
        used: set[int] = set()
        for entry in (_pci(self._root) / "devices").iterdir():
            vfio_dev = entry / "vfio-dev"
            if vfio_dev.is_dir():
                used.update(int(n.name[4:]) for n in vfio_dev.iterdir() if n.name[4:].isdigit())
        return min(set(range(len(used) + 1)) - used)


# --------------------------------------------------------------------------- the plan


class VfioAction(enum.StrEnum):
    """Which way devices move."""

    BIND = "bind"
    """To vfio-pci, for passing to VMs."""
    UNBIND = "unbind"
    """Back to the host: override cleared, the kernel's default driver (if loaded)."""


class VfioStepKind(enum.StrEnum):
    """One sysfs write of a plan."""

    SET_OVERRIDE = "set-override"
    CLEAR_OVERRIDE = "clear-override"
    UNBIND = "unbind"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class VfioStep:
    """One write: ``driver`` is the override to set, or the driver to unbind from."""

    kind: VfioStepKind
    bdf: BDF
    driver: str | None = None

    def path(self, sysfs_root: Path) -> Path:
        pci = _pci(sysfs_root)
        if self.kind in (VfioStepKind.SET_OVERRIDE, VfioStepKind.CLEAR_OVERRIDE):
            return pci / "devices" / self.bdf / "driver_override"
        if self.kind is VfioStepKind.UNBIND:
            return pci / "drivers" / str(self.driver) / "unbind"
        return pci / "drivers_probe"

    @property
    def text(self) -> str:
        """What is written (a clear is a lone newline)."""
        if self.kind is VfioStepKind.SET_OVERRIDE:
            return str(self.driver)
        if self.kind is VfioStepKind.CLEAR_OVERRIDE:
            return ""
        return self.bdf

    def shell(self, sysfs_root: Path) -> str:
        """The same write as a shell command, for ``--dry-run``."""
        text = f" {self.text}" if self.text else ""
        return f"echo{text} > {self.path(sysfs_root)}"

    def run(self, kernel: SysfsKernel) -> None:
        if self.kind is VfioStepKind.SET_OVERRIDE:
            kernel.set_driver_override(self.bdf, self.driver)
        elif self.kind is VfioStepKind.CLEAR_OVERRIDE:
            kernel.set_driver_override(self.bdf, None)
        elif self.kind is VfioStepKind.UNBIND:
            kernel.unbind(self.bdf, str(self.driver))
        else:
            kernel.probe(self.bdf)


@dataclass(frozen=True, slots=True)
class DeviceMove:
    """One device that changes driver, why, and the writes that do it."""

    function: PciFunction
    """The device as it was when planned."""
    label: str
    """How messages name it: ``GPU 0000:9a:00.0``."""
    reason: str
    """``requested``, or ``in IOMMU group 38 with GPU 0000:2a:00.0``."""
    steps: tuple[VfioStep, ...]

    @property
    def bdf(self) -> BDF:
        return self.function.bdf


@dataclass(frozen=True, slots=True)
class VfioPlan:
    """What :func:`apply` will write, device by device, group by group."""

    action: VfioAction
    host: PciHost
    moves: tuple[DeviceMove, ...]
    unchanged: tuple[BDF, ...]
    """Devices of the touched groups already in the target state (bridges not counted)."""
    groups: tuple[int, ...]
    """The IOMMU groups touched, in order."""

    @property
    def steps(self) -> tuple[VfioStep, ...]:
        return tuple(step for move in self.moves for step in move.steps)

    @property
    def is_empty(self) -> bool:
        return not self.moves


def _label(host: PciHost, function: PciFunction) -> str:
    device = host.discovery.get(function.bdf)
    if device is not None and device.kind is DeviceKind.GPU:
        return f"GPU {function.bdf}"
    if device is not None and device.kind is DeviceKind.NVSWITCH:
        return f"NVSwitch {function.bdf}"
    klass = "unknown" if function.class_code is None else f"{function.class_code:#08x}"
    return f"device {function.bdf} (class {klass})"


def _bind_done(function: PciFunction) -> bool:
    """Whether a group member needs nothing for its group to be handed to VFIO."""
    return function.is_bridge or function.on_vfio or function.driver == _PCI_STUB


def _unbind_done(function: PciFunction) -> bool:
    """Whether a group member is back on the host side (not vfio-pci, no override to it)."""
    return function.is_bridge or not (function.on_vfio or is_vfio_driver(function.driver_override))


def _bind_steps(function: PciFunction) -> tuple[VfioStep, ...]:
    steps: list[VfioStep] = []
    if function.driver_override != VFIO_PCI:
        steps.append(VfioStep(VfioStepKind.SET_OVERRIDE, function.bdf, VFIO_PCI))
    if function.driver is not None:
        steps.append(VfioStep(VfioStepKind.UNBIND, function.bdf, function.driver))
    steps.append(VfioStep(VfioStepKind.PROBE, function.bdf))
    return tuple(steps)


def _unbind_steps(function: PciFunction) -> tuple[VfioStep, ...]:
    steps: list[VfioStep] = []
    if function.driver_override is not None:
        steps.append(VfioStep(VfioStepKind.CLEAR_OVERRIDE, function.bdf))
    if function.driver is not None:
        steps.append(VfioStep(VfioStepKind.UNBIND, function.bdf, function.driver))
    steps.append(VfioStep(VfioStepKind.PROBE, function.bdf))
    return tuple(steps)


def _requested(
    host: PciHost, include_nvswitches: bool, devices: Sequence[str]
) -> list[NvidiaDevice]:
    kinds = {DeviceKind.GPU} | ({DeviceKind.NVSWITCH} if include_nvswitches else set())
    if not devices:
        return [d for d in host.discovery.devices if d.kind in kinds]
    chosen: list[NvidiaDevice] = []
    for text in devices:
        device = host.discovery.get(text)
        if device is None or device.kind is DeviceKind.OTHER:
            raise UnknownDevice(text, host.sysfs_root)
        if device not in chosen:
            chosen.append(device)
    return sorted(chosen, key=lambda d: d.bdf)


def plan(
    host: PciHost,
    action: VfioAction | Literal["bind", "unbind"] = VfioAction.BIND,
    *,
    include_nvswitches: bool = False,
    devices: Sequence[str] = (),
) -> VfioPlan:
    """The writes that move the GPUs (and NVSwitches) of ``host`` to or from vfio-pci.

    Pure: reads nothing and writes nothing. ``devices`` limits the request to these BDFs
    (GPUs or NVSwitches, whatever ``include_nvswitches`` says); by default every GPU, plus
    every NVSwitch with ``include_nvswitches``. Every other member of a touched IOMMU group
    moves too, as VFIO needs (bridges stay; a member on pci-stub stays when binding). Devices
    already in the target state get no step, so planning again after :func:`apply` gives an
    empty plan.

    Raises:
        VfioError: when binding, a requested device has no IOMMU group, or a non-NVIDIA
            device with a host driver shares a touched group (each is named; nothing to do
            until the host is changed).
        UnknownDevice: a BDF in ``devices`` is no GPU or NVSwitch of this host.
        InvalidBDF: a BDF in ``devices`` is no PCI address.
        MisuseError: ``action`` is neither bind nor unbind.
    """
    try:
        action = VfioAction(action)
    except ValueError:
        raise MisuseError(f"unknown VFIO action {action!r}; use 'bind' or 'unbind'") from None
    binding = action is VfioAction.BIND
    done = _bind_done if binding else _unbind_done
    problems: list[VfioProblem] = []
    requested = _requested(host, include_nvswitches, devices)
    for device in requested:
        if device.iommu_group is None and binding:
            problems.append(
                VfioProblem(
                    device.bdf,
                    f"{_label(host, host.functions[device.bdf])} has no IOMMU group, so vfio-pci "
                    "cannot take it; enable VT-d/AMD-Vi in the firmware and boot with "
                    "intel_iommu=on (AMD: amd_iommu=on) iommu=pt",
                )
            )
    groups = sorted({d.iommu_group for d in requested if d.iommu_group is not None})
    requested_bdfs = {d.bdf for d in requested}
    moves: list[DeviceMove] = []
    unchanged: list[BDF] = []
    for group in groups:
        members = host.group(group)
        owners = ", ".join(_label(host, f) for f in members if f.bdf in requested_bdfs)
        for function in members:
            if function.is_bridge:
                continue
            if done(function):
                unchanged.append(function.bdf)
                continue
            label = _label(host, function)
            if binding and not function.is_nvidia and function.driver is not None:
                problems.append(
                    VfioProblem(
                        function.bdf,
                        f"IOMMU group {group} of {owners} also holds {label}, bound to the host "
                        f"driver {function.driver}; VFIO hands out whole groups and gpucaas "
                        f"does not take a host device from its driver: give the slot its own "
                        f"group (ACS, another slot), bind {function.bdf} to vfio-pci yourself "
                        "if the host does not need it, or leave these GPUs out with --device",
                    )
                )
                continue
            reason = (
                "requested"
                if function.bdf in requested_bdfs
                else f"in IOMMU group {group} with {owners}"
            )
            steps = _bind_steps(function) if binding else _unbind_steps(function)
            moves.append(DeviceMove(function, label, reason, steps))
    if problems:
        raise VfioError(str(action), problems)
    return VfioPlan(
        action=action,
        host=host,
        moves=tuple(moves),
        unchanged=tuple(unchanged),
        groups=tuple(groups),
    )


# --------------------------------------------------------------------------- apply


@dataclass(frozen=True, slots=True)
class DeviceChange:
    """What one planned device looked like before and after :func:`apply`."""

    bdf: BDF
    label: str
    driver_before: str | None
    driver_after: str | None
    override_before: str | None
    override_after: str | None

    @property
    def changed(self) -> bool:
        return (self.driver_before, self.override_before) != (
            self.driver_after,
            self.override_after,
        )


@dataclass(frozen=True, slots=True)
class GroupCheck:
    """Whether an IOMMU group was in the target state before and after :func:`apply`."""

    group: int
    complete_before: bool
    complete_after: bool
    pending: tuple[str, ...] = ()
    """After applying: the members still not in the target state, labelled."""


@dataclass(frozen=True, slots=True)
class VfioResult:
    """What :func:`apply` did: every moved device, and every touched group's check."""

    action: VfioAction
    changes: tuple[DeviceChange, ...]
    unchanged: tuple[BDF, ...]
    groups: tuple[GroupCheck, ...] = field(default=())

    @property
    def changed(self) -> tuple[DeviceChange, ...]:
        return tuple(c for c in self.changes if c.changed)


def _state(function: PciFunction) -> tuple[str | None, str | None]:
    return function.driver, function.driver_override


def apply(plan: VfioPlan, kernel: SysfsKernel) -> VfioResult:
    """Run ``plan``'s writes through ``kernel``, then check every touched group.

    Before writing, re-reads sysfs (the plan must still match the host) and asks
    ``kernel.holders`` about every device that will be unbound: if any is held, nothing is
    written. After writing, re-reads sysfs and checks that each touched group is complete
    (bind: every non-bridge member on vfio-pci or pci-stub; unbind: none on vfio-pci).

    Raises:
        DeviceInUse: a device is held by a process, or the kernel refused an unbind (EBUSY);
            its override is put back, and ``changed`` lists devices already moved.
        VfioError: the host changed since the plan was made, or a group is incomplete
            after the writes (e.g. vfio-pci is not loaded, so probing bound nothing).
        KernelWriteError: a write failed otherwise (not root, driver not loaded, ...).
        MisuseError: ``kernel`` writes to another sysfs root than the plan was made from.
    """
    action = str(plan.action)
    if Path(kernel.root) != plan.host.sysfs_root:
        raise MisuseError(
            f"the plan was made from {plan.host.sysfs_root} but the kernel writes to "
            f"{kernel.root}; plan and apply with the same sysfs root"
        )
    now = read_host(plan.host.sysfs_root)
    stale = [
        VfioProblem(
            move.bdf,
            f"{move.label} changed since the plan was made (driver {move.function.driver} → "
            f"{now.functions[move.bdf].driver if move.bdf in now.functions else 'gone'}); "
            "plan again",
        )
        for move in plan.moves
        if move.bdf not in now.functions or _state(now.functions[move.bdf]) != _state(move.function)
    ]
    if stale:
        raise VfioError(action, stale)
    busy = [
        VfioProblem(
            move.bdf,
            f"{move.label} is in use by {', '.join(held)}; stop what holds it "
            "(for a VM: the pod using it), then run the command again",
        )
        for move in plan.moves
        if move.function.driver is not None and (held := kernel.holders(move.function))
    ]
    if busy:
        raise DeviceInUse(action, busy)

    done = _bind_done if plan.action is VfioAction.BIND else _unbind_done
    before = {g: all(done(f) for f in plan.host.group(g)) for g in plan.groups}
    moved: list[BDF] = []
    for move in plan.moves:
        try:
            for step in move.steps:
                step.run(kernel)
        except VfioError as exc:
            _restore_override(kernel, move.function)
            raise type(exc)(action, exc.problems, moved) from exc
        except KernelWriteError:
            _restore_override(kernel, move.function)
            raise
        moved.append(move.bdf)

    after = read_host(plan.host.sysfs_root)
    changes = tuple(
        DeviceChange(
            bdf=move.bdf,
            label=move.label,
            driver_before=move.function.driver,
            driver_after=after.functions[move.bdf].driver if move.bdf in after.functions else None,
            override_before=move.function.driver_override,
            override_after=(
                after.functions[move.bdf].driver_override if move.bdf in after.functions else None
            ),
        )
        for move in plan.moves
    )
    checks: list[GroupCheck] = []
    incomplete: list[VfioProblem] = []
    for group in plan.groups:
        members = after.group(group)
        pending = [f for f in members if not done(f)]
        checks.append(
            GroupCheck(
                group=group,
                complete_before=before[group],
                complete_after=not pending,
                pending=tuple(f"{_label(after, f)} on {f.driver or 'no driver'}" for f in pending),
            )
        )
        for function in pending:
            want = "vfio-pci" if plan.action is VfioAction.BIND else "off vfio-pci"
            incomplete.append(
                VfioProblem(
                    function.bdf,
                    f"after the writes, {_label(after, function)} in IOMMU group {group} is on "
                    f"{function.driver or 'no driver'}, not {want}; check that vfio-pci is "
                    "loaded (`modprobe vfio-pci`) and `dmesg` for what the kernel said",
                )
            )
    if incomplete:
        raise VfioError(action, incomplete, moved)
    return VfioResult(
        action=plan.action, changes=changes, unchanged=plan.unchanged, groups=tuple(checks)
    )


def _restore_override(kernel: SysfsKernel, function: PciFunction) -> None:
    """Best effort: put back the override of a device whose move failed half-way."""
    try:
        kernel.set_driver_override(function.bdf, function.driver_override)
    except (VfioError, KernelWriteError):
        pass


# --------------------------------------------------------------------------- status


@dataclass(frozen=True, slots=True)
class DeviceVfioState:
    """One GPU or NVSwitch: its driver, and whether its IOMMU group can go to a VM."""

    bdf: BDF
    kind: DeviceKind
    model: str
    driver: str | None
    driver_override: str | None
    iommu_group: int | None
    group_ready: bool
    """Every non-bridge member of the group is on vfio-pci (or parked on pci-stub)."""
    blocking: tuple[str, ...]
    """The members that keep the group from being ready, labelled with their driver."""


@dataclass(frozen=True, slots=True)
class VfioStatus:
    """Per GPU and NVSwitch, whether it is ready for VFIO."""

    devices: tuple[DeviceVfioState, ...]

    @property
    def gpus_ready(self) -> bool:
        gpus = [d for d in self.devices if d.kind is DeviceKind.GPU]
        return bool(gpus) and all(d.group_ready for d in gpus)

    @property
    def nvswitches_ready(self) -> bool:
        return all(d.group_ready for d in self.devices if d.kind is DeviceKind.NVSWITCH)


def status(host: PciHost) -> VfioStatus:
    """Each GPU's and NVSwitch's driver and whether its whole IOMMU group is VFIO-ready.

    A device without an IOMMU group is never ready. Pure: reads only the snapshot.
    """
    states: list[DeviceVfioState] = []
    for device in host.discovery.devices:
        if device.kind is DeviceKind.OTHER:
            continue
        function = host.functions[device.bdf]
        if device.iommu_group is None:
            blocking: tuple[str, ...] = (f"{_label(host, function)} has no IOMMU group",)
        else:
            blocking = tuple(
                f"{_label(host, f)} on {f.driver or 'no driver'}"
                for f in host.group(device.iommu_group)
                if not _bind_done(f)
            )
        states.append(
            DeviceVfioState(
                bdf=device.bdf,
                kind=device.kind,
                model=device.model,
                driver=function.driver,
                driver_override=function.driver_override,
                iommu_group=device.iommu_group,
                group_ready=not blocking,
                blocking=blocking,
            )
        )
    return VfioStatus(devices=tuple(states))
