"""Discovery: which NVIDIA GPUs and NVSwitches a host has, read straight from sysfs.

The GPUs of a gpucaas host are bound to vfio-pci, so no NVIDIA driver (and no NVML) is
there to ask. sysfs is the one source that is always present and tells us everything the
node agent needs: PCI address, device id, bound driver, IOMMU group and its members, NUMA
node, BAR sizes and the iommufd cdev. The root is a parameter so that tests and the CLI's
``--sysfs`` run on fixture trees.

What it refuses to do: change anything (binding is ``gpucaas node vfio``), guess module IDs
(PCI order does not follow them; see the module-ID map), or fail because one device is
misconfigured. Every problem on the host becomes a :class:`DiscoveryWarning` and the rest of
the host is still reported. Only a root with no PCI tree at all raises
:class:`DiscoveryError`. A pass is a few hundred small reads (``os.scandir``,
``os.readlink``): well under the 50 ms budget on a full HGX tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpucaas.topology import MODELS

from ._errors import DiscoveryError, InvalidBDF
from ._types import (
    BDF,
    NVIDIA_VENDOR_ID,
    Bar,
    DeviceKind,
    Discovery,
    DiscoveryWarning,
    NvidiaDevice,
    Severity,
    WarningCode,
    parse_bdf,
)

SYSFS_ROOT = Path("/sys")
"""Where the kernel mounts sysfs; ``gpucaas node inspect --sysfs`` overrides it."""

VFIO_PCI = "vfio-pci"

_GPU_CLASS = 0x0302
"""Class 0x0302 (3D controller), the top 16 bits of a GPU's 24-bit class code."""
_NVSWITCH_CLASS = 0x0680
"""Class 0x0680 (other bridge): how an NVSwitch presents itself."""
_BRIDGE_CLASSES = frozenset({0x0604, 0x0607, 0x0609})
"""PCI-PCI, CardBus and semi-transparent bridges. The kernel lets a VFIO group contain
bridges whatever their driver (their header type is not "normal"), so they never make a
group unusable."""
_VFIO_SAFE_DRIVERS = frozenset({"pci-stub"})
"""Host drivers the kernel accepts in a VFIO group besides vfio-pci (and no driver)."""

_IOMMU_FIX = (
    "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on (AMD: amd_iommu=on) iommu=pt"
)


def _catalog() -> tuple[dict[int, str], dict[int, str], dict[int, int]]:
    """GPU and NVSwitch names by device id, and GPUs per board by GPU device id."""
    gpu_names: dict[int, str] = {}
    switch_names: dict[int, str] = {}
    board_gpus: dict[int, int] = {}
    for name in MODELS.names():
        model = MODELS.get(name)
        for gpu in model.gpu_devices:
            gpu_names.setdefault(gpu.device_id, gpu.name)
            board_gpus.setdefault(gpu.device_id, model.gpu_count)
        if model.nvswitch is not None:
            switch_names.setdefault(model.nvswitch.device_id, model.nvswitch.name)
    return gpu_names, switch_names, board_gpus


_GPU_NAMES, _NVSWITCH_NAMES, _BOARD_GPUS = _catalog()


def is_vfio_driver(driver: str | None) -> bool:
    """Whether ``driver`` is vfio-pci or a vendor variant of it (``nvgrace-gpu-vfio-pci``)."""
    return driver is not None and driver.replace("_", "-").endswith(VFIO_PCI)


def _model_name(device_id: int | None) -> str:
    """The product name for an NVIDIA device id, from the board models."""
    if device_id is None:
        return "unknown"
    name = _GPU_NAMES.get(device_id) or _NVSWITCH_NAMES.get(device_id)
    return name if name is not None else f"unknown {device_id:#06x}"


def _kind(class_code: int | None, device_id: int | None) -> DeviceKind:
    if class_code is not None:
        if class_code >> 8 == _GPU_CLASS:
            return DeviceKind.GPU
        if class_code >> 8 == _NVSWITCH_CLASS:
            return DeviceKind.NVSWITCH
        return DeviceKind.OTHER
    # The class file was unreadable (a warning says so): fall back on the known ids.
    if device_id in _GPU_NAMES:
        return DeviceKind.GPU
    if device_id in _NVSWITCH_NAMES:
        return DeviceKind.NVSWITCH
    return DeviceKind.OTHER


