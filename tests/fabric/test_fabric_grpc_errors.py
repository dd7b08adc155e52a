"""Every gRPC status an fm-controller call can end with maps to one of our errors, chained
to the RpcError (as httpx's test that every httpcore exception has a mapping)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import pytest

from gpucaas.errors import GpucaasError, InvalidRequest, exit_code
from gpucaas.fabric import (
    FabricManagerFailure,
    FmControllerDown,
    FmControllerRefused,
    FMReturn,
    PartitionInUse,
    PartitionNotActive,
)
from gpucaas.fabric._wire import ERROR_FOR_STATUS, FM_RETURN_KEY, map_grpc_errors

TARGET = "unix:/run/gpucaas/fm-controller.sock"


class FailedCall(grpc.RpcError):  # type: ignore[misc]  # grpc is untyped here (no stubs): Any
    """What grpcio raises for a failed unary call: code, details, trailing metadata."""

    def __init__(
        self, code: grpc.StatusCode, details: str, metadata: Sequence[tuple[str, str]] = ()
    ):
        self._code, self._details, self._metadata = code, details, tuple(metadata)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


S = grpc.StatusCode
# Each status, the error it becomes and the exit status fmctl ends with.
EXPECTED: dict[grpc.StatusCode, tuple[type[GpucaasError], int]] = {
    S.OK: (FabricManagerFailure, 1),
    S.CANCELLED: (FmControllerDown, 3),
    S.UNKNOWN: (FabricManagerFailure, 1),
    S.INVALID_ARGUMENT: (InvalidRequest, 2),
    S.DEADLINE_EXCEEDED: (FmControllerDown, 3),
    S.NOT_FOUND: (FabricManagerFailure, 1),
    S.ALREADY_EXISTS: (FabricManagerFailure, 1),
    S.PERMISSION_DENIED: (FmControllerRefused, 2),
    S.RESOURCE_EXHAUSTED: (FabricManagerFailure, 1),
    S.FAILED_PRECONDITION: (FabricManagerFailure, 1),
    S.ABORTED: (FabricManagerFailure, 1),
    S.OUT_OF_RANGE: (InvalidRequest, 2),
    S.UNIMPLEMENTED: (FabricManagerFailure, 1),
    S.INTERNAL: (FabricManagerFailure, 1),
    S.UNAVAILABLE: (FmControllerDown, 3),
    S.DATA_LOSS: (FabricManagerFailure, 1),
    S.UNAUTHENTICATED: (FmControllerRefused, 2),
}


def test_every_status_code_has_a_mapping() -> None:
    assert set(ERROR_FOR_STATUS) == set(grpc.StatusCode) == set(EXPECTED)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_each_status_becomes_its_error(code: grpc.StatusCode) -> None:
    cls, status = EXPECTED[code]
    failed = FailedCall(code, "the controller's words")
    with (
        pytest.raises(GpucaasError) as caught,
        map_grpc_errors("activate", partition_id=3, target=TARGET),
    ):
        raise failed
    assert type(caught.value) is cls
    assert caught.value.__cause__ is failed
    assert "the controller's words" in str(caught.value)
    assert exit_code(caught.value) == status


def test_unreachable_names_the_target() -> None:
    with pytest.raises(FmControllerDown) as caught, map_grpc_errors("list", target=TARGET):
        raise FailedCall(S.UNAVAILABLE, "connection refused")
    assert f"cannot reach the fm-controller at {TARGET}: connection refused" in str(caught.value)


def test_a_token_refusal_says_to_pass_the_token() -> None:
    with pytest.raises(FmControllerRefused, match=r"pass the right token \(--token-file\)"):
        with map_grpc_errors("list", target=TARGET):
            raise FailedCall(S.UNAUTHENTICATED, "missing or wrong token")


@pytest.mark.parametrize(
    ("operation", "fm_code", "cls"),
    [
        ("activate", FMReturn.IN_USE, PartitionInUse),
        ("deactivate", FMReturn.UNINITIALIZED, PartitionNotActive),
        ("activate", FMReturn.NVLINK_ERROR, FabricManagerFailure),
    ],
    ids=["in-use", "not-active", "nvlink"],
)
def test_an_fm_refusal_carries_its_code_across(
    operation: str, fm_code: FMReturn, cls: type[GpucaasError]
) -> None:
    failed = FailedCall(S.FAILED_PRECONDITION, "refused", [(FM_RETURN_KEY, str(int(fm_code)))])
    with pytest.raises(cls) as caught, map_grpc_errors(operation, partition_id=3, target=TARGET):
        raise failed
    assert caught.value.__cause__ is failed
    assert f"{fm_code.fm_name} ({int(fm_code)})" in str(caught.value)


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(ValueError, match="not ours"), map_grpc_errors("list", target=TARGET):
        raise ValueError("not ours")
