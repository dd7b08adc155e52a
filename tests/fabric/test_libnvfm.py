"""The libnvfm ctypes binding (gpucaas.fabric._libnvfm) against the published ABI and a C fake.

Sizes are the x86-64 values that follow from nv_fm_types.h (FM_MAX_STR_LENGTH 256,
FM_UUID_BUFFER_SIZE 80, FM_DEVICE_PCI_BUS_ID_BUFFER_SIZE 32, FM_MAX_NUM_GPUS 16,
FM_MAX_NUM_NVSWITCHES 12, FM_MAX_FABRIC_PARTITIONS 64, FM_MAX_NUM_NVLINK_PORTS 64); the
fake (tests/fabric/fakenvfm.c) declares the same structs in C, so the Python layout is also
checked against what a C compiler makes of them.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import pytest

from gpucaas.errors import InvalidRequest, MisuseError, Unavailable
from gpucaas.fabric import (
    AddressType,
    FabricAddressError,
    FabricBadRequest,
    FabricManagerDown,
    FabricManagerFailure,
    FabricManagerNotReady,
    FabricNotShared,
    FabricVersionMismatch,
    FailedDevice,
    FailedDevices,
    FmAddress,
    FMReturn,
    PartitionInUse,
    PartitionNotActive,
    parse_address,
)
from gpucaas.fabric._libnvfm import (
    ACTIVATED_LIST_VERSION,
    CONNECT_PARAMS_VERSION,
    FAILED_DEVICES_VERSION,
    PARTITION_LIST_VERSION,
    FmActivatedFabricPartitionListV1,
    FmConnectParamsV2,
    FmFabricPartitionGpuInfo,
    FmFabricPartitionInfo,
    FmFabricPartitionListV2,
    FmNvlinkFailedDeviceInfo,
    FmNvlinkFailedDevicesV1,
    NvfmLibrary,
    version_of,
)
from gpucaas.topology import get_model

# Python struct, its C typedef name, and its published x86-64 size.
STRUCTS = [
    (FmConnectParamsV2, "fmConnectParams_v2", 272),
    (FmFabricPartitionGpuInfo, "fmFabricPartitionGpuInfo_t", 128),
    (FmFabricPartitionInfo, "fmFabricPartitionInfo_t", 2060),
    (FmFabricPartitionListV2, "fmFabricPartitionList_v2", 131_852),
    (FmActivatedFabricPartitionListV1, "fmActivatedFabricPartitionList_v1", 264),
    # 80 + 32 + 4 + 64 * 4
    (FmNvlinkFailedDeviceInfo, "fmNvlinkFailedDeviceInfo_t", 372),
    # 3 * 4 + (16 + 12) * 372
    (FmNvlinkFailedDevicesV1, "fmNvlinkFailedDevices_v1", 10_428),
]
STRUCT_IDS = [c_name for _, c_name, _ in STRUCTS]

# Offsets that follow from the header's field order (all fields 4-byte aligned).
OFFSETS = {
    (FmConnectParamsV2, "addressInfo"): 4,
    (FmConnectParamsV2, "timeoutMs"): 260,
    (FmConnectParamsV2, "addressIsUnixSocket"): 264,
    (FmConnectParamsV2, "addressType"): 268,
    (FmFabricPartitionGpuInfo, "uuid"): 4,
    (FmFabricPartitionGpuInfo, "pciBusId"): 84,
    (FmFabricPartitionGpuInfo, "numNvLinksAvailable"): 116,
    (FmFabricPartitionGpuInfo, "maxNumNvLinks"): 120,
    (FmFabricPartitionGpuInfo, "nvlinkLineRateMBps"): 124,
    (FmFabricPartitionInfo, "numGpus"): 8,
    (FmFabricPartitionInfo, "gpuInfo"): 12,
    (FmFabricPartitionListV2, "maxNumPartitions"): 8,
    (FmFabricPartitionListV2, "partitionInfo"): 12,
    (FmActivatedFabricPartitionListV1, "partitionIds"): 8,
    (FmNvlinkFailedDeviceInfo, "pciBusId"): 80,
    (FmNvlinkFailedDeviceInfo, "numPorts"): 112,
    (FmNvlinkFailedDeviceInfo, "portNum"): 116,
    (FmNvlinkFailedDevicesV1, "numSwitches"): 8,
    (FmNvlinkFailedDevicesV1, "gpuInfo"): 12,
    (FmNvlinkFailedDevicesV1, "switchInfo"): 12 + 16 * 372,
}

H100_BUS = {1: "C3", 2: "DF", 3: "D1", 4: "9D", 5: "1B", 6: "43", 7: "52", 8: "61"}


def open_fake(fake, address: str | FmAddress = "127.0.0.1", **kwargs) -> NvfmLibrary:
    return NvfmLibrary(address, library=fake.path, **kwargs)


# -- the ABI ------------------------------------------------------------------------------


@pytest.mark.parametrize(("struct", "c_name", "size"), STRUCTS, ids=STRUCT_IDS)
def test_struct_size_is_the_published_one(struct, c_name, size) -> None:
    assert ctypes.sizeof(struct) == size


@pytest.mark.parametrize(
    ("struct", "field", "offset"),
    [(s, f, o) for (s, f), o in OFFSETS.items()],
    ids=[f"{s.__name__}.{f}" for s, f in OFFSETS],
)
def test_field_offset_follows_the_header_order(struct, field, offset) -> None:
    assert getattr(struct, field).offset == offset


def test_version_stamps_are_size_or_version_shifted_24() -> None:
    assert CONNECT_PARAMS_VERSION == 272 | 2 << 24 == 0x02000110
    # nv_fm_types.h: fmFabricPartitionList_version2 = MAKE_FM_PARAM_VERSION(..._v2, 1)
    assert PARTITION_LIST_VERSION == 131_852 | 1 << 24 == 0x0102030C
    assert ACTIVATED_LIST_VERSION == 264 | 1 << 24
    assert FAILED_DEVICES_VERSION == 10_428 | 1 << 24
    assert version_of(FmConnectParamsV2, 1) == 272 | 1 << 24


@pytest.mark.parametrize(("struct", "c_name", "size"), STRUCTS, ids=STRUCT_IDS)
def test_python_and_c_agree_on_every_size_and_offset(fakenvfm, struct, c_name, size) -> None:
    assert fakenvfm.sizeof(c_name) == ctypes.sizeof(struct) == size
    for name, *_ in struct._fields_:
        assert fakenvfm.offsetof(c_name, name) == getattr(struct, name).offset, name


@pytest.mark.parametrize(
    ("c_name", "version"),
    [
        ("fmConnectParams_v2", CONNECT_PARAMS_VERSION),
        ("fmFabricPartitionList_v2", PARTITION_LIST_VERSION),
        ("fmActivatedFabricPartitionList_v1", ACTIVATED_LIST_VERSION),
        ("fmNvlinkFailedDevices_v1", FAILED_DEVICES_VERSION),
    ],
    ids=["connect", "partition-list", "activated-list", "failed-devices"],
)
def test_python_and_c_agree_on_version_stamps(fakenvfm, c_name, version) -> None:
    assert fakenvfm.expected_version(c_name) == version


# -- connecting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "info", "kind", "unix_flag"),
    [
        ("127.0.0.1", "127.0.0.1:6666", AddressType.INET, 0),
        ("10.0.0.5:7777", "10.0.0.5:7777", AddressType.INET, 0),
        (
            "/var/run/nvidia-fabricmanager/fm.sock",
            "/var/run/nvidia-fabricmanager/fm.sock",
            AddressType.UNIX,
            1,
        ),
        ("unix:./fm:1.sock", "./fm:1.sock", AddressType.UNIX, 1),
        ("vsock:2:6666", "2:6666", AddressType.VSOCK, 0),
    ],
    ids=["inet-default-port", "inet-port", "unix-path", "unix-prefix", "vsock"],
)
def test_every_address_form_reaches_fmconnect(fakenvfm, address, info, kind, unix_flag) -> None:
    with open_fake(fakenvfm, address, timeout_ms=1234) as fm:
        assert fm.address == parse_address(address)
    assert fakenvfm.last_address == info
    assert fakenvfm.last_address_type == kind
    assert fakenvfm.last_unix_flag == unix_flag
    assert fakenvfm.last_timeout_ms == 1234
    assert fakenvfm.last_stamp == ("fmConnect", CONNECT_PARAMS_VERSION)


def test_a_parsed_address_is_taken_as_is(fakenvfm) -> None:
    with open_fake(fakenvfm, parse_address("vsock:3:5000")):
        pass
    assert (fakenvfm.last_address, fakenvfm.last_address_type) == ("3:5000", AddressType.VSOCK)


def test_default_timeout_is_five_seconds(fakenvfm) -> None:
    with open_fake(fakenvfm):
        pass
    assert fakenvfm.last_timeout_ms == 5000


@pytest.mark.parametrize("timeout_ms", [0, -1, 2**32], ids=["zero", "negative", "over-32-bit"])
def test_timeout_out_of_range_is_refused_before_loading(timeout_ms, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="timeout"):
        NvfmLibrary(timeout_ms=timeout_ms, library=tmp_path / "never-loaded.so")


def test_bad_address_is_refused_before_loading(tmp_path: Path) -> None:
    with pytest.raises(FabricAddressError):
        NvfmLibrary("fm.example.com", library=tmp_path / "never-loaded.so")


def test_socket_path_too_long_in_utf8_is_refused(tmp_path: Path) -> None:
    path = "/" + "é" * 200  # 200 characters, 401 bytes
    with pytest.raises(FabricAddressError, match="bytes in UTF-8"):
        NvfmLibrary(path, library=tmp_path / "never-loaded.so")


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (FMReturn.CONNECTION_NOT_VALID, FabricManagerDown),
        (FMReturn.TIMEOUT, FabricManagerDown),
        (FMReturn.VERSION_MISMATCH, FabricVersionMismatch),
        (FMReturn.BADPARAM, FabricBadRequest),
    ],
    ids=["connection-not-valid", "timeout", "version-mismatch", "badparam"],
)
def test_connect_failure_is_mapped_and_releases_the_library(fakenvfm, code, error) -> None:
    fakenvfm.fail_next("fmConnect", code)
    with pytest.raises(error) as caught:
        open_fake(fakenvfm, "10.1.2.3", board="hgx-07")
    assert caught.value.code is code
    assert "connect to Fabric Manager at 10.1.2.3:6666 on hgx-07 failed" in str(caught.value)
    assert not fakenvfm.initialised
    assert fakenvfm.calls()["shutdown"] == 1


def test_fmlibinit_failure_is_mapped(fakenvfm) -> None:
    fakenvfm.fail_next("fmLibInit", FMReturn.GENERIC_ERROR)
    with pytest.raises(FabricManagerFailure, match="initialise libnvfm failed"):
        open_fake(fakenvfm)
    assert fakenvfm.calls()["connect"] == 0


def test_fmlibinit_in_use_means_initialised_elsewhere_and_is_left_alone(fakenvfm) -> None:
    assert fakenvfm.lib_init() == FMReturn.SUCCESS  # another user in this process
    with open_fake(fakenvfm) as fm:
        assert len(fm.list_partitions()) == 15
    assert fakenvfm.calls() == {"init": 2, "shutdown": 0, "connect": 1, "disconnect": 1}
    assert fakenvfm.initialised, "the other user's initialisation must survive our close()"
    assert fakenvfm.lib_shutdown() == FMReturn.SUCCESS


def test_instances_share_one_initialisation(fakenvfm) -> None:
    first = open_fake(fakenvfm, "127.0.0.1", board="a")
    second = open_fake(fakenvfm, "/run/fm.sock", board="b")
    assert fakenvfm.calls()["init"] == 1
    first.close()
    assert fakenvfm.initialised, "shutting down here would cut the second connection"
    assert second.list_partitions()
    second.close()
    assert not fakenvfm.initialised
    assert fakenvfm.calls() == {"init": 1, "shutdown": 1, "connect": 2, "disconnect": 2}


def test_close_is_idempotent(fakenvfm) -> None:
    fm = open_fake(fakenvfm)
    fm.close()
    fm.close()
    with fm:
        pass
    assert fakenvfm.calls() == {"init": 1, "shutdown": 1, "connect": 1, "disconnect": 1}


def test_calls_after_close_are_misuse(fakenvfm) -> None:
    fm = open_fake(fakenvfm)
    fm.close()
    with pytest.raises(MisuseError, match="has been closed"):
        fm.activate(0)
    assert "closed" in repr(fm)


def test_close_logs_a_failed_disconnect_instead_of_raising(fakenvfm, caplog) -> None:
    fm = open_fake(fakenvfm)
    fakenvfm.fail_next("fmDisconnect", FMReturn.CONNECTION_NOT_VALID)
    with caplog.at_level(logging.WARNING, logger="gpucaas.fabric._libnvfm"):
        fm.close()
    assert "fmDisconnect" in caplog.text and "-9" in caplog.text
    assert not fakenvfm.initialised  # fmLibShutdown still ran, closing the handle


# -- loading ------------------------------------------------------------------------------


def test_missing_library_is_unavailable_with_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "libnvfm.so.1"
    with pytest.raises(Unavailable) as caught:
        NvfmLibrary(library=missing)
    message = str(caught.value)
    assert str(missing) in message
    assert "nvidia-fabricmanager-dev" in message and "--nvfm-library" in message


def test_default_library_name_falls_back_to_the_dev_symlink(monkeypatch) -> None:
    tried: list[str] = []

    def refuse(name: str) -> ctypes.CDLL:
        tried.append(name)
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", refuse)
    with pytest.raises(Unavailable, match=r"libnvfm\.so\.1 or libnvfm\.so"):
        NvfmLibrary()
    assert tried == ["libnvfm.so.1", "libnvfm.so"]


def test_a_library_without_the_fm_calls_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="libc.so.6 has no fmLibInit"):
        NvfmLibrary(library="libc.so.6")


# -- partitions ---------------------------------------------------------------------------


def test_list_partitions_is_the_h100_table(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        partitions = fm.list_partitions()
    assert fakenvfm.last_stamp == ("fmGetSupportedFabricPartitions", PARTITION_LIST_VERSION)
    model = get_model("hgx-h100-8")
    assert [(p.id, p.module_ids, p.nvlinks) for p in partitions] == [
        (p.id, p.module_ids, p.nvlinks) for p in model.partitions
    ]
    assert [p.nvlinks for p in partitions] == [144, 72, 72, 36, 36, 36, 36] + [0] * 8
    assert not any(p.active for p in partitions)
    for partition in partitions:
        for gpu in partition.gpus:
            assert gpu.uuid == f"GPU-fake-{gpu.physical_id:04d}"
            assert gpu.pci_bus_id == f"00000000:{H100_BUS[gpu.physical_id]}:00.0"
            assert gpu.nvlinks_available == (18 if len(partition.gpus) > 1 else 0)
            assert gpu.nvlinks_max == 18
            assert gpu.nvlink_line_rate_mbps == 50_000


def test_activate_then_deactivate(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        fm.activate(3)
        assert fakenvfm.active_ids == {3}
        assert [p.id for p in fm.list_partitions() if p.active] == [3]
        fm.deactivate(3)
    assert fakenvfm.active_ids == set()


@pytest.mark.parametrize(
    ("active", "partition"),
    [(3, 3), (3, 1), (3, 0), (1, 7)],
    ids=["already-active", "contains-active", "whole-board", "inside-active"],
)
def test_activating_an_active_or_overlapping_partition_is_in_use(
    fakenvfm, active, partition
) -> None:
    with open_fake(fakenvfm, board="hgx-07") as fm:
        fm.activate(active)
        with pytest.raises(PartitionInUse) as caught:
            fm.activate(partition)
    assert caught.value.partition_id == partition
    assert caught.value.board == "hgx-07"
    assert str(caught.value).startswith(f"activate partition {partition} on hgx-07 failed")


def test_disjoint_partitions_activate_side_by_side(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        for pid in (3, 4, 2):
            fm.activate(pid)
    assert fakenvfm.active_ids == {2, 3, 4}


def test_deactivating_an_inactive_partition_is_not_active(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm, pytest.raises(PartitionNotActive) as caught:
        fm.deactivate(5)
    assert caught.value.code is FMReturn.UNINITIALIZED
    assert caught.value.partition_id == 5


@pytest.mark.parametrize("call", ["activate", "deactivate"])
@pytest.mark.parametrize("pid", [15, 63, 2**32 - 1], ids=["15", "63", "uint-max"])
def test_unknown_partition_id_is_bad_request(fakenvfm, call, pid) -> None:
    with open_fake(fakenvfm) as fm, pytest.raises(FabricBadRequest) as caught:
        getattr(fm, call)(pid)
    assert caught.value.code is FMReturn.BADPARAM


@pytest.mark.parametrize("pid", [-1, 2**32], ids=["negative", "over-32-bit"])
def test_partition_id_outside_uint_is_refused_without_calling_fm(fakenvfm, pid) -> None:
    with open_fake(fakenvfm) as fm, pytest.raises(FabricBadRequest, match="0 to 4294967295"):
        fm.activate(pid)
    assert fakenvfm.active_ids == set()


def test_set_activated_replaces_the_active_set(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        fm.activate(0)
        fm.set_activated([3, 6, 11])
        assert fakenvfm.last_stamp == ("fmSetActivatedFabricPartitions", ACTIVATED_LIST_VERSION)
        assert fakenvfm.active_ids == {3, 6, 11}
        fm.set_activated([])
        assert fakenvfm.active_ids == set()


def test_set_activated_ends_the_restart_wait(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        fm.activate(1)
        fakenvfm.restart()
        with pytest.raises(FabricManagerNotReady):
            fm.activate(2)
        fm.set_activated([1])
        fm.activate(2)
    assert fakenvfm.active_ids == {1, 2}


def test_set_activated_rejects_unknown_ids_and_too_many(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        with pytest.raises(FabricBadRequest):
            fm.set_activated([3, 99])
        with pytest.raises(FabricBadRequest, match="65 ids given; FM takes at most 64"):
            fm.set_activated([7] * 65)
        with pytest.raises(PartitionInUse):
            fm.set_activated([1, 3])


def test_failed_devices_are_empty_on_h100(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        assert fm.failed_devices() == FailedDevices()
    assert fakenvfm.last_stamp == ("fmGetNvlinkFailedDevices", FAILED_DEVICES_VERSION)


def test_failed_devices_are_decoded(fakenvfm) -> None:
    fakenvfm.add_failed_port(switch=False, uuid="GPU-a", bus="00000000:C3:00.0", port=4)
    fakenvfm.add_failed_port(switch=False, uuid="GPU-a", bus="00000000:C3:00.0", port=9)
    fakenvfm.add_failed_port(switch=True, uuid="SW-b", bus="00000000:05:00.0", port=63)
    with open_fake(fakenvfm) as fm:
        assert fm.failed_devices() == FailedDevices(
            gpus=(FailedDevice("GPU-a", "00000000:C3:00.0", (4, 9)),),
            switches=(FailedDevice("SW-b", "00000000:05:00.0", (63,)),),
        )


# -- FM's codes, through the fail-next hook --------------------------------------------------


@pytest.mark.parametrize(
    ("function", "call", "code", "error"),
    [
        (
            "fmGetSupportedFabricPartitions",
            "list_partitions",
            FMReturn.NOT_CONFIGURED,
            FabricManagerNotReady,
        ),
        (
            "fmGetSupportedFabricPartitions",
            "list_partitions",
            FMReturn.VERSION_MISMATCH,
            FabricVersionMismatch,
        ),
        (
            "fmGetSupportedFabricPartitions",
            "list_partitions",
            FMReturn.NOT_SUPPORTED,
            FabricNotShared,
        ),
        ("fmActivateFabricPartition", "activate", FMReturn.NVLINK_ERROR, FabricManagerFailure),
        ("fmActivateFabricPartition", "activate", FMReturn.NOT_READY, FabricManagerNotReady),
        (
            "fmDeactivateFabricPartition",
            "deactivate",
            FMReturn.CONNECTION_NOT_VALID,
            FabricManagerDown,
        ),
        ("fmSetActivatedFabricPartitions", "set_activated", FMReturn.TIMEOUT, FabricManagerDown),
        ("fmGetNvlinkFailedDevices", "failed_devices", FMReturn.NOT_SUPPORTED, FabricNotShared),
        ("fmGetNvlinkFailedDevices", "failed_devices", -1000, FabricManagerFailure),
    ],
    ids=[
        "list-not-configured",
        "list-version-mismatch",
        "list-not-shared",
        "activate-nvlink-error",
        "activate-not-ready",
        "deactivate-connection-lost",
        "set-activated-timeout",
        "failed-devices-not-supported",
        "unknown-code",
    ],
)
def test_fm_codes_become_their_errors(fakenvfm, function, call, code, error) -> None:
    args = {"activate": (0,), "deactivate": (0,), "set_activated": ([],)}.get(call, ())
    with open_fake(fakenvfm) as fm:
        fakenvfm.fail_next(function, code)
        with pytest.raises(error):
            getattr(fm, call)(*args)


def test_uninitialized_outside_deactivate_is_no_partition_conflict(fakenvfm) -> None:
    with open_fake(fakenvfm) as fm:
        fakenvfm.fail_next("fmActivateFabricPartition", FMReturn.UNINITIALIZED)
        with pytest.raises(FabricManagerFailure, match="libnvfm says it is not initialised"):
            fm.activate(0)


# -- replies that overrun FM's arrays ---------------------------------------------------------


@pytest.mark.parametrize(
    ("partitions", "gpus", "message"),
    [
        (65, -1, "FM reported 65 partitions; its array holds 64"),
        (2**32 - 1, -1, "FM reported 4294967295 partitions"),
        (-1, 17, "FM reported 17 GPUs in partition 0; its array holds 16"),
    ],
    ids=["65-partitions", "uint-max-partitions", "17-gpus"],
)
def test_counts_beyond_the_arrays_are_rejected(fakenvfm, partitions, gpus, message) -> None:
    fakenvfm.set_bogus_counts(partitions, gpus)
    with open_fake(fakenvfm, board="hgx-07") as fm, pytest.raises(FabricManagerFailure) as caught:
        fm.list_partitions()
    assert caught.value.code is FMReturn.GENERIC_ERROR
    assert message in str(caught.value)


def test_fewer_partitions_than_filled_are_read_as_reported(fakenvfm) -> None:
    fakenvfm.set_bogus_counts(3, -1)
    with open_fake(fakenvfm) as fm:
        assert [p.id for p in fm.list_partitions()] == [0, 1, 2]


def test_repr_names_address_library_and_board(fakenvfm) -> None:
    with open_fake(fakenvfm, "10.0.0.9", board="hgx-01") as fm:
        text = repr(fm)
    assert "10.0.0.9:6666" in text and str(fakenvfm.path) in text and "hgx-01" in text