@dataclass(frozen=True, slots=True)
class _Member:
    """What the group checks need to know about any device, NVIDIA or not."""

    driver: str | None
    class_code: int | None


class _Scan:
    """One discovery pass: reads files, remembers what it read, collects warnings."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices_dir = root / "bus" / "pci" / "devices"
        self.groups_dir = root / "kernel" / "iommu_groups"
        self.warnings: list[DiscoveryWarning] = []
        self._groups: dict[int, tuple[BDF, ...]] = {}
        self._members: dict[BDF, _Member] = {}

    def warn(
        self,
        code: WarningCode,
        message: str,
        bdf: BDF | None = None,
        severity: Severity = Severity.WARNING,
    ) -> None:
        self.warnings.append(DiscoveryWarning(code, message, bdf, severity))

    def unreadable(self, bdf: BDF, path: str, reason: str, what: str) -> None:
        self.warn(
            WarningCode.UNREADABLE_FILE,
            f"cannot read {path}: {reason}; {bdf} is reported without its {what} "
            "(check the kernel log and the device's health)",
            bdf,
        )

    # -- low-level reads ------------------------------------------------------------------

    def read(self, bdf: BDF, path: str, what: str, *, optional: bool = False) -> str | None:
        try:
            with open(path, encoding="ascii") as file:
                return file.read().strip()
        except FileNotFoundError:
            if not optional:
                self.unreadable(bdf, path, "no such file", what)
        except (OSError, UnicodeDecodeError) as exc:
            self.unreadable(bdf, path, _reason(exc), what)
        return None

    def read_int(
        self, bdf: BDF, path: str, what: str, *, base: int, optional: bool = False
    ) -> int | None:
        text = self.read(bdf, path, what, optional=optional)
        if text is None:
            return None
        try:
            return int(text, base)
        except ValueError:
            self.unreadable(bdf, path, f"not a number: {text[:40]!r}", what)
            return None

    def link_name(self, bdf: BDF, path: str, what: str) -> str | None:
        """The last component of a symlink's target; None when there is no link."""
        try:
            return os.path.basename(os.readlink(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.unreadable(bdf, path, _reason(exc), what)
            return None

    # -- one device -----------------------------------------------------------------------

    def device(self, bdf: BDF) -> NvidiaDevice | None:
        """The NVIDIA device at ``bdf``, or None when it is another vendor's."""
        base = os.path.join(self.devices_dir, bdf)
        vendor = self.read_int(bdf, f"{base}/vendor", "vendor id", base=16)
        if vendor != NVIDIA_VENDOR_ID:
            return None
        device_id = self.read_int(bdf, f"{base}/device", "device id", base=16)
        class_code = self.read_int(bdf, f"{base}/class", "class code", base=16)
        driver = self.link_name(bdf, f"{base}/driver", "driver")
        self._members[bdf] = _Member(driver, class_code)
        group = self.iommu_group(bdf, base)
        numa = self.read_int(bdf, f"{base}/numa_node", "NUMA node", base=10, optional=True)
        return NvidiaDevice(
            bdf=bdf,
            vendor_id=vendor,
            device_id=device_id,
            class_code=class_code,
            kind=_kind(class_code, device_id),
            model=_model_name(device_id),
            driver=driver,
            iommu_group=group,
            iommu_group_members=()
            if group is None
            else tuple(m for m in self.group_members(bdf, group) if m != bdf),
            numa_node=None if numa is None or numa < 0 else numa,
            bars=self.bars(bdf, f"{base}/resource"),
            vfio_cdev=self.vfio_cdev(bdf, f"{base}/vfio-dev"),
        )

    def iommu_group(self, bdf: BDF, base: str) -> int | None:
        name = self.link_name(bdf, f"{base}/iommu_group", "IOMMU group")
        if name is None:
            return None
        try:
            return int(name)
        except ValueError:
            self.unreadable(
                bdf, f"{base}/iommu_group", f"links to {name!r}, not a group number", "group"
            )
            return None

    def group_members(self, bdf: BDF, group: int) -> tuple[BDF, ...]:
        """Every device in IOMMU group ``group``, the asking device included, in PCI order."""
        if group not in self._groups:
            path = os.path.join(self.groups_dir, str(group), "devices")
            members: list[BDF] = []
            try:
                names = os.listdir(path)
            except OSError as exc:
                self.unreadable(bdf, path, _reason(exc), "IOMMU group members")
                names = []
            for name in names:
                try:
                    members.append(parse_bdf(name))
                except InvalidBDF:
                    continue
            self._groups[group] = tuple(sorted(members))
        return self._groups[group]

    def bars(self, bdf: BDF, path: str) -> tuple[Bar, ...]:
        """Non-empty regions of ``resource``: one ``start end flags`` hex line per region."""
        text = self.read(bdf, path, "BAR sizes")
        if text is None:
            return ()
        bars: list[Bar] = []
        bad: list[int] = []
        for index, line in enumerate(text.splitlines()):
            fields = line.split()
            try:
                start, end, _flags = (int(f, 16) for f in fields)
            except ValueError:
                bad.append(index)
                continue
            if end > start:
                bars.append(Bar(index, end - start + 1))
        if bad:
            lines = ", ".join(str(i + 1) for i in bad)
            what = f"line {lines} is" if len(bad) == 1 else f"lines {lines} are"
            self.unreadable(bdf, path, f"{what} not 'start end flags' in hex", "BARs")
        return tuple(bars)

    def vfio_cdev(self, bdf: BDF, path: str) -> str | None:
        try:
            with os.scandir(path) as entries:
                names = sorted(e.name for e in entries if e.name.startswith("vfio"))
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.unreadable(bdf, path, _reason(exc), "iommufd cdev")
            return None
        return names[0] if names else None

    def member(self, bdf: BDF) -> _Member:
        """Driver and class of any device (read once; group checks ask for non-NVIDIA ones)."""
        if bdf not in self._members:
            base = os.path.join(self.devices_dir, bdf)
            self._members[bdf] = _Member(
                self.link_name(bdf, f"{base}/driver", "driver"),
                self.read_int(bdf, f"{base}/class", "class code", base=16),
            )
        return self._members[bdf]

    # -- the host -------------------------------------------------------------------------

    def list_devices(self) -> list[BDF]:
        if not self.root.is_dir():
            raise DiscoveryError(str(self.root), "no such directory")
        try:
            with os.scandir(self.devices_dir) as entries:
                names = [e.name for e in entries]
        except FileNotFoundError:
            raise DiscoveryError(
                str(self.devices_dir), "no such directory (is this a sysfs root?)"
            ) from None
        except OSError as exc:
            raise DiscoveryError(str(self.devices_dir), _reason(exc)) from exc
        bdfs: list[BDF] = []
        for name in names:
            try:
                bdfs.append(parse_bdf(name))
            except InvalidBDF:
                continue
        return sorted(bdfs)

    def check(self, devices: list[NvidiaDevice]) -> None:
        passable = [d for d in devices if d.kind is not DeviceKind.OTHER]
        for device in passable:
            self.check_driver(device)
        self.check_groups(passable)
        self.check_nvswitch_groups([d for d in devices if d.kind is DeviceKind.NVSWITCH])
        self.check_gpu_count(devices)

    def check_driver(self, device: NvidiaDevice) -> None:
        if is_vfio_driver(device.driver):
            return
        bound = "has no driver bound" if device.driver is None else f"is bound to {device.driver}"
        if device.kind is DeviceKind.GPU:
            self.warn(
                WarningCode.GPU_NOT_VFIO,
                f"GPU {device.bdf} ({device.model}) {bound}, not vfio-pci, so it cannot be "
                "passed to a VM; run `gpucaas node vfio bind`",
                device.bdf,
            )
        else:
            self.warn(
                WarningCode.NVSWITCH_NOT_VFIO,
                f"NVSwitch {device.bdf} {bound}, not vfio-pci, so the Fabric Manager's "
                "Service VM cannot own it; run `gpucaas node vfio bind --include-nvswitches`",
                device.bdf,
            )

    def check_groups(self, passable: list[NvidiaDevice]) -> None:
        ungrouped = [d for d in passable if d.iommu_group is None]
        if ungrouped and len(ungrouped) == len(passable):
            self.warn(
                WarningCode.NO_IOMMU_GROUP,
                f"no NVIDIA device has an IOMMU group ({len(ungrouped)} devices; nothing under "
                f"{self.groups_dir}): the IOMMU is off, so VFIO cannot isolate them; {_IOMMU_FIX}",
            )
        else:
            for device in ungrouped:
                self.warn(
                    WarningCode.NO_IOMMU_GROUP,
                    f"{_label(device)} has no IOMMU group, so VFIO cannot isolate it; "
                    f"is the IOMMU off for its PCI segment? {_IOMMU_FIX}",
                    device.bdf,
                )
        by_group: dict[int, list[NvidiaDevice]] = {}
        for device in passable:
            if device.iommu_group is not None:
                by_group.setdefault(device.iommu_group, []).append(device)
        ours = {d.bdf for d in passable}
        for group, owners in sorted(by_group.items()):
            for bdf in self.group_members(owners[0].bdf, group):
                if bdf in ours:
                    continue  # GPUs and NVSwitches get their own driver warnings
                member = self.member(bdf)
                if not _vfio_viable(member):
                    names = ", ".join(_label(d) for d in owners)
                    self.warn(
                        WarningCode.GROUP_NOT_VIABLE,
                        f"IOMMU group {group} of {names} also holds {bdf} "
                        f"(class {_hex_class(member.class_code)}) bound to {member.driver}; VFIO "
                        f"hands out whole groups, so bind {bdf} to vfio-pci too, unbind it, or "
                        "give the slot its own group (ACS)",
                        owners[0].bdf,
                    )

    def check_nvswitch_groups(self, nvswitches: list[NvidiaDevice]) -> None:
        groups: dict[int, list[BDF]] = {}
        for device in nvswitches:
            if device.iommu_group is not None:
                groups.setdefault(device.iommu_group, []).append(device.bdf)
        if len(groups) > 1:
            listing = "; ".join(
                f"group {g}: {', '.join(bdfs)}" for g, bdfs in sorted(groups.items())
            )
            self.warn(
                WarningCode.NVSWITCH_GROUPS_SPLIT,
                f"the {len(nvswitches)} NVSwitches are in {len(groups)} IOMMU groups "
                f"({listing}); the Fabric Manager's Service VM needs them all: pass every one "
                "of these groups to it, and check the PCIe switch ACS settings",
            )

    def check_gpu_count(self, devices: list[NvidiaDevice]) -> None:
        gpus = [d for d in devices if d.kind is DeviceKind.GPU]
        if not gpus:
            self.warn(
                WarningCode.NO_GPUS,
                f"no NVIDIA GPU (vendor 0x10de, class 0x0302) under {self.devices_dir}",
                severity=Severity.INFO,
            )
            return
        expected = {_BOARD_GPUS[d.device_id] for d in gpus if d.device_id in _BOARD_GPUS}
        hgx = bool(expected) or any(d.kind is DeviceKind.NVSWITCH for d in devices)
        wanted = max(expected, default=8)
        if hgx and len(gpus) != wanted:
            self.warn(
                WarningCode.GPU_COUNT,
                f"this HGX host shows {len(gpus)} GPUs, not {wanted}: a GPU is missing from "
                "the PCI bus (removed, fallen off the bus, or hidden by firmware); partitions "
                "that include it cannot be used",
                severity=Severity.INFO,
            )


def _vfio_viable(member: _Member) -> bool:
    """Whether the kernel lets a VFIO group containing this device be used."""
    if member.driver is None or member.driver in _VFIO_SAFE_DRIVERS:
        return True
    if is_vfio_driver(member.driver):
        return True
    return member.class_code is not None and member.class_code >> 8 in _BRIDGE_CLASSES


def _label(device: NvidiaDevice) -> str:
    """``GPU 0000:18:00.0``: how messages name a device."""
    noun = {DeviceKind.GPU: "GPU", DeviceKind.NVSWITCH: "NVSwitch"}.get(device.kind, "device")
    return f"{noun} {device.bdf}"


def _hex_class(class_code: int | None) -> str:
    return "unknown" if class_code is None else f"{class_code:#08x}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def discover(sysfs_root: Path = SYSFS_ROOT) -> Discovery:
    """Every NVIDIA PCI device under ``sysfs_root``, with warnings for what is misconfigured.

    Only vendor 0x10de devices are reported, in PCI order; members of their IOMMU groups are
    listed (and checked) whatever their vendor. Problems never raise: each becomes a
    :class:`DiscoveryWarning`, and a device with an unreadable file is reported with what
    could be read.

    Raises :class:`DiscoveryError` when ``sysfs_root`` or its ``bus/pci/devices`` is missing
    or unreadable.
    """
    scan = _Scan(Path(sysfs_root))
    devices = [d for d in (scan.device(bdf) for bdf in scan.list_devices()) if d is not None]
    scan.check(devices)
    return Discovery(devices=tuple(devices), warnings=tuple(scan.warnings))
