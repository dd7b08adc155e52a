"""A fixture sysfs tree of an HGX H100 host, for discovery, VFIO binding and CDI tests.

No machine here has an HGX board, so the node agent's tests read a tree written by this
module. It follows what a real host shows under ``/sys``:

- ``devices/pci0000:XX/<bridge>/<device>/`` holds each device's files (``vendor``,
  ``device``, ``class``, ``numa_node``, ``resource``, ``config``, ``driver_override``),
  ``bus/pci/devices/<bdf>`` links to it, ``driver`` links to ``bus/pci/drivers/<name>`` and
  ``iommu_group`` to ``kernel/iommu_groups/<N>``, whose ``devices/`` links back;
- 8 GPUs at the DGX H100 bus numbers 0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb, each
  behind its own PCIe switch port (``pcieport``, in a group of its own) and alone in its
  IOMMU group, bound to vfio-pci with an iommufd cdev (``vfio-dev/vfioN``); NUMA node 0 for
  the first four buses, 1 for the rest. BAR0 16 MiB (32-bit), BAR2 128 GiB and BAR4 32 MiB
  (64-bit prefetchable: a 64-bit BAR takes two BAR slots, so ``resource`` line 3 and 5 are
  zeros, as the kernel prints them);
- 4 NVSwitches (0x22a3, class 0x068000) sharing ONE IOMMU group, bound to vfio-pci;
- a ConnectX-7 NIC (mlx5_core), an NVMe drive (nvme) and a host bridge, elsewhere;
- ``bus/pci/drivers/<name>/{bind,unbind}``, ``drivers/vfio-pci/{new_id,remove_id}`` and
  ``bus/pci/drivers_probe`` as plain files, so a VFIO binder can be tested by what it writes.

GPU module IDs are NOT derivable from these addresses: the baseboard strapping decides them
and PCI order does not follow it. :data:`MODULE_ID_BY_BDF` is what ``nvidia-smi -q`` would
report on this imaginary host (deliberately non-monotonic); tests of the module-ID map use
it, nothing may compute it.

Variants (``variant=``): ``ok``; ``gpu-unbound`` (GPU 9a on nvidia, GPU db on no driver);
``gpu-missing`` (GPU ba absent); ``corrupt-file`` (GPU 3a's ``resource`` and GPU ab's
``numa_node`` hold garbage); ``no-iommu`` (no IOMMU groups, so nothing could bind to
vfio-pci); ``split-nvswitch-groups`` (NVSwitches in two groups); ``shared-group`` (the NIC
sits in GPU 2a's IOMMU group).

Usable as a script: ``python tests/node/sysfs_fixture.py OUTDIR [--variant V]``.
"""

from __future__ import annotations

import argparse
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VARIANTS = (
    "ok",
    "gpu-unbound",
    "gpu-missing",
    "corrupt-file",
    "no-iommu",
    "split-nvswitch-groups",
    "shared-group",
)

MakeSysfs = Callable[..., Path]
"""The type of conftest's ``make_sysfs`` factory: ``(variant="ok", *, gpu_device_id) -> root``."""

H100_SXM5 = 0x2330
NVSWITCH = 0x22A3

GPU_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)
GPU_BDFS = tuple(f"0000:{bus:02x}:00.0" for bus in GPU_BUSES)
GPU_GROUPS = (24, 38, 51, 66, 112, 127, 139, 158)
"""IOMMU group of each GPU, in PCI order (kernel numbering has gaps; so does this)."""
NVSWITCH_BDFS = ("0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0")
NVSWITCH_GROUP = 12
NIC_BDF = "0000:27:00.0"
NVME_BDF = "0000:c1:00.0"
HOST_BRIDGE_BDF = "0000:00:00.0"

MODULE_ID_BY_BDF = dict(zip(GPU_BDFS, (2, 4, 1, 3, 7, 5, 8, 6), strict=True))
"""Module IDs as ``nvidia-smi -q`` would report them on this fixture host (invented)."""

MIB = 1 << 20
GIB = 1 << 30

