"""Every Fabric Manager return code maps to exactly one error class, with a useful message."""

from __future__ import annotations

import pytest

from gpucaas.errors import Conflict, GpucaasError, InvalidRequest, Unavailable
from gpucaas.fabric import (
    ERROR_FOR_CODE,
    MEANING,
    FabricAddressError,
    FabricBadRequest,
    FabricManagerDown,
    FabricManagerFailure,
    FabricManagerNotReady,
    FabricNotShared,
    FabricVersionMismatch,
    FMReturn,
    PartitionInUse,
    PartitionNotActive,
    check,
    parse_address,
)
from gpucaas.fabric import AddressType as T


def test_codes_are_the_published_values() -> None:
    assert [int(c) for c in FMReturn] == list(range(0, -30, -1))
    assert FMReturn(-7).fm_name == "FM_ST_IN_USE"
    assert FMReturn(-29).name == "PARTITION_ROUTE_PROGRAMMING_ERROR"


@pytest.mark.parametrize("code", [c for c in FMReturn if c], ids=lambda c: c.name)
def test_every_failure_code_has_a_mapping_and_a_meaning(code: FMReturn) -> None:
    assert code in ERROR_FOR_CODE
    assert MEANING[code]
    with pytest.raises(ERROR_FOR_CODE[code]) as caught:
        check(code, "deactivate", partition_id=3, board="hgx-07")
    text = str(caught.value)
    assert text.startswith("deactivate partition 3 on hgx-07 failed: Fabric Manager returned ")
    assert f"{code.fm_name} ({int(code)})" in text
    assert caught.value.code is code
    assert isinstance(caught.value, GpucaasError)


@pytest.mark.parametrize(
    ("code", "cls", "base"),
    [
        (FMReturn.IN_USE, PartitionInUse, Conflict),
        (FMReturn.UNINITIALIZED, PartitionNotActive, Conflict),
        (FMReturn.NOT_CONFIGURED, FabricManagerNotReady, Unavailable),
        (FMReturn.NOT_READY, FabricManagerNotReady, Unavailable),
        (FMReturn.NOT_SUPPORTED, FabricNotShared, Unavailable),
        (FMReturn.VERSION_MISMATCH, FabricVersionMismatch, Unavailable),
        (FMReturn.CONNECTION_NOT_VALID, FabricManagerDown, Unavailable),
        (FMReturn.TIMEOUT, FabricManagerDown, Unavailable),
        (FMReturn.BADPARAM, FabricBadRequest, InvalidRequest),
        (FMReturn.NVLINK_ERROR, FabricManagerFailure, Unavailable),
    ],
    ids=lambda v: getattr(v, "name", getattr(v, "__name__", str(v))),
)
def test_codes_group_by_what_the_caller_can_do(code: FMReturn, cls: type, base: type) -> None:
    assert ERROR_FOR_CODE[code] is cls
    assert issubclass(cls, base)


def test_uninitialized_means_already_inactive_only_on_deactivate() -> None:
    with pytest.raises(PartitionNotActive):
        check(FMReturn.UNINITIALIZED, "deactivate", partition_id=3)
    with pytest.raises(FabricManagerFailure, match="not initialised"):
        check(FMReturn.UNINITIALIZED, "activate", partition_id=3)


def test_success_raises_nothing_and_unknown_values_are_named() -> None:
    check(0, "activate")
    with pytest.raises(FabricManagerFailure, match="unknown fmReturn_t value -99"):
        check(-99, "activate", partition_id=1)


def test_not_ready_message_says_to_replay_within_60_seconds() -> None:
    with pytest.raises(FabricManagerNotReady, match="within 60 s"):
        check(FMReturn.NOT_CONFIGURED, "activate", partition_id=1)


@pytest.mark.parametrize(
    ("text", "kind", "info"),
    [
        ("127.0.0.1", T.INET, "127.0.0.1:6666"),
        ("10.1.2.3:7000", T.INET, "10.1.2.3:7000"),
        ("/var/run/nvidia-fabricmanager/fm.sock", T.UNIX, "/var/run/nvidia-fabricmanager/fm.sock"),
        ("unix:/tmp/fm.sock", T.UNIX, "/tmp/fm.sock"),
        ("vsock:3:6666", T.VSOCK, "3:6666"),
    ],
    ids=["inet default port", "inet with port", "unix path", "unix: prefix", "vsock"],
)
def test_address_forms(text: str, kind: T, info: str) -> None:
    address = parse_address(text)
    assert (address.kind, address.info) == (kind, info)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("fm.example.com", "not an IPv4 address"),
        ("127.0.0.1:0", "port '0' must be 1 to 65534"),
        ("127.0.0.1:http", "must be 1 to 65534"),
        ("vsock:3", "vsock:CID:PORT"),
        ("vsock:x:1", "vsock:CID:PORT"),
        ("/" + "x" * 300, "longer than 255"),
    ],
    ids=["empty", "host name", "port zero", "port name", "vsock no port", "vsock bad cid", "long"],
)
def test_bad_addresses_say_which_forms_work(text: str, message: str) -> None:
    with pytest.raises(FabricAddressError, match=message) as caught:
        parse_address(text)
    assert "vsock:CID:PORT" in str(caught.value)
