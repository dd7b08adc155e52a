"""Conversions between our fabric values and the fm-controller's protobuf messages, and
the one place FM errors cross the gRPC boundary (both ways)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from gpucaas.errors import GpucaasError, InvalidRequest
from gpucaas.topology import ModuleId, PartitionId

from ._errors import (
    FabricManagerError,
    FabricManagerFailure,
    FmControllerDown,
    FmControllerRefused,
    FMReturn,
    check,
)
from ._types import FailedDevice, FailedDevices, PartitionGpu, PartitionInfo
from .proto import fabric_pb2 as pb

FM_RETURN_KEY = "gpucaas-fm-return"
"""Trailing-metadata key that carries FM's fmReturn_t value on a refused call."""

GRPC_CODE_FOR: dict[FMReturn, grpc.StatusCode] = {
    FMReturn.BADPARAM: grpc.StatusCode.INVALID_ARGUMENT,
    FMReturn.IN_USE: grpc.StatusCode.FAILED_PRECONDITION,
    FMReturn.UNINITIALIZED: grpc.StatusCode.FAILED_PRECONDITION,
    FMReturn.NOT_CONFIGURED: grpc.StatusCode.UNAVAILABLE,
    FMReturn.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    FMReturn.CONNECTION_NOT_VALID: grpc.StatusCode.UNAVAILABLE,
    FMReturn.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def partition_to_pb(p: PartitionInfo) -> Any:
    return pb.Partition(
        id=int(p.id),
        active=p.active,
        gpus=[
            pb.PartitionGpu(
                physical_id=int(g.physical_id),
                uuid=g.uuid,
                pci_bus_id=g.pci_bus_id,
                nvlinks_available=g.nvlinks_available,
                nvlinks_max=g.nvlinks_max,
                nvlink_line_rate_mbps=g.nvlink_line_rate_mbps,
            )
            for g in p.gpus
        ],
    )


def partition_from_pb(m: Any) -> PartitionInfo:
    return PartitionInfo(
        id=PartitionId(m.id),
        active=m.active,
        gpus=tuple(
            PartitionGpu(
                ModuleId(g.physical_id),
                g.uuid,
                g.pci_bus_id,
                g.nvlinks_available,
                g.nvlinks_max,
                g.nvlink_line_rate_mbps,
            )
            for g in m.gpus
        ),
    )


def failed_to_pb(f: FailedDevices) -> Any:
    def one(d: FailedDevice) -> Any:
        return pb.FailedDevice(uuid=d.uuid, pci_bus_id=d.pci_bus_id, ports=list(d.ports))

    return pb.FailedDevicesResponse(
        gpus=[one(d) for d in f.gpus], switches=[one(d) for d in f.switches]
    )


def failed_from_pb(m: Any) -> FailedDevices:
    def one(d: Any) -> FailedDevice:
        return FailedDevice(d.uuid, d.pci_bus_id, tuple(d.ports))

    return FailedDevices(tuple(one(d) for d in m.gpus), tuple(one(d) for d in m.switches))


def abort_with(context: Any, exc: Exception) -> None:
    """Server side: end the call with a status that the client maps back to ``exc``'s type."""
    if isinstance(exc, FabricManagerError):
        context.set_trailing_metadata(((FM_RETURN_KEY, str(int(exc.code))),))
        context.abort(GRPC_CODE_FOR.get(exc.code, grpc.StatusCode.INTERNAL), str(exc))
    elif isinstance(exc, InvalidRequest):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    else:
        context.abort(grpc.StatusCode.INTERNAL, f"fm-controller failed: {exc}")


@dataclass(frozen=True)
class RpcFailure:
    """What a failed fm-controller call said, for the builders of :data:`ERROR_FOR_STATUS`."""

    operation: str
    partition_id: int | None
    target: str
    code: grpc.StatusCode | None
    details: str


def _down(f: RpcFailure) -> GpucaasError:
    return FmControllerDown(
        FMReturn.CONNECTION_NOT_VALID,
        f.operation,
        partition_id=f.partition_id,
        detail=f"cannot reach the fm-controller at {f.target}: {f.details}",
    )


def _token(f: RpcFailure) -> GpucaasError:
    return FmControllerRefused(f.target, f.details)


def _invalid(f: RpcFailure) -> GpucaasError:
    return InvalidRequest(f.details)


def _failed(f: RpcFailure) -> GpucaasError:
    return FabricManagerFailure(
        FMReturn.GENERIC_ERROR,
        f.operation,
        partition_id=f.partition_id,
        detail=f"fm-controller at {f.target}: {f.code}: {f.details}",
    )


_S = grpc.StatusCode
ERROR_FOR_STATUS: dict[grpc.StatusCode, Callable[[RpcFailure], GpucaasError]] = {
    # No answer: the controller is down, too slow, or the channel closed under the call.
    _S.UNAVAILABLE: _down,
    _S.DEADLINE_EXCEEDED: _down,
    _S.CANCELLED: _down,
    # The controller's token interceptor said no.
    _S.UNAUTHENTICATED: _token,
    _S.PERMISSION_DENIED: _token,
    # Our InvalidRequest, carried across by abort_with (its message is the details).
    _S.INVALID_ARGUMENT: _invalid,
    _S.OUT_OF_RANGE: _invalid,
    # FM's refusals carry their fmReturn_t and never get here; what does is a controller
    # that failed (UNKNOWN: an uncaught exception in it; UNIMPLEMENTED: another version).
    _S.FAILED_PRECONDITION: _failed,
    _S.ALREADY_EXISTS: _failed,
    _S.ABORTED: _failed,
    _S.RESOURCE_EXHAUSTED: _failed,
    _S.NOT_FOUND: _failed,
    _S.UNIMPLEMENTED: _failed,
    _S.INTERNAL: _failed,
    _S.UNKNOWN: _failed,
    _S.DATA_LOSS: _failed,
    _S.OK: _failed,  # a failed call that says OK: a broken controller
}
"""The error for every gRPC status an fm-controller call can end with (tested: all of them)."""


@contextmanager
def map_grpc_errors(
    operation: str, *, partition_id: int | None = None, target: str
) -> Iterator[None]:
    """Client side: a failed call becomes the same typed error the backend raised, chained
    ``from`` the :class:`grpc.RpcError` (as httpx's ``map_httpcore_exceptions``).

    An FM refusal carries its ``fmReturn_t`` in the trailing metadata and becomes the
    :class:`FabricManagerError` for that code; any other status goes through
    :data:`ERROR_FOR_STATUS`.
    """
    try:
        yield
    except grpc.RpcError as exc:
        metadata = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        for key, value in metadata or ():
            if key == FM_RETURN_KEY:
                try:
                    check(int(value), operation, partition_id=partition_id)
                except FabricManagerError as error:
                    raise error from exc
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        failure = RpcFailure(operation, partition_id, target, code, details or "")
        build = ERROR_FOR_STATUS.get(code, _failed) if code is not None else _down
        raise build(failure) from exc