# resource-file flags as the kernel prints them (IORESOURCE_* bits plus the BAR's low bits).
_MEM32 = 0x40200
_MEM64_PREF = 0x14220C
_MEM64 = 0x140204


@dataclass
class _Dev:
    bdf: str
    vendor: int
    device: int
    class_code: int
    parent: str  # path of the parent directory under devices/, e.g. "pci0000:17/0000:17:00.0"
    driver: str | None
    group: int | None
    numa: int
    bars: dict[int, tuple[int, int, int]]  # index -> (start, size, flags)
    bridge: bool = False


def _host(variant: str, gpu_device_id: int) -> list[_Dev]:
    devs: list[_Dev] = [
        _Dev(HOST_BRIDGE_BDF, 0x8086, 0x09A2, 0x060000, "pci0000:00", None, 0, 0, {}),
    ]
    for i, (bus, group) in enumerate(zip(GPU_BUSES, GPU_GROUPS, strict=True)):
        numa = 0 if i < 4 else 1
        root = f"pci0000:{bus - 1:02x}"
        bridge = f"0000:{bus - 1:02x}:00.0"
        # Broadcom PEX890xx switch port above the GPU, in its own group.
        devs.append(
            _Dev(bridge, 0x1000, 0xC030, 0x060400, root, "pcieport", group - 1, numa, {}, True)
        )
        bar2 = 0x200000000000 + i * 0x4000000000
        devs.append(
            _Dev(
                f"0000:{bus:02x}:00.0",
                0x10DE,
                gpu_device_id,
                0x030200,
                f"{root}/{bridge}",
                "vfio-pci",
                group,
                numa,
                {
                    0: (0xA0000000 + i * 0x4000000, 16 * MIB, _MEM32),
                    2: (bar2, 128 * GIB, _MEM64_PREF),
                    4: (bar2 + 128 * GIB, 32 * MIB, _MEM64_PREF),
                },
            )
        )
    switch_bridge = "0000:04:00.0"
    devs.append(
        _Dev(switch_bridge, 0x1000, 0xC030, 0x060400, "pci0000:04", "pcieport", 11, 0, {}, True)
    )
    for i, bdf in enumerate(NVSWITCH_BDFS):
        devs.append(
            _Dev(
                bdf,
                0x10DE,
                NVSWITCH,
                0x068000,
                f"pci0000:04/{switch_bridge}",
                "vfio-pci",
                NVSWITCH_GROUP,
                0,
                {0: (0x90000000 + i * 0x2000000, 32 * MIB, _MEM64)},
            )
        )
    devs.append(
        _Dev(
            NIC_BDF,
            0x15B3,
            0x1021,
            0x020700,
            "pci0000:26/0000:26:00.0",
            "mlx5_core",
            37,
            0,
            {0: (0x280000000000, 64 * MIB, _MEM64_PREF)},
        )
    )
    devs.append(
        _Dev(
            NVME_BDF,
            0x144D,
            0xA80A,
            0x010802,
            "pci0000:c0/0000:c0:01.1",
            "nvme",
            170,
            1,
            {0: (0xF4000000, 16 * 1024, _MEM64)},
        )
    )
    return _apply_variant(devs, variant)


def _apply_variant(devs: list[_Dev], variant: str) -> list[_Dev]:
    by_bdf = {d.bdf: d for d in devs}
    if variant == "gpu-unbound":
        by_bdf["0000:9a:00.0"].driver = "nvidia"
        by_bdf["0000:db:00.0"].driver = None
    elif variant == "gpu-missing":
        devs = [d for d in devs if d.bdf != "0000:ba:00.0"]
    elif variant == "no-iommu":
        for dev in devs:
            dev.group = None
            if dev.driver == "vfio-pci":
                dev.driver = None  # vfio-pci refuses devices without an IOMMU group
    elif variant == "split-nvswitch-groups":
        for bdf in NVSWITCH_BDFS[2:]:
            by_bdf[bdf].group = NVSWITCH_GROUP + 1
    elif variant == "shared-group":
        by_bdf[NIC_BDF].group = GPU_GROUPS[1]
    return devs


