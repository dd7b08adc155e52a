"""The kernels behind :class:`SysfsKernel`: :class:`LinuxSysfs` writes the sysfs files
(that *is* the kernel's interface); :class:`FixtureKernel` performs the same writes on a
fixture tree and then does what the kernel would do (links and unlinks ``driver``, creates
the iommufd cdev, refuses to unbind a device in use with EBUSY)."""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from gpucaas.node.discovery import (
    BDF,
    SYSFS_ROOT,
    VFIO_PCI,
    parse_bdf,
)

from ._errors import DeviceInUse, KernelWriteError, VfioProblem
from ._host import _NO_OVERRIDE, _PCI_STUB, PciFunction, _link_name, _read_hex, _read_text

PROC_ROOT: Final = Path("/proc")
"""Where :class:`LinuxSysfs` looks for processes holding a device (``/proc/<pid>/fd``)."""


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
