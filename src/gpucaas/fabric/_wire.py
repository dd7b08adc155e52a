"""Conversions between our fabric values and the fm-controller's protobuf messages, and
the one place FM errors cross the gRPC boundary (both ways)."""

from __future__ import annotations

from typing import Any

import grpc

from gpucaas.errors import InvalidRequest
from gpucaas.topology import ModuleId, PartitionId

from ._errors import FabricManagerDown, FabricManagerError, FmControllerDown, FMReturn, check
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


def raise_from_rpc(
    exc: grpc.RpcError, operation: str, *, partition_id: int | None, target: str
) -> None:
    """Client side: turn a failed call into the same typed error the backend raised."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    for key, value in (exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else ():
        if key == FM_RETURN_KEY:
            check(int(value), operation, partition_id=partition_id)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        raise FmControllerDown(
            FMReturn.CONNECTION_NOT_VALID,
            operation,
            partition_id=partition_id,
            detail=f"cannot reach the fm-controller at {target}: {details}",
        ) from exc
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        raise InvalidRequest(
            f"the fm-controller at {target} refused the request: {details}; pass the right "
            "token (--token-file)"
        ) from exc
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        raise InvalidRequest(details) from exc
    raise FabricManagerDown(
        FMReturn.GENERIC_ERROR,
        operation,
        partition_id=partition_id,
        detail=f"fm-controller at {target}: {code}: {details}",
    ) from exc