def _resource(bars: dict[int, tuple[int, int, int]]) -> str:
    lines = []
    for index in range(13):  # 6 BARs, the ROM, 6 SR-IOV BARs, as for any endpoint
        if index in bars:
            start, size, flags = bars[index]
            lines.append(f"0x{start:016x} 0x{start + size - 1:016x} 0x{flags:016x}")
        else:
            lines.append(f"0x{0:016x} 0x{0:016x} 0x{0:016x}")
    return "\n".join(lines) + "\n"


def _config(dev: _Dev) -> bytes:
    header = struct.pack(
        "<HHHHI", dev.vendor, dev.device, 0x0406, 0x0010, (dev.class_code << 8) | 0xA1
    )
    header += bytes([0, 0, 1 if dev.bridge else 0, 0])
    return header + bytes(4096 - len(header))


def _write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def make_hgx_h100_tree(root: Path, *, variant: str = "ok", gpu_device_id: int = H100_SXM5) -> Path:
    """Write the fixture sysfs tree of an HGX H100 host under ``root``; return ``root``.

    ``gpu_device_id=0x2335`` makes it an HGX H200. ``root`` may exist but must not already
    hold a tree. Raises ValueError for an unknown ``variant``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    root = Path(root)
    pci = root / "bus" / "pci"
    drivers = pci / "drivers"
    groups = root / "kernel" / "iommu_groups"
    (pci / "devices").mkdir(parents=True)
    groups.mkdir(parents=True)
    _write(pci / "drivers_probe", "")
    _write(pci / "rescan", "")
    for name in ("vfio-pci", "nvidia", "pcieport", "mlx5_core", "nvme", "pci-stub"):
        _write(drivers / name / "bind", "")
        _write(drivers / name / "unbind", "")
        if name in ("vfio-pci", "pci-stub", "nvidia"):
            _write(drivers / name / "new_id", "")
            _write(drivers / name / "remove_id", "")
    cdev = 0
    for dev in _host(variant, gpu_device_id):
        real = root / "devices" / dev.parent / dev.bdf
        real.mkdir(parents=True)
        _write(real / "vendor", f"0x{dev.vendor:04x}\n")
        _write(real / "device", f"0x{dev.device:04x}\n")
        _write(real / "class", f"0x{dev.class_code:06x}\n")
        _write(real / "subsystem_vendor", f"0x{dev.vendor:04x}\n")
        _write(real / "subsystem_device", "0x16c1\n" if dev.vendor == 0x10DE else "0x0000\n")
        _write(real / "numa_node", f"{dev.numa}\n")
        _write(real / "resource", _resource(dev.bars))
        _write(real / "config", _config(dev))
        _write(real / "driver_override", "(null)\n")
        _write(real / "enable", "1\n" if dev.driver else "0\n")
        _write(real / "reset", "")
        _link(pci / "devices" / dev.bdf, real)
        if dev.driver is not None:
            _link(real / "driver", drivers / dev.driver)
            _link(drivers / dev.driver / dev.bdf, real)
        if dev.group is not None:
            _link(real / "iommu_group", groups / str(dev.group))
            _link(groups / str(dev.group) / "devices" / dev.bdf, real)
            _write(groups / str(dev.group) / "type", "DMA\n")
        if dev.driver == "vfio-pci":
            _write(real / "vfio-dev" / f"vfio{cdev}" / "dev", f"237:{cdev}\n")
            cdev += 1
    if variant == "corrupt-file":
        _write(pci / "devices" / "0000:3a:00.0" / "resource", "0x00000000a8000000 garbage\n\0\0")
        _write(pci / "devices" / "0000:ab:00.0" / "numa_node", "zero\n")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="where to write the tree (its sysfs root)")
    parser.add_argument("--variant", choices=VARIANTS, default="ok")
    parser.add_argument(
        "--gpu-device-id", type=lambda s: int(s, 0), default=H100_SXM5, help="e.g. 0x2335"
    )
    args = parser.parse_args(argv)
    root = make_hgx_h100_tree(args.outdir, variant=args.variant, gpu_device_id=args.gpu_device_id)
    print(root)


if __name__ == "__main__":
    main()
