"""VFIO preparation on fixture sysfs trees: plan (pure), apply through FixtureKernel, status.

FixtureKernel performs the same writes as LinuxSysfs and then changes the tree as the kernel
would, so "what changed" is read back with the same discovery the node agent uses.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpucaas.errors import Conflict, MisuseError
from gpucaas.node.discovery import BDF, InvalidBDF, WarningCode, discover
from gpucaas.node.vfio import (
    DeviceInUse,
    FixtureKernel,
    KernelWriteError,
    LinuxSysfs,
    UnknownDevice,
    VfioAction,
    VfioError,
    VfioResult,
    apply,
    plan,
    read_host,
    status,
)
from gpucaas.node.vfio._host import PciFunction  # internals, tested directly
from gpucaas.node.vfio._kernels import FIXTURE_LOADED_DRIVERS
from gpucaas.node.vfio._plan import VfioStepKind
from tests.node.sysfs_fixture import GPU_BDFS, NIC_BDF, NVSWITCH_BDFS, MakeSysfs

GPU_9A, GPU_DB, GPU_2A = BDF("0000:9a:00.0"), BDF("0000:db:00.0"), BDF("0000:2a:00.0")
WITH_NVIDIA = FIXTURE_LOADED_DRIVERS | {"nvidia"}


WRITE_ONLY = frozenset({"bind", "unbind", "new_id", "remove_id", "drivers_probe"})
"""Attributes the kernel lets one write but not read: they hold no state to compare."""


def tree(root: Path, *, state_only: bool = False) -> dict[str, str]:
    """Every path under ``root``: a link's target, a file's bytes, or "dir".

    ``state_only`` leaves out the write-only attributes (on a fixture tree they keep the
    last text written to them)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            if state_only and name in WRITE_ONLY:
                continue
            path = os.path.join(dirpath, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                found[key] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[key] = "dir"
            else:
                with open(path, "rb") as file:
                    found[key] = file.read().hex()
    return found


def drivers(root: Path) -> dict[str, str | None]:
    return {d.bdf: d.driver for d in discover(root).devices}


def bind(root: Path, kernel: FixtureKernel | None = None) -> VfioResult:
    return apply(plan(read_host(root), "bind"), kernel or FixtureKernel(root))


# --------------------------------------------------------------------------- bind


def test_bind_moves_the_gpu_on_nvidia_and_the_unbound_one_and_nothing_else(
    make_sysfs: MakeSysfs,
) -> None:
    root = make_sysfs("gpu-unbound")
    kernel = FixtureKernel(root)
    the_plan = plan(read_host(root), VfioAction.BIND)
    assert [m.bdf for m in the_plan.moves] == [GPU_9A, GPU_DB]
    assert [s.kind for s in the_plan.moves[0].steps] == [
        VfioStepKind.SET_OVERRIDE,
        VfioStepKind.UNBIND,
        VfioStepKind.PROBE,
    ]
    assert the_plan.moves[0].steps[1].driver == "nvidia"
    assert [s.kind for s in the_plan.moves[1].steps] == [
        VfioStepKind.SET_OVERRIDE,
        VfioStepKind.PROBE,
    ]
    assert len(the_plan.unchanged) == 6

    result = apply(the_plan, kernel)

    assert [(c.bdf, c.driver_before, c.driver_after) for c in result.changed] == [
        (GPU_9A, "nvidia", "vfio-pci"),
        (GPU_DB, None, "vfio-pci"),
    ]
    assert all(c.override_after == "vfio-pci" for c in result.changes)
    assert all(g.complete_after for g in result.groups)
    assert [g.group for g in result.groups if not g.complete_before] == [112, 158]
    after = discover(root)
    assert all(d.driver == "vfio-pci" for d in after.devices)
    assert not [w for w in after.warnings if w.code is WarningCode.GPU_NOT_VFIO]
    gpu = after.get(GPU_9A)
    assert gpu is not None and gpu.vfio_cdev is not None
    assert (root / "bus/pci/devices" / GPU_9A / "driver_override").read_text() == "vfio-pci\n"
    assert not (root / "bus/pci/drivers/nvidia" / GPU_9A).exists()
    assert (root / "bus/pci/drivers/vfio-pci" / GPU_9A).is_symlink()


def test_a_second_bind_plans_nothing_and_writes_nothing(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    bind(root)
    before = tree(root)
    kernel = FixtureKernel(root)

    again = plan(read_host(root), "bind")
    result = apply(again, kernel)

    assert again.is_empty and again.steps == ()
    assert len(again.unchanged) == 8
    assert result.changes == () and kernel.writes == []
    assert tree(root) == before


def test_bind_on_a_healthy_host_is_a_no_op(hgx_sysfs: Path) -> None:
    the_plan = plan(read_host(hgx_sysfs), "bind", include_nvswitches=True)
    assert the_plan.is_empty
    assert the_plan.groups == (12, 24, 38, 51, 66, 112, 127, 139, 158)
    assert set(the_plan.unchanged) == {*GPU_BDFS, *NVSWITCH_BDFS}


def test_nvswitches_move_only_when_asked_and_always_as_a_whole_group(hgx_sysfs: Path) -> None:
    kernel = FixtureKernel(hgx_sysfs)
    apply(plan(read_host(hgx_sysfs), "unbind", include_nvswitches=True), kernel)
    assert all(drivers(hgx_sysfs)[b] is None for b in (*GPU_BDFS, *NVSWITCH_BDFS))

    gpus_only = plan(read_host(hgx_sysfs), "bind")
    assert {m.bdf for m in gpus_only.moves} == set(GPU_BDFS)
    apply(gpus_only, kernel)
    assert all(drivers(hgx_sysfs)[b] is None for b in NVSWITCH_BDFS)

    # Asking for one NVSwitch moves all four: they share IOMMU group 12.
    one = plan(read_host(hgx_sysfs), "bind", include_nvswitches=True, devices=[NVSWITCH_BDFS[2]])
    assert [m.bdf for m in one.moves] == list(NVSWITCH_BDFS)
    assert [m.reason for m in one.moves].count("requested") == 1
    assert "in IOMMU group 12 with NVSwitch 0000:07:00.0" in one.moves[0].reason
    result = apply(one, kernel)
    assert [g.group for g in result.groups] == [12]
    assert all(drivers(hgx_sysfs)[b] == "vfio-pci" for b in NVSWITCH_BDFS)
    assert status(read_host(hgx_sysfs)).nvswitches_ready


def test_a_gpu_in_use_is_refused_by_name_and_nothing_changes(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    kernel = FixtureKernel(root)
    kernel.mark_in_use(GPU_9A, "python3 (pid 777): /dev/nvidia4")
    before = tree(root)

    with pytest.raises(DeviceInUse) as caught:
        bind(root, kernel)

    assert caught.value.bdfs == (GPU_9A,)
    assert caught.value.changed == ()
    message = str(caught.value)
    assert f"GPU {GPU_9A} is in use by python3 (pid 777): /dev/nvidia4" in message
    assert message.endswith("nothing was changed")
    assert isinstance(caught.value, Conflict)
    assert kernel.writes == [] and tree(root) == before


class _HoldersUnknown(FixtureKernel):
    """A kernel that cannot see who holds a device (another PID namespace, say): only the
    unbind itself says EBUSY."""

    def holders(self, function: PciFunction) -> tuple[str, ...]:
        return ()


def test_ebusy_during_unbind_stops_restores_the_override_and_names_what_moved(
    hgx_sysfs: Path,
) -> None:
    kernel = _HoldersUnknown(hgx_sysfs)
    kernel.mark_in_use(GPU_2A)

    with pytest.raises(DeviceInUse) as caught:
        apply(plan(read_host(hgx_sysfs), "unbind"), kernel)

    assert caught.value.bdfs == (GPU_2A,)
    assert caught.value.changed == (GPU_BDFS[0],)
    assert "device or resource busy" in str(caught.value)
    assert "already changed before stopping: 0000:18:00.0" in str(caught.value)
    now = drivers(hgx_sysfs)
    assert now[GPU_BDFS[0]] is None and now[GPU_2A] == "vfio-pci"
    assert (hgx_sysfs / "bus/pci/devices" / GPU_2A / "driver_override").read_text() == "(null)\n"


def test_a_host_nic_in_a_gpu_group_is_refused_by_name(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("shared-group")
    host = read_host(root)

    with pytest.raises(VfioError) as caught:
        plan(host, "bind")

    assert caught.value.bdfs == (NIC_BDF,)
    message = str(caught.value)
    assert f"IOMMU group 38 of GPU {GPU_2A} also holds device {NIC_BDF} (class 0x020700)" in (
        message
    )
    assert "host driver mlx5_core" in message and "--device" in message
    # The other GPUs can still be handled, leaving GPU 2a's group out.
    others = plan(host, "bind", devices=[b for b in GPU_BDFS if b != GPU_2A])
    assert others.is_empty and 38 not in others.groups


def test_no_iommu_group_is_refused_with_the_fix(make_sysfs: MakeSysfs) -> None:
    with pytest.raises(VfioError) as caught:
        plan(read_host(make_sysfs("no-iommu")), "bind")
    assert caught.value.bdfs == tuple(GPU_BDFS)
    assert "has no IOMMU group" in str(caught.value) and "intel_iommu=on" in str(caught.value)


def test_plan_writes_nothing(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    before = tree(root)
    the_plan = plan(read_host(root), "bind", include_nvswitches=True)
    assert the_plan.steps[0].shell(root) == (
        f"echo vfio-pci > {root}/bus/pci/devices/{GPU_9A}/driver_override"
    )
    assert the_plan.steps[1].shell(root) == f"echo {GPU_9A} > {root}/bus/pci/drivers/nvidia/unbind"
    assert tree(root) == before


# --------------------------------------------------------------------------- unbind


def test_unbind_then_bind_then_unbind_restores_the_host_exactly(make_sysfs: MakeSysfs) -> None:
    """On a host with the NVIDIA driver loaded, unbind gives every GPU to nvidia; bind and
    unbind again gives back the very same tree (links, overrides, driver directories)."""
    root = make_sysfs("ok")
    kernel = FixtureKernel(root, loaded_drivers=WITH_NVIDIA)
    apply(plan(read_host(root), "unbind"), kernel)
    assert {drivers(root)[b] for b in GPU_BDFS} == {"nvidia"}
    host_state = tree(root, state_only=True)

    bound = apply(plan(read_host(root), "bind"), kernel)
    assert len(bound.changed) == 8
    assert tree(root, state_only=True) != host_state
    released = apply(plan(read_host(root), "unbind"), kernel)

    assert [(c.driver_before, c.driver_after) for c in released.changed] == [
        ("vfio-pci", "nvidia")
    ] * 8
    assert tree(root, state_only=True) == host_state


def test_unbind_on_a_host_without_nvidia_leaves_gpus_driverless(hgx_sysfs: Path) -> None:
    kernel = FixtureKernel(hgx_sysfs)
    the_plan = plan(read_host(hgx_sysfs), "unbind", devices=["9a:00.0"])
    assert [s.kind for s in the_plan.steps] == [VfioStepKind.UNBIND, VfioStepKind.PROBE]

    result = apply(the_plan, kernel)

    assert [(c.bdf, c.driver_after, c.override_after) for c in result.changes] == [
        (GPU_9A, None, None)
    ]
    assert not (hgx_sysfs / "bus/pci/devices" / GPU_9A / "vfio-dev").exists()
    assert plan(read_host(hgx_sysfs), "unbind", devices=[GPU_9A]).is_empty
    assert drivers(hgx_sysfs)[GPU_2A] == "vfio-pci"


def test_unbinding_a_gpu_a_vm_holds_is_refused(hgx_sysfs: Path) -> None:
    kernel = FixtureKernel(hgx_sysfs)
    kernel.mark_in_use(GPU_DB, "qemu-system-x86 (pid 4242): /dev/vfio/158")
    with pytest.raises(DeviceInUse, match=r"GPU 0000:db:00\.0 is in use by qemu-system-x86"):
        apply(plan(read_host(hgx_sysfs), "unbind"), kernel)
    assert set(drivers(hgx_sysfs).values()) == {"vfio-pci"}
    kernel.release(GPU_DB)
    assert len(apply(plan(read_host(hgx_sysfs), "unbind"), kernel).changed) == 8


# --------------------------------------------------------------------------- apply's checks


def test_apply_refuses_a_stale_plan(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    kernel = FixtureKernel(root)
    stale = plan(read_host(root), "bind")
    apply(plan(read_host(root), "bind", devices=[GPU_DB]), kernel)
    with pytest.raises(VfioError, match="changed since the plan was made"):
        apply(stale, kernel)


def test_apply_refuses_a_kernel_on_another_root(make_sysfs: MakeSysfs) -> None:
    the_plan = plan(read_host(make_sysfs("gpu-unbound")), "bind")
    with pytest.raises(MisuseError, match="plan and apply with the same sysfs root"):
        apply(the_plan, FixtureKernel(make_sysfs("gpu-unbound")))


def test_an_incomplete_group_after_the_writes_is_an_error(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    kernel = FixtureKernel(root, loaded_drivers={"pcieport"})  # vfio-pci not loaded
    with pytest.raises(VfioError) as caught:
        bind(root, kernel)
    assert caught.value.changed == (GPU_9A, GPU_DB)
    assert "modprobe vfio-pci" in str(caught.value)
    assert drivers(root)[GPU_9A] is None


def test_unknown_or_malformed_device_addresses_are_refused(hgx_sysfs: Path) -> None:
    host = read_host(hgx_sysfs)
    with pytest.raises(UnknownDevice, match=r"no NVIDIA GPU or NVSwitch at 0000:27:00\.0"):
        plan(host, "bind", devices=[NIC_BDF])
    with pytest.raises(InvalidBDF):
        plan(host, "bind", devices=["gpu0"])
    with pytest.raises(MisuseError, match="unknown VFIO action"):
        plan(host, "rebind")  # type: ignore[arg-type]  # an unknown action, on purpose


# --------------------------------------------------------------------------- the two kernels


def test_fixture_kernel_writes_exactly_what_the_plan_says(make_sysfs: MakeSysfs) -> None:
    root = make_sysfs("gpu-unbound")
    kernel = FixtureKernel(root)
    the_plan = plan(read_host(root), "bind")
    apply(the_plan, kernel)
    assert kernel.writes == [(s.path(root), s.text or "\n") for s in the_plan.steps]


def test_linux_sysfs_writes_the_documented_files(hgx_sysfs: Path) -> None:
    kernel = LinuxSysfs(hgx_sysfs)
    pci = hgx_sysfs / "bus/pci"
    kernel.set_driver_override(GPU_2A, "vfio-pci")
    assert (pci / "devices" / GPU_2A / "driver_override").read_text() == "vfio-pci"
    kernel.set_driver_override(GPU_2A, None)
    assert (pci / "devices" / GPU_2A / "driver_override").read_text() == "\n"
    kernel.unbind(GPU_2A, "vfio-pci")
    assert (pci / "drivers/vfio-pci/unbind").read_text() == GPU_2A
    kernel.probe(GPU_2A)
    assert (pci / "drivers_probe").read_text() == GPU_2A


def test_linux_sysfs_names_the_file_and_the_fix_when_a_driver_is_missing(hgx_sysfs: Path) -> None:
    with pytest.raises(KernelWriteError) as caught:
        LinuxSysfs(hgx_sysfs).unbind(GPU_2A, "nouveau")
    assert str(caught.value) == (
        f"cannot write {hgx_sysfs}/bus/pci/drivers/nouveau/unbind: no such file or directory; "
        "is the driver loaded? (`modprobe nouveau`)"
    )


def test_linux_sysfs_finds_the_process_holding_a_vfio_group_or_nvidia_node(
    make_sysfs: MakeSysfs, tmp_path: Path
) -> None:
    root = make_sysfs("gpu-unbound")
    proc = tmp_path / "proc"
    for pid, comm, node in (
        (4242, "qemu-system-x86", "/dev/vfio/38"),
        (77, "python3", "/dev/nvidia3"),
    ):
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(f"{comm}\n")
        (proc / str(pid) / "fd" / "0").symlink_to("/dev/null")
        (proc / str(pid) / "fd" / "9").symlink_to(node)
    info = proc / "driver/nvidia/gpus" / GPU_9A / "information"
    info.parent.mkdir(parents=True)
    info.write_text("Model: \t\t H100\nDevice Minor: \t 3\n")
    host = read_host(root)
    kernel = LinuxSysfs(root, proc=proc)

    assert kernel.holders(host.functions[GPU_2A]) == ("qemu-system-x86 (pid 4242): /dev/vfio/38",)
    assert kernel.holders(host.functions[GPU_9A]) == ("python3 (pid 77): /dev/nvidia3",)
    assert kernel.holders(host.functions[GPU_DB]) == ()
    with pytest.raises(DeviceInUse, match="qemu-system-x86"):
        apply(plan(host, "unbind", devices=[GPU_2A]), kernel)


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("variant", "not_ready"),
    [
        ("ok", {}),
        (
            "gpu-unbound",
            {GPU_9A: "GPU 0000:9a:00.0 on nvidia", GPU_DB: "GPU 0000:db:00.0 on no driver"},
        ),
        ("shared-group", {GPU_2A: "device 0000:27:00.0 (class 0x020700) on mlx5_core"}),
    ],
    ids=["healthy-host", "two-gpus-off-vfio", "nic-in-a-gpu-group"],
)
def test_status_says_which_groups_are_not_ready_and_why(
    make_sysfs: MakeSysfs, variant: str, not_ready: dict[str, str]
) -> None:
    result = status(read_host(make_sysfs(variant)))
    assert len(result.devices) == 12
    assert {d.bdf: "; ".join(d.blocking) for d in result.devices if not d.group_ready} == not_ready
    assert result.gpus_ready is (not not_ready)
    assert result.nvswitches_ready
